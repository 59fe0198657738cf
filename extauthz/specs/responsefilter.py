"""The lists in one response, filtered for its caller as ext_proc streams them past, failing closed.

An `Exchange` (extauthz.specs.exchange) owns one `ResponseFilter`. Once the response headers are in,
`start` sets the rewriter ext_proc feeds the body through (extauthz.mcp.rewrite.BodyRewriter, or
`_Replace` for a body we cannot read at all). Each list result is kept to what the policy lets the
caller call (`extauthz.specs.listfilter.filtered`) or, when that cannot be told, shown empty; every
such failure is counted through the host's `filter_failed`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from extauthz.mcp.kinds import BY_LIST_METHOD
from extauthz.mcp.learnheader import IdKey, LearnEntry, id_key
from extauthz.mcp.rewrite import BodyRewriter, Rewriter
from extauthz.specs.listfilter import View, blank, filtered, list_kind_of, unreadable_body

log = logging.getLogger("extauthz.specs.responsefilter")

__all__ = ["FilterHost", "ListView", "ResponseFilter"]

# list_view(server, view) -> keep(kind, item), or None when the policy does not filter that server.
ListView = Callable[[str, View], Callable[[str, Any], bool] | None]


class FilterHost(Protocol):
    """What a filter reads of the Learner, when it needs it (the app may swap hooks meanwhile)."""

    @property
    def list_view(self) -> ListView | None: ...
    @property
    def max_body_bytes(self) -> int: ...
    @property
    def max_event_bytes(self) -> int: ...
    def filter_failed(self, server: str, reason: str) -> None: ...


class ResponseFilter:
    """Filters the lists of one response for `view`; with a `failure` (why the caller's lists cannot
    be filtered: extauthz.specs.listfilter.FAILURES) every list in it is shown empty. Neither: the
    Check did not ask for filtering (filterLists off, monitor mode, a shadow server, no list)."""

    def __init__(self, host: FilterHost, server: str, caller: str, pending: Mapping[IdKey, LearnEntry],
                 view: View | None, failure: str | None) -> None:
        self.host = host
        self.server = server
        self.caller = caller
        self.view = view
        self.failure = failure
        self.rewriter: Rewriter | None = None         # set when this caller's lists are filtered
        self._keep: Callable[[str, Any], bool] | None = None
        self._list_ids = {k: BY_LIST_METHOD[e.method].value for k, e in pending.items() if e.method in BY_LIST_METHOD}
        # Answers to these are not lists, whatever they look like; any other list-shaped result
        # (an id we did not send, a duplicate answer) is filtered by its shape.
        self._other_ids = frozenset(k for k, e in pending.items() if e.method not in BY_LIST_METHOD)
        self._failures_logged: set[str] = set()

    @property
    def on(self) -> bool:
        """This response's lists are filtered (or, failing that, shown empty)."""
        return self.view is not None or self.failure is not None

    def expect(self, key: IdKey, entry: LearnEntry) -> None:
        """A list request answered later in the stream (2024-11-05): the rewriter sees it next."""
        if entry.method in BY_LIST_METHOD and self.rewriter is not None:
            self._list_ids[key] = BY_LIST_METHOD[entry.method].value

    def start(self, status: int | None, h: dict[str, Any]) -> None:
        """Set the rewriter for any status and content type: a list a client may read is filtered,
        or shown empty when it cannot be."""
        if self.rewriter is not None or (self.view is None and self.failure is None):
            return
        if self.failure is None:
            list_view = self.host.list_view
            if list_view is None:
                return
            try:
                self._keep = list_view(self.server, self.view)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001
                log.exception("list view for %s failed; its lists are shown empty", self.server)
                self.failure = "filter_error"
            if self._keep is None and self.failure is None:
                return                  # the policy (now) does not filter this server's lists
        ok = status is not None and 200 <= status < 300
        ctype = str(h.get("content-type") or "").split(";", 1)[0].strip().lower()
        encoding = str(h.get("content-encoding") or "identity").strip().lower()
        if encoding != "identity":
            if ok:                     # unreadable to us, not to the client: replaced whole
                self.rewriter = _Replace(self._unreadable, "json", replaces_body=True)
            return
        self.rewriter = BodyRewriter("sse" if ctype == "text/event-stream" else "json", self._filtered,
                                     max(self.host.max_body_bytes, self.host.max_event_bytes),
                                     on_error=self._blank_failed, unreadable=self._unreadable if ok else None)

    def fail_closed(self) -> None:
        """Something broke mid-response: nothing more of it passes; the caller gets an error."""
        self.failure = self.failure or "internal_error"
        mode = self.rewriter.mode if self.rewriter is not None else "json"
        self.rewriter = _Replace(self._unreadable, mode, replaces_body=self.rewriter is None)

    def _filtered(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """This caller's view of a list result: only what the policy lets it call."""
        key = id_key(msg.get("id"))
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
        kind = self._list_ids.pop(id_key(msg.get("id")) or ("", ""), None) or list_kind_of(msg.get("result"))
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
        self.host.filter_failed(self.server, reason)


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
