"""Learn each MCP server's published spec from its responses, as ext_proc streams them past.

ext_authz marks a request learnable by adding `x-mcp-extauthz-learn` (its encoding:
extauthz.mcp.learnheader), one entry per learnable JSON-RPC request in the body, and, when lists
are filtered, a trailing `{"v": ref}` (`extauthz.specs.listfilter`: a fingerprint of the caller's
view, which ext_proc resolves again from the identity Envoy forwards). A view with no entries marks a
GET resuming a stream (`Last-Event-ID`), whose replayed lists are filtered by their shape. ext_proc
hands us that header, then the response headers and the response body in chunks. An `Exchange`
pairs each JSON-RPC response in the body with its request by id and feeds the store:

* `tools/list`, `resources/list`, `resources/templates/list`, `prompts/list` → `store.apply_page`
  (a request without a cursor starts a new snapshot; the page without `nextCursor` completes it);
* `initialize` → `store.note_info` (protocolVersion, serverInfo, capabilities, instructions), and the
  `mcp-session-id` response header becomes `exchange.issued_session_id`;
* `server/discover` → `store.note_info` (supportedVersions, capabilities, instructions, serverInfo from
  `_meta["io.modelcontextprotocol/serverInfo"]`).

Bodies are `application/json` (buffered up to a bound, parsed at end of stream) or
`text/event-stream` (parsed event by event as each completes). Nothing here raises to the caller: a
body we cannot read is logged and not learned from. The response is changed only to filter lists,
and that fails closed: a list that cannot be filtered for its caller is shown empty.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from extauthz.mcp.headers import SESSION_HEADER
from extauthz.mcp.kinds import BY_LIST_METHOD, BY_OBSERVED_METHOD, Kind
from extauthz.mcp.learnheader import (
    LEARN_HEADER,
    MAX_ENTRIES,
    MAX_HEADER_CHARS,
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    STREAM_MARK,
    id_digest,
    inline_id,
)
from extauthz.mcp.methods import LEARN_METHODS
from extauthz.mcp.rewrite import BodyRewriter, Rewriter
from extauthz.mcp.sse import SseParser
from extauthz.shared.changes import StreamExpected, StreamInjected
from extauthz.specs.listfilter import (
    FINGERPRINT_CHARS,
    View,
    ViewRef,
    blank,
    filtered,
    fingerprint,
    list_kind_of,
    unreadable_body,
)
from extauthz.specs.store import SpecStore

log = logging.getLogger("extauthz.specs.learn")

__all__ = ["Learner", "Exchange", "LearnEntry", "decode_learn_header", "decode_learn"]

MAX_BODY_BYTES = 8 * 1024 * 1024        # JSON bodies buffered at most this much, then abandoned
MAX_EVENT_BYTES = 8 * 1024 * 1024       # one SSE event at most this much, then dropped
MAX_SESSION_ID_CHARS = 1024
MAX_STREAM_SESSIONS = 10000             # 2024-11-05 sessions with learnable requests in flight
MAX_INJECT_BYTES = 1024 * 1024          # queued denial events per 2024-11-05 session

SERVER_INFO_META_KEY = "io.modelcontextprotocol/serverInfo"

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_SESSION_ID = re.compile(r"[\x21-\x7e]+")   # MCP: visible ASCII only


@dataclass(frozen=True, slots=True)
class LearnEntry:
    id: str | int | tuple[str, str]     # ("h", digest): a long string id
    method: str
    first: bool
    name: str = ""            # observed calls: the tool/prompt name or resource URI


def _id_key(value: Any) -> tuple[str, str | int] | None:
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


def _ref_from_json(v: Any) -> ViewRef | None:
    if isinstance(v, str):
        return v if len(v) == FINGERPRINT_CHARS and _B64URL.fullmatch(v) else None
    return View.from_json(v)


def _stream_view(value: str) -> ViewRef | None:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        v = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    return _ref_from_json(v)


def decode_learn_header(value: str | bytes | None) -> list[LearnEntry] | None:
    decoded = decode_learn(value)
    return None if decoded is None else decoded[0]


def decode_learn(value: str | bytes | None) -> tuple[list[LearnEntry], ViewRef | None] | None:
    """Decode defensively: None for absent, oversized, or malformed values; unknown methods and
    ill-typed entries make the whole header invalid (ext_authz never sends them)."""
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
    view: ViewRef | None = None
    if isinstance(doc[-1], dict):
        view = _ref_from_json(doc.pop()["v"] if set(doc[-1]) == {"v"} else None)
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
            if not isinstance(h, str) or len(h) != FINGERPRINT_CHARS or not _B64URL.fullmatch(h):
                return None
            rid = ("h", h)
        if _id_key(rid) is None or (isinstance(rid, str) and len(rid) > MAX_ID_CHARS):
            return None
        if method in BY_OBSERVED_METHOD and isinstance(first, str) and len(first) <= MAX_NAME_CHARS:
            out.append(LearnEntry(rid, method, False, first))
            continue
        if method not in LEARN_METHODS or not isinstance(first, bool):
            return None
        out.append(LearnEntry(rid, method, first))
    return out, view


class Learner:
    """Factory of per-response `Exchange`s sharing one store.

    `on_drift_mode()` is read for every page (the policy hot-reloads). `on_session(server, caller,
    session_id)` is called when a successful initialize result came with an `mcp-session-id`.
    """

    def __init__(self, store: SpecStore, on_drift_mode: Callable[[], str], *,
                 on_session: Callable[[str, str, str], None] | None = None,
                 list_view: Callable[[str, View], Callable[[str, Any], bool] | None] | None = None,
                 resolve_view: Callable[[Any], View] | None = None,
                 filtering: Callable[[str], bool] | None = None,
                 on_filter_failure: Callable[[str, str], None] | None = None,
                 on_listed: Callable[..., None] | None = None,
                 on_result: Callable[..., None] | None = None,
                 on_session_end: Callable[[str, str, str], None] | None = None,
                 max_body_bytes: int = MAX_BODY_BYTES, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.store = store
        self.on_drift_mode = on_drift_mode
        self.on_session = on_session
        # 2024-11-05 HTTP+SSE: a POST's result arrives later on the session's GET stream, so
        # ext_authz leaves the learn entries here, keyed by (server, session id), for that stream.
        self.stream_pending: OrderedDict[tuple[str, str], dict[tuple[str, str | int], LearnEntry]] = OrderedDict()
        # ...and denials of its POSTs wait here to be written into that stream as SSE events,
        # because a 2024-11-05 client reads every answer from the stream, never from the POST.
        self.stream_inject: OrderedDict[tuple[str, str], bytearray] = OrderedDict()
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes
        # The app's hooks (each may be None; failures are logged, never raised):
        # list_view(server, view) -> keep(kind, item) | None: filter lists for that caller;
        # on_listed(server, session_id, caller, kind, keys, first, last): what this session was shown;
        # on_result(server, caller, session_id, entry, result | None, size): an observed call's result.
        self.list_view = list_view
        self.on_listed = on_listed
        self.on_result = on_result
        # Filtering fails closed (extauthz.specs.listfilter): resolve_view(identity) -> View, the
        # caller of the request ext_proc sees (raises when it cannot be told); filtering(server) ->
        # whether lists on that server are filtered at all (asked when the learn header is
        # unreadable); on_filter_failure(server, reason): one list shown empty, or one body replaced.
        self.resolve_view = resolve_view
        self.filtering = filtering
        self.on_filter_failure = on_filter_failure
        # on_session_end(server, session_id, outcome): the server's answer to an owner's DELETE
        # (extauthz.sessions.ending); outcome "ended" | "not_found" | "refused".
        self.on_session_end = on_session_end

    def expect(self, server: str, session_id: str, entries: Iterable[Sequence[Any]]) -> None:
        """Remember learnable requests of a 2024-11-05 session until its SSE stream answers them."""
        key = (server, session_id)
        pending = self.stream_pending.get(key)
        if pending is None:
            pending = self.stream_pending[key] = {}
            while len(self.stream_pending) > MAX_STREAM_SESSIONS:
                self.stream_pending.popitem(last=False)
        for rid, method, first in entries:
            k = _id_key(rid)
            if k is not None and method in LEARN_METHODS and len(pending) < MAX_ENTRIES:
                pending[k] = LearnEntry(rid, method, bool(first))

    def apply(self, change: StreamExpected | StreamInjected) -> None:
        """A 2024-11-05 POST decided by another process, or its denial, for a stream served here."""
        if isinstance(change, StreamExpected):
            self.expect(change.server, change.sid, [list(e) for e in change.entries])
        elif isinstance(change, StreamInjected):
            self.inject(change.server, change.sid, base64.b64decode(change.event, validate=True))
        else:
            raise TypeError(f"not a stream change: {change!r}")

    def inject(self, server: str, session_id: str, event: bytes) -> None:
        """Queue a whole SSE event for the 2024-11-05 stream of this session (bounded)."""
        key = (server, session_id)
        buf = self.stream_inject.get(key)
        if buf is None:
            buf = self.stream_inject[key] = bytearray()
            while len(self.stream_inject) > MAX_STREAM_SESSIONS:
                self.stream_inject.popitem(last=False)
        if len(buf) + len(event) <= MAX_INJECT_BYTES:
            buf += event

    def exchange(self, server: str | None, caller: str | None, session_id: str | None,
                 learn_header_value: str | bytes | None, identity: Any = None) -> Exchange | None:
        """The exchange for one response, or None when there is nothing to learn or filter. A
        marker that cannot be read still gets one when lists are filtered: it shows every list
        empty (`identity`: what `resolve_view` reads, the headers and metadata ext_proc saw)."""
        try:
            if isinstance(learn_header_value, bytes):
                learn_header_value = learn_header_value.decode("ascii", "replace")
            if not server or not isinstance(server, str):
                return self._blind(str(server or ""), caller, session_id, "no_server") if learn_header_value else None
            if learn_header_value == STREAM_MARK:
                return StreamExchange(self, server, caller or "", "", [])
            if isinstance(learn_header_value, str) and learn_header_value.startswith(STREAM_MARK + ":"):
                ref = _stream_view(learn_header_value[11:]) if len(learn_header_value) <= MAX_HEADER_CHARS else None
                if ref is None:
                    return self._blind(server, caller, session_id, "marker_malformed", stream=True)
                view, failure = self._resolve(ref, identity)
                return StreamExchange(self, server, caller or "", "", [], view, failure=failure)
            decoded = decode_learn(learn_header_value)
            if decoded is None:
                if learn_header_value:
                    log.warning("malformed %s header for server %s: its lists are shown empty", LEARN_HEADER, server)
                    return self._blind(server, caller, session_id, "marker_malformed")
                return None
            view, failure = self._resolve(decoded[1], identity)
            return Exchange(self, server, caller or "", session_id or "", decoded[0], view, failure=failure)
        except Exception:  # noqa: BLE001 - never fail the stream over learning
            log.exception("could not start learning for server %s", server)
            return self._blind(str(server or ""), caller, session_id, "internal_error")

    def _blind(self, server: str, caller: str | None, session_id: str | None, why: str, *,
               stream: bool = False) -> Exchange | None:
        """Nothing to learn from, and whatever list comes back is shown empty (when lists are
        filtered on this server; a policy that does not filter them is not overruled)."""
        try:
            on = self.filtering is None or self.filtering(server)
        except Exception:  # noqa: BLE001
            log.exception("filtering(%s) failed; lists are shown empty", server)
            on = True
        if not on:
            return None
        cls = StreamExchange if stream else Exchange
        return cls(self, server, caller or "", session_id or "", [], None, failure=why)

    def _resolve(self, ref: ViewRef | None, identity: Any) -> tuple[View | None, str | None]:
        """The view to filter with, or why there is none (None, None: the Check did not ask)."""
        if ref is None or isinstance(ref, View):
            return ref, None
        if self.resolve_view is None:
            return None, "view_unresolved"
        try:
            view = self.resolve_view(identity)
        except Exception as e:  # noqa: BLE001 - BadIdentity, no policy, a bug: all fail closed
            log.warning("cannot resolve the caller in ext_proc (%s): its lists are shown empty", e)
            return None, "view_unresolved"
        if fingerprint(view) != ref:
            if view.anonymous:          # e.g. Envoy forwards ext_proc no claims (metadata_options)
                log.warning("ext_proc sees no caller identity for a filtered list: shown empty (does Envoy "
                            "forward the jwt_authn metadata to ext_proc?)")
                return None, "view_unresolved"
            log.warning("ext_proc resolved another caller than the Check filtered for: its lists are shown empty")
            return None, "view_mismatch"
        return view, None

    def filter_failed(self, server: str, reason: str) -> None:
        if self.on_filter_failure is not None:
            try:
                self.on_filter_failure(server, reason)
            except Exception:  # noqa: BLE001
                log.exception("on_filter_failure hook failed")

    def drift_mode(self) -> str:
        try:
            mode = self.on_drift_mode()
        except Exception:  # noqa: BLE001
            log.exception("on_drift_mode failed; using quarantine")
            return "quarantine"
        return mode if isinstance(mode, str) else "quarantine"


class Exchange:
    """One request/response pair being learned from. Feed it response headers then body chunks."""

    _filters_later = False        # a stream whose list requests arrive later (2024-11-05)

    def __init__(self, learner: Learner, server: str, caller: str, session_id: str,
                 entries: list[LearnEntry], view: View | None = None, *, failure: str | None = None) -> None:
        self.learner = learner
        self.view = view
        # Why this caller's lists cannot be filtered (extauthz.specs.listfilter.FAILURES): every
        # list in the response is then shown empty.
        self.failure = failure
        self.rewriter: Rewriter | None = None         # set when this caller's lists are filtered
        self._keep: Callable[[str, Any], bool] | None = None
        self._list_ids: dict[tuple[str, str | int], str] = {}
        self.server = server
        self.caller = caller
        self.session_id = session_id
        self.entries = entries
        self.pending: dict[tuple[str, str | int], LearnEntry] = {}
        dup: set[tuple[str, str | int]] = set()
        for e in entries:
            k = _id_key(e.id)
            assert k is not None
            if k in self.pending:
                dup.add(k)               # two requests with one id: a response could be either
            self.pending[k] = e
        for k in dup:
            del self.pending[k]
        for k, e in self.pending.items():
            if e.method in BY_LIST_METHOD:
                self._list_ids[k] = BY_LIST_METHOD[e.method].value
        # Answers to these are not lists, whatever they look like; any other list-shaped result
        # (an id we did not send, a duplicate answer) is filtered by its shape.
        self._other_ids = frozenset(k for k, e in self.pending.items() if e.method not in BY_LIST_METHOD)
        self._failures_logged: set[str] = set()
        self._payload_size = 0
        self.learned: list[tuple[str, int]] = []
        self.issued_session_id: str | None = None
        self.status: int | None = None
        self.mode: str | None = None     # "json" | "sse" once headers said so
        self.abandoned: str | None = None
        self.finished = False
        self._buf = bytearray()
        self._sse: SseParser | None = None
        self._dropped_seen = 0

    # -- properties -----------------------------------------------------------------------------

    @property
    def partition(self) -> str:
        return self.session_id or self.caller

    @property
    def done(self) -> bool:
        """Nothing left to learn from this response."""
        return self.finished or self.abandoned is not None or not self.pending

    # -- feeding ---------------------------------------------------------------------------------

    @property
    def filters(self) -> bool:
        """This response's lists are filtered (or, failing that, shown empty)."""
        return self.view is not None or self.failure is not None

    def on_response_headers(self, status: int | str | None, headers: dict[str, str]) -> None:
        try:
            self._on_response_headers(status, headers)
        except Exception:  # noqa: BLE001
            log.exception("learning failed on response headers from %s", self.server)
            self._abandon("internal error")
            if self.filters and self.rewriter is None:
                self.fail_closed()

    def fail_closed(self) -> None:
        """Something broke mid-response: nothing more of it passes; the caller gets an error."""
        self.failure = self.failure or "internal_error"
        mode = self.rewriter.mode if self.rewriter is not None else "json"
        self.rewriter = _Replace(self._unreadable, mode, replaces_body=self.rewriter is None)

    def on_body(self, chunk: bytes, end_of_stream: bool) -> None:
        if self.finished:
            return                      # learned all there was, or gave up: the rest is free
        try:
            self._on_body(chunk, end_of_stream)
        except Exception:  # noqa: BLE001
            log.exception("learning failed on response body from %s", self.server)
            self._abandon("internal error")

    def close(self, *, parse: bool = True) -> None:
        """The stream ended. With `parse`, a JSON body that arrived without end_of_stream (the
        response had trailers, which ext_proc skipped; or Envoy reset the stream, which grpc.aio
        reports as a plain end of the request iterator) is parsed now: a cut body is a prefix of a
        JSON object or array, which never parses, and a whole one is what the server published.
        Buffers are released either way."""
        if self.finished:
            return
        try:
            if parse and self.abandoned is None and self.mode == "json" and self._buf:
                self._finish_json(truncated_ok=True)
        except Exception:  # noqa: BLE001
            log.exception("learning failed closing exchange with %s", self.server)
        self._release()

    # -- internals -------------------------------------------------------------------------------

    def _abandon(self, why: str) -> None:
        if self.abandoned is None:
            self.abandoned = why
        self._release()

    def _release(self) -> None:
        self.finished = True
        self._buf = bytearray()
        if self._sse is not None:
            self._sse.close()
            self._sse = None

    def _on_response_headers(self, status: int | str | None, headers: dict[str, str]) -> None:
        if self.mode is not None or self.finished:
            return
        h = {str(k).lower(): v for k, v in (headers or {}).items()}
        try:
            self.status = int(status)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.status = None
        self._start_filter(h)
        if self.status is None or not 200 <= self.status < 300:
            self._abandon(f"status {status}")
            return
        sid = h.get(SESSION_HEADER)
        if (isinstance(sid, str) and any(e.method == "initialize" for e in self.pending.values())
                and len(sid) <= MAX_SESSION_ID_CHARS and _SESSION_ID.fullmatch(sid)):
            self.issued_session_id = sid
        encoding = str(h.get("content-encoding") or "identity").strip().lower()
        if encoding != "identity":
            self._abandon(f"content-encoding {encoding}")
            log.info("not learning from %s: response is %s-encoded", self.server, encoding)
            return
        ctype = str(h.get("content-type") or "").split(";", 1)[0].strip().lower()
        if ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json")):
            self.mode = "json"
        elif ctype == "text/event-stream":
            self.mode = "sse"
            self._sse = SseParser(self.learner.max_event_bytes)
        else:
            self._abandon(f"content-type {ctype or 'missing'}")
            return

    # -- filtering lists (fails closed) ----------------------------------------------------------

    def _start_filter(self, h: dict[str, Any]) -> None:
        """Set the rewriter for any status and content type: a list a client may read is filtered,
        or shown empty when it cannot be. Without a view and without a failure the Check did not
        ask for filtering (filterLists off, monitor mode, a shadow server, no list requested)."""
        if self.rewriter is not None or (self.view is None and self.failure is None):
            return
        if self.failure is None:
            if self.learner.list_view is None:
                return
            try:
                self._keep = self.learner.list_view(self.server, self.view)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001
                log.exception("list view for %s failed; its lists are shown empty", self.server)
                self.failure = "filter_error"
            if self._keep is None and self.failure is None:
                return                  # the policy (now) does not filter this server's lists
        ok = self.status is not None and 200 <= self.status < 300
        ctype = str(h.get("content-type") or "").split(";", 1)[0].strip().lower()
        encoding = str(h.get("content-encoding") or "identity").strip().lower()
        if encoding != "identity":
            if ok:                     # unreadable to us, not to the client: replaced whole
                self.rewriter = _Replace(self._unreadable, "json", replaces_body=True)
            return
        self.rewriter = BodyRewriter("sse" if ctype == "text/event-stream" else "json", self._filtered,
                                     max(self.learner.max_body_bytes, self.learner.max_event_bytes),
                                     on_error=self._blank_failed, unreadable=self._unreadable if ok else None)

    def _filtered(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """This caller's view of a list result: only what the policy lets it call."""
        key = _id_key(msg.get("id"))
        kind = self._list_ids.pop(key, None) if key is not None else None
        if kind is None:
            if key in self._other_ids:
                return None             # the answer to a request that is not a list
            kind = list_kind_of(msg.get("result"))
            if kind is None:
                return None
        if self.failure is not None or self._keep is None:
            return self._blank(msg, kind, self.failure or "filter_error")
        try:
            return filtered(msg, kind, self._keep)
        except Exception:  # noqa: BLE001 - a filter that fails shows nothing
            log.exception("filtering a %s list from %s failed", kind, self.server)
            return self._blank(msg, kind, "filter_error")

    def _blank(self, msg: dict[str, Any], kind: str, reason: str) -> dict[str, Any]:
        self._count_failure(reason)
        return blank(msg, kind)

    def _blank_failed(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """The rewriter could not apply `_filtered` (it raised, or its output cannot be written)."""
        kind = self._list_ids.pop(_id_key(msg.get("id")) or ("", ""), None) or list_kind_of(msg.get("result"))
        return self._blank(msg, kind, "filter_error") if kind is not None else None

    def _unreadable(self, why: str) -> bytes:
        self._count_failure({"too large": "body_too_large", "encoded": "body_encoded",
                             "internal": self.failure or "internal_error"}.get(why, "body_unreadable"))
        return unreadable_body()

    def _count_failure(self, reason: str) -> None:
        if reason not in self._failures_logged:
            self._failures_logged.add(reason)
            log.warning("a list response from %s could not be filtered for %s (%s): shown empty",
                        self.server, self.caller or "its caller", reason)
        self.learner.filter_failed(self.server, reason)

    def _on_body(self, chunk: bytes, end_of_stream: bool) -> None:
        if self.done:
            if end_of_stream:
                self._release()
            return
        if self.mode == "json":
            if chunk:
                if len(self._buf) + len(chunk) > self.learner.max_body_bytes:
                    log.warning("not learning from %s: JSON response exceeds %d bytes",
                                self.server, self.learner.max_body_bytes)
                    self._observed_unread(len(self._buf) + len(chunk))
                    self._abandon("body too large")
                    return
                self._buf += chunk
            if end_of_stream:
                self._finish_json()
        elif self.mode == "sse":
            assert self._sse is not None
            if chunk:
                for ev in self._sse.feed(chunk):
                    self._on_event(ev)
                    if self.done:
                        break
                if self._sse is not None and self._sse.dropped > self._dropped_seen:
                    log.warning("dropped %d SSE event(s) from %s larger than %d bytes",
                                self._sse.dropped - self._dropped_seen, self.server,
                                self.learner.max_event_bytes)
                    self._dropped_seen = self._sse.dropped
            if end_of_stream or self._exhausted():
                self._release()
        else:
            # body without (usable) headers: nothing we can interpret
            self._abandon("body before headers")

    def _on_event(self, ev: Any) -> None:
        if ev.event == "message" and ev.data:
            self._handle_payload(ev.data)

    def _exhausted(self) -> bool:
        return not self.pending

    def _entry_for(self, key: tuple[str, str | int]) -> LearnEntry | None:
        return self.pending.pop(key, None)

    def _finish_json(self, *, truncated_ok: bool = False) -> None:
        buf, self._buf = self._buf, bytearray()
        try:
            if buf:
                self._handle_payload(buf, quiet=truncated_ok)
        finally:
            self._release()

    def _observed_unread(self, size: int) -> None:
        """Observed calls whose response was too large to read: still report their size."""
        for e in list(self.pending.values()):
            if e.method in BY_OBSERVED_METHOD:
                self._report(e, None, size)

    def _report(self, entry: LearnEntry, result: dict[str, Any] | None, size: int) -> None:
        if self.learner.on_result is not None:
            try:
                self.learner.on_result(self.server, self.caller, self.session_id, entry, result, size)
            except Exception:  # noqa: BLE001
                log.exception("on_result hook failed for %s", self.server)

    def _handle_payload(self, data: bytes | bytearray, *, quiet: bool = False) -> None:
        self._payload_size = len(data)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            log.log(logging.DEBUG if quiet else logging.INFO,
                    "not learning from %s: response is not JSON (%s)", self.server, e)
            return
        if isinstance(doc, list):
            for msg in doc:
                self._handle_message(msg)
        else:
            self._handle_message(doc)

    def _handle_message(self, msg: Any) -> None:
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0" or "method" in msg:
            return                      # not a response (server request/notification, junk)
        key = _id_key(msg.get("id"))
        entry = self._entry_for(key) if key is not None else None
        if entry is None:
            return
        result = msg.get("result")
        if "error" in msg or not isinstance(result, dict):
            log.debug("%s answered %s (id %r) with an error or no result", self.server, entry.method, entry.id)
            return
        try:
            if entry.method in BY_OBSERVED_METHOD:
                self._report(entry, result, self._payload_size)
            elif entry.method in BY_LIST_METHOD:
                self._learn_list(entry, result)
            elif entry.method == "initialize":
                self._learn_initialize(result)
            elif entry.method == "server/discover":
                self._learn_discover(result)
        except Exception:  # noqa: BLE001 - one bad message must not stop the others
            log.exception("failed to learn %s from %s", entry.method, self.server)

    def _learn_list(self, entry: LearnEntry, result: dict[str, Any]) -> None:
        kind = BY_LIST_METHOD[entry.method].value
        items = result.get(kind)
        if not isinstance(items, list):
            log.info("%s: %s result has no %r list; ignored", self.server, entry.method, kind)
            return
        good = [it for it in items if isinstance(it, dict)]
        if len(good) != len(items):
            log.info("%s: %s result had %d non-object item(s); skipped", self.server, entry.method,
                     len(items) - len(good))
        cursor = result.get("nextCursor")
        last = cursor is None or cursor == ""
        self.learner.store.apply_page(self.server, kind, good, first=entry.first, last=last,
                                      partition=self.partition, on_drift=self.learner.drift_mode(),
                                      viewer=self.caller or self.partition)
        if self.learner.on_listed is not None:
            field = Kind(kind).key_field
            keys = [k for it in good if isinstance(k := it.get(field), str)]
            try:
                self.learner.on_listed(self.server, self.session_id, self.caller, kind, keys, first=entry.first,
                                       last=last)
            except Exception:  # noqa: BLE001
                log.exception("on_listed hook failed for %s", self.server)
        self.learned.append((entry.method, len(good)))

    def _learn_initialize(self, result: dict[str, Any]) -> None:
        info: dict[str, Any] = {}
        _take(info, result, "protocolVersion", str)
        _take(info, result, "serverInfo", dict)
        _take(info, result, "capabilities", dict)
        _take(info, result, "instructions", str)
        if info:
            self.learner.store.note_info(self.server, info)
        self.learned.append(("initialize", len(info)))
        if self.issued_session_id and self.learner.on_session is not None:
            try:
                self.learner.on_session(self.server, self.caller, self.issued_session_id)
            except Exception:  # noqa: BLE001
                log.exception("on_session hook failed for %s", self.server)

    def _learn_discover(self, result: dict[str, Any]) -> None:
        info: dict[str, Any] = {}
        versions = result.get("supportedVersions")
        if isinstance(versions, list) and all(isinstance(v, str) for v in versions):
            info["supportedVersions"] = versions
        _take(info, result, "capabilities", dict)
        _take(info, result, "instructions", str)
        meta = result.get("_meta")
        if isinstance(meta, dict) and isinstance(meta.get(SERVER_INFO_META_KEY), dict):
            info["serverInfo"] = meta[SERVER_INFO_META_KEY]
        if info:
            self.learner.store.note_info(self.server, info)
        self.learned.append(("server/discover", len(info)))


class StreamExchange(Exchange):
    """A 2024-11-05 GET event stream: long-lived, carrying the results of requests that were
    POSTed separately. Its first event (`endpoint`) names the session; each later result is
    paired with the learn entries ext_authz left for that session (`Learner.expect`), and list
    results are filtered for the stream's caller like any other (the session is bound to it)."""

    _filters_later = True

    @property
    def done(self) -> bool:
        return self.finished or self.abandoned is not None

    def _exhausted(self) -> bool:
        return False

    def _on_event(self, ev: Any) -> None:
        if ev.event == "endpoint" and ev.data and not self.session_id:
            query = urllib.parse.urlsplit(ev.text.strip()).query
            sid = urllib.parse.parse_qs(query).get("session_id", [""])[0]
            if sid and len(sid) <= MAX_SESSION_ID_CHARS and _SESSION_ID.fullmatch(sid):
                self.session_id = sid
        elif ev.event == "message" and ev.data and self.session_id:
            self._handle_payload(ev.data)

    def _entry_for(self, key: tuple[str, str | int]) -> LearnEntry | None:
        pending = self.learner.stream_pending.get((self.server, self.session_id))
        entry = pending.pop(key, None) if pending else None
        if entry is not None and entry.method in BY_LIST_METHOD and self.rewriter is not None:
            self._list_ids[key] = BY_LIST_METHOD[entry.method].value     # the rewriter sees this event next
        return entry

    def take_injection(self) -> bytes:
        """Queued events for this session, if the stream is between events (never mid-event)."""
        if not self.session_id or (self._sse is not None and self._sse.buffered_bytes):
            return b""
        buf = self.learner.stream_inject.pop((self.server, self.session_id), None)
        return bytes(buf) if buf else b""


def _take(out: dict[str, Any], src: dict[str, Any], key: str, typ: type) -> None:
    v = src.get(key)
    if isinstance(v, typ):
        out[key] = v


class _Replace:
    """The rewriter for a body we cannot read at all (compressed): nothing of it passes; the
    caller gets one JSON-RPC error instead (process.py fixes content-type and content-encoding)."""

    def __init__(self, replacement: Callable[[str], bytes], mode: str, *, replaces_body: bool) -> None:
        self._replacement = replacement
        self.mode = mode
        self.replaces_body = replaces_body      # headers not sent yet: process.py sets them for JSON

    def feed(self, chunk: bytes, end: bool) -> bytes:
        if not end:
            return b""
        body = self._replacement("encoded" if self.replaces_body else "internal")
        return b"event: message\ndata: " + body + b"\n\n" if self.mode == "sse" else body
