"""One response seen through ext_proc, learned from as it streams past (extauthz.specs.learn makes them).

An `Exchange` is fed the response headers, then the body in chunks: `application/json` (buffered up
to a bound, parsed at end of stream) or `text/event-stream` (parsed event by event as each
completes). It pairs each JSON-RPC response with its request by id (the learn header's entries) and
feeds the store: list pages (`store.apply_page`), what `initialize` and `server/discover` results
say of the server (`store.note_info`, `extauthz.specs.model.published_info`); observed calls go to
the `on_result` hook. Its lists are filtered for the caller by its `ResponseFilter`
(extauthz.specs.responsefilter); a 2024-11-05 GET event stream is a `StreamExchange`
(extauthz.specs.streamexchange). Nothing here raises to the caller: a body we cannot read is logged
and not learned from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from extauthz.mcp.headers import MAX_SESSION_ID_CHARS, SESSION_HEADER, SESSION_ID
from extauthz.mcp.kinds import BY_LIST_METHOD, BY_OBSERVED_METHOD, Kind
from extauthz.mcp.learnheader import IdKey, LearnEntry, id_key
from extauthz.mcp.rewrite import Rewriter
from extauthz.mcp.sse import SseParser
from extauthz.specs.listfilter import View
from extauthz.specs.model import published_info
from extauthz.specs.responsefilter import FilterHost, ResponseFilter
from extauthz.specs.store import SpecStore

log = logging.getLogger("extauthz.specs.exchange")

__all__ = ["ExchangeHost", "Exchange"]

class ExchangeHost(FilterHost, Protocol):
    """What an exchange reads of the Learner that made it, when it needs it (hooks may be None)."""

    @property
    def store(self) -> SpecStore: ...
    @property
    def on_session(self) -> Callable[[str, str, str], None] | None: ...
    @property
    def on_listed(self) -> Callable[..., None] | None: ...
    @property
    def on_result(self) -> Callable[..., None] | None: ...
    @property
    def on_session_end(self) -> Callable[[str, str, str], None] | None: ...
    def drift_mode(self) -> str: ...


class Exchange:
    """One request/response pair being learned from. Feed it response headers then body chunks."""

    def __init__(self, learner: ExchangeHost, server: str, caller: str, session_id: str,
                 entries: list[LearnEntry], view: View | None = None, *, failure: str | None = None) -> None:
        self.learner = learner
        self.server = server
        self.caller = caller
        self.session_id = session_id
        self.entries = entries
        self.pending: dict[IdKey, LearnEntry] = {}
        dup: set[IdKey] = set()
        for e in entries:
            k = id_key(e.id)
            assert k is not None
            if k in self.pending:
                dup.add(k)               # two requests with one id: a response could be either
            self.pending[k] = e
        for k in dup:
            del self.pending[k]
        self.lists = ResponseFilter(learner, server, caller, self.pending, view, failure)
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

    @property
    def filters(self) -> bool:
        """This response's lists are filtered (or, failing that, shown empty)."""
        return self.lists.on

    @property
    def view(self) -> View | None:
        return self.lists.view

    @property
    def failure(self) -> str | None:
        """Why this caller's lists cannot be filtered (extauthz.specs.listfilter.FAILURES)."""
        return self.lists.failure

    @property
    def rewriter(self) -> Rewriter | None:
        """What ext_proc feeds the body through, when this caller's lists are filtered."""
        return self.lists.rewriter

    # -- feeding ---------------------------------------------------------------------------------

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
        self.lists.fail_closed()

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
        self.lists.start(self.status, h)
        if self.status is None or not 200 <= self.status < 300:
            self._abandon(f"status {status}")
            return
        sid = h.get(SESSION_HEADER)
        if (isinstance(sid, str) and any(e.method == "initialize" for e in self.pending.values())
                and len(sid) <= MAX_SESSION_ID_CHARS and SESSION_ID.fullmatch(sid)):
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

    def _entry_for(self, key: IdKey) -> LearnEntry | None:
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
        key = id_key(msg.get("id"))
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
            elif entry.method in ("initialize", "server/discover"):
                self._learn_info(entry.method, result)
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

    def _learn_info(self, method: str, result: dict[str, Any]) -> None:
        info = published_info(method, result)
        if info:
            self.learner.store.note_info(self.server, info)
        self.learned.append((method, len(info)))
        if method == "initialize" and self.issued_session_id and self.learner.on_session is not None:
            try:
                self.learner.on_session(self.server, self.caller, self.issued_session_id)
            except Exception:  # noqa: BLE001
                log.exception("on_session hook failed for %s", self.server)
