"""Learn each MCP server's published spec from its responses, as ext_proc streams them past.

ext_authz marks a request learnable by adding `x-mcp-extauthz-learn` (its format:
extauthz.mcp.learnheader), one entry per learnable JSON-RPC request in the body, and, when lists
are filtered, a trailing `{"v": ref}` (`extauthz.specs.listfilter`: a fingerprint of the caller's
view, which ext_proc resolves again from the identity Envoy forwards). A view with no entries marks a
GET resuming a stream (`Last-Event-ID`), whose replayed lists are filtered by their shape.

The `Learner` holds what outlives one response: the store, the app's hooks, and the 2024-11-05
sessions' pending requests and queued denials. For each response ext_proc shows us it decodes that
header, resolves the caller's view, and makes the `Exchange` (extauthz.specs.exchange) or
`StreamExchange` (extauthz.specs.streamexchange) that reads the response and feeds the store. The
response is changed only to filter lists, and that fails closed: a list that cannot be filtered for
its caller is shown empty.
"""

from __future__ import annotations

import base64
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from extauthz.mcp.learnheader import (
    LEARN_HEADER,
    MAX_ENTRIES,
    STREAM_MARK,
    IdKey,
    LearnEntry,
    decode_learn,
    decode_stream_mark,
    id_key,
)
from extauthz.mcp.methods import LEARN_METHODS
from extauthz.shared.changes import StreamExpected, StreamInjected
from extauthz.specs.exchange import Exchange
from extauthz.specs.listfilter import View, ViewRef, fingerprint
from extauthz.specs.responsefilter import ListView
from extauthz.specs.store import SpecStore
from extauthz.specs.streamexchange import StreamExchange

log = logging.getLogger("extauthz.specs.learn")

__all__ = ["Learner"]

MAX_BODY_BYTES = 8 * 1024 * 1024        # JSON bodies buffered at most this much, then abandoned
MAX_EVENT_BYTES = 8 * 1024 * 1024       # one SSE event at most this much, then dropped
MAX_STREAM_SESSIONS = 10000             # 2024-11-05 sessions with learnable requests in flight
MAX_INJECT_BYTES = 1024 * 1024          # queued denial events per 2024-11-05 session


class Learner:
    """Factory of per-response `Exchange`s sharing one store.

    `on_drift_mode()` is read for every page (the policy hot-reloads). `on_session(server, caller,
    session_id)` is called when a successful initialize result came with an `mcp-session-id`.
    """

    def __init__(self, store: SpecStore, on_drift_mode: Callable[[], str], *,
                 on_session: Callable[[str, str, str], None] | None = None,
                 list_view: ListView | None = None,
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
        self.stream_pending: OrderedDict[tuple[str, str], dict[IdKey, LearnEntry]] = OrderedDict()
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
            k = id_key(rid)
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
                ref = decode_stream_mark(learn_header_value, View.from_json)
                if ref is None:
                    return self._blind(server, caller, session_id, "marker_malformed", stream=True)
                view, failure = self._resolve(ref, identity)
                return StreamExchange(self, server, caller or "", "", [], view, failure=failure)
            decoded = decode_learn(learn_header_value, View.from_json)
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
