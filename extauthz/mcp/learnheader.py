"""The header ext_authz uses to tell ext_proc what to do with a response (the encoding side).

`x-mcp-extauthz-learn` carries base64url (unpadded) of `[[id, method, first], ...]` for learnable
requests, `[id, method, name]` for observed calls, and a trailing `{"v": ref}` when the
response's lists are to be filtered for that caller; or a stream mark (a 2024-11-05 GET event
stream), or an end mark (an owner's DELETE). `x-mcp-extauthz-observe` carries the same encoding
for requests that are only observed: their route sends the response to ext_proc in observability
mode, so Envoy never waits for the service on them. extauthz.specs.learn decodes both.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from typing import Any, Protocol

import orjson

from extauthz.mcp.kinds import BY_OBSERVED_METHOD

LEARN_HEADER = "x-mcp-extauthz-learn"
OBSERVE_HEADER = "x-mcp-extauthz-observe"
STREAM_MARK = "sse-stream"              # learn-header value for a 2024-11-05 GET event stream
END_MARK = "session-end"                # learn-header value for an owner's DELETE
MAX_HEADER_CHARS = 64 * 1024            # encoded learn header: MAX_ENTRIES of the largest entry fit
MAX_ENTRIES = 256                       # learnable requests in one batch (the Check denies more)
MAX_ID_CHARS = 512                      # an inline string id (longer ones travel as a digest)
ID_INLINE_CHARS = 40                    # a UUID fits; longer string ids travel as a digest
MAX_NAME_CHARS = 1024


class _JsonView(Protocol):
    def to_json(self) -> list[Any]: ...


# A view to filter lists for: its fingerprint, or the view itself (extauthz.specs.listfilter.ViewRef).
ViewJson = _JsonView | str


def inline_id(value: str) -> bool:
    return len(value) <= ID_INLINE_CHARS and value.isascii() and value.isprintable()


def id_digest(value: str) -> str:
    raw = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _wire_id(value: Any) -> Any:
    return {"h": id_digest(value)} if isinstance(value, str) and not inline_id(value) else value


def _ref_json(ref: ViewJson) -> Any:
    return ref if isinstance(ref, str) else ref.to_json()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def encode_learn_header(entries: Iterable[tuple[Any, str, bool | str]], view: ViewJson | None = None) -> str:
    """The header value ext_authz sends (a long or non-printable string id goes as `{"h": digest}`,
    so the header's size does not depend on the ids)."""
    doc: list[Any] = [[_wire_id(i), m, f if isinstance(f, str) else bool(f)] for i, m, f in entries]
    if view is not None:
        doc.append({"v": _ref_json(view)})
    return _b64(orjson.dumps(doc))


def observe_only(entries: Iterable[tuple[Any, str, bool | str]]) -> bool:
    """True when every entry only observes a call's result (nothing to learn, nothing to rewrite)."""
    found = False
    for e in entries:
        if e[1] not in BY_OBSERVED_METHOD:
            return False
        found = True
    return found


def stream_mark(view: ViewJson | None) -> str:
    """The learn-header value for a 2024-11-05 GET event stream (with whose view to filter it)."""
    if view is None:
        return STREAM_MARK
    return f"{STREAM_MARK}:{_b64(orjson.dumps(_ref_json(view)))}"


def end_mark(session_id: str) -> str:
    """The learn-header value for an owner's DELETE of `session_id`."""
    return f"{END_MARK}:{_b64(session_id.encode('ascii'))}"
