"""The header ext_authz uses to tell ext_proc what to do with a response: its encoding and decoding.

`x-mcp-extauthz-learn` carries base64url (unpadded) of `[[id, method, first], ...]` for learnable
requests, `[id, method, name]` for observed calls, and a trailing `{"v": ref}` when the
response's lists are to be filtered for that caller; or a stream mark (a 2024-11-05 GET event
stream), or an end mark (an owner's DELETE). `x-mcp-extauthz-observe` carries the same encoding
for requests that are only observed: their route sends the response to ext_proc in observability
mode, so Envoy never waits for the service on them.

Decoding is defensive (None for anything ext_authz does not write). A view is the caller's own
business (extauthz.specs.listfilter.View): the decoder checks a fingerprint's shape itself and hands
any other view to the `view_from_json` it is given, so this module needs nothing of specs/.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson

from extauthz.mcp.headers import MAX_SESSION_ID_CHARS, SESSION_ID
from extauthz.mcp.kinds import BY_OBSERVED_METHOD
from extauthz.mcp.methods import LEARN_METHODS

LEARN_HEADER = "x-mcp-extauthz-learn"
OBSERVE_HEADER = "x-mcp-extauthz-observe"
STREAM_MARK = "sse-stream"              # learn-header value for a 2024-11-05 GET event stream
END_MARK = "session-end"                # learn-header value for an owner's DELETE
MAX_HEADER_CHARS = 64 * 1024            # encoded learn header: MAX_ENTRIES of the largest entry fit
MAX_ENTRIES = 256                       # learnable requests in one batch (the Check denies more)
MAX_ID_CHARS = 512                      # an inline string id (longer ones travel as a digest)
ID_INLINE_CHARS = 40                    # a UUID fits; longer string ids travel as a digest
MAX_NAME_CHARS = 1024
DIGEST_CHARS = 22                       # 16 bytes, base64url unpadded: a long id's digest, a view fingerprint


class _JsonView(Protocol):
    def to_json(self) -> list[Any]: ...


# A view to filter lists for: its fingerprint, or the view itself (extauthz.specs.listfilter.ViewRef).
ViewJson = _JsonView | str
V = TypeVar("V")
# How a JSON-RPC id compares (`id_key`): ("i", 2), ("s", "2"), ("h", digest of a long string id).
IdKey = tuple[str, str | int]

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_END_PREFIX = END_MARK + ":"
_STREAM_PREFIX = STREAM_MARK + ":"


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


# -- decoding (ext_proc) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LearnEntry:
    id: str | int | tuple[str, str]     # ("h", digest): a long string id
    method: str
    first: bool
    name: str = ""            # observed calls: the tool/prompt name or resource URI


def id_key(value: Any) -> IdKey | None:
    """JSON-RPC ids compare by type and value: 2 and "2" are different requests. A long string id
    compares by its digest (what the learn header carries for it); a digest from the header is
    already a key."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return ("i", value)
    if isinstance(value, str):
        return ("s", value) if inline_id(value) else ("h", id_digest(value))
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "h" and isinstance(value[1], str):
        return value
    return None


def _ref_from_json(v: Any, view_from_json: Callable[[Any], V | None]) -> V | str | None:
    if isinstance(v, str):
        return v if len(v) == DIGEST_CHARS and _B64URL.fullmatch(v) else None
    return view_from_json(v)


def decode_stream_mark(value: str, view_from_json: Callable[[Any], V | None]) -> V | str | None:
    """The view of a stream mark with one (`stream_mark(view)`), or None when it is malformed."""
    if not value.startswith(_STREAM_PREFIX) or len(value) > MAX_HEADER_CHARS:
        return None
    enc = value[len(_STREAM_PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(enc + "=" * (-len(enc) % 4))
        v = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    return _ref_from_json(v, view_from_json)


def decode_learn(value: str | bytes | None, view_from_json: Callable[[Any], V | None],
                 ) -> tuple[list[LearnEntry], V | str | None] | None:
    """The entries and view of `encode_learn_header`'s value. None for absent, oversized, or
    malformed values; unknown methods and ill-typed entries make the whole header invalid
    (ext_authz never sends them)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > MAX_HEADER_CHARS or not _B64URL.fullmatch(value) or len(value) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        doc = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(doc, list) or not doc or len(doc) > MAX_ENTRIES + 1:
        return None
    view: V | str | None = None
    if isinstance(doc[-1], dict):
        view = _ref_from_json(doc.pop()["v"] if set(doc[-1]) == {"v"} else None, view_from_json)
        if view is None:
            return None
    if (not doc and view is None) or len(doc) > MAX_ENTRIES:
        return None                     # (a view alone: a resumed stream, filtered by shape)
    out: list[LearnEntry] = []
    for item in doc:
        if not isinstance(item, list) or len(item) != 3:
            return None
        rid, method, first = item
        if isinstance(rid, dict):           # a long string id, as its digest
            h = rid.get("h") if set(rid) == {"h"} else None
            if not isinstance(h, str) or len(h) != DIGEST_CHARS or not _B64URL.fullmatch(h):
                return None
            rid = ("h", h)
        if id_key(rid) is None or (isinstance(rid, str) and len(rid) > MAX_ID_CHARS):
            return None
        if method in BY_OBSERVED_METHOD and isinstance(first, str) and len(first) <= MAX_NAME_CHARS:
            out.append(LearnEntry(rid, method, False, first))
            continue
        if method not in LEARN_METHODS or not isinstance(first, bool):
            return None
        out.append(LearnEntry(rid, method, first))
    return out, view


def decode_end_mark(value: str | bytes | None) -> str | None:
    """The session id of an end mark, or None unless `value` is exactly what `end_mark` writes."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or not value.startswith(_END_PREFIX):
        return None
    enc = value[len(_END_PREFIX):]
    if not enc or len(enc) > 2 * MAX_SESSION_ID_CHARS or not _B64URL.fullmatch(enc) or len(enc) % 4 == 1:
        return None
    try:
        sid = base64.urlsafe_b64decode(enc + "=" * (-len(enc) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        return None
    if not sid or len(sid) > MAX_SESSION_ID_CHARS or not SESSION_ID.fullmatch(sid) or end_mark(sid) != value:
        return None                 # not canonical (padding, trailing bits): not something we wrote
    return sid
