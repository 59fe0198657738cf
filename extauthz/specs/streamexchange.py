"""A 2024-11-05 HTTP+SSE GET event stream seen through ext_proc (extauthz.specs.learn makes them).

A POST's result arrives later on its session's stream, so the Learner keeps the learn entries of
those POSTs (`Learner.expect`) and the denials to write into the stream (`Learner.inject`), keyed by
(server, session id): the stream reads both through its `StreamHost`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import MutableMapping
from typing import Any, Protocol

from extauthz.mcp.headers import MAX_SESSION_ID_CHARS, SESSION_ID
from extauthz.mcp.learnheader import IdKey, LearnEntry
from extauthz.specs.exchange import Exchange, ExchangeHost
from extauthz.specs.listfilter import View

__all__ = ["StreamHost", "StreamExchange"]


class StreamHost(ExchangeHost, Protocol):
    """What a stream reads of the Learner besides what every exchange reads."""

    @property
    def stream_pending(self) -> MutableMapping[tuple[str, str], dict[IdKey, LearnEntry]]: ...
    @property
    def stream_inject(self) -> MutableMapping[tuple[str, str], bytearray]: ...


class StreamExchange(Exchange):
    """A 2024-11-05 GET event stream: long-lived, carrying the results of requests that were
    POSTed separately. Its first event (`endpoint`) names the session; each later result is
    paired with the learn entries ext_authz left for that session (`Learner.expect`), and list
    results are filtered for the stream's caller like any other (the session is bound to it)."""

    learner: StreamHost

    def __init__(self, learner: StreamHost, server: str, caller: str, session_id: str,
                 entries: list[LearnEntry], view: View | None = None, *, failure: str | None = None) -> None:
        super().__init__(learner, server, caller, session_id, entries, view, failure=failure)

    @property
    def done(self) -> bool:
        return self.finished or self.abandoned is not None

    def _exhausted(self) -> bool:
        return False

    def _on_event(self, ev: Any) -> None:
        if ev.event == "endpoint" and ev.data and not self.session_id:
            query = urllib.parse.urlsplit(ev.text.strip()).query
            sid = urllib.parse.parse_qs(query).get("session_id", [""])[0]
            if sid and len(sid) <= MAX_SESSION_ID_CHARS and SESSION_ID.fullmatch(sid):
                self.session_id = sid
        elif ev.event == "message" and ev.data and self.session_id:
            self._handle_payload(ev.data)

    def _entry_for(self, key: IdKey) -> LearnEntry | None:
        pending = self.learner.stream_pending.get((self.server, self.session_id))
        entry = pending.pop(key, None) if pending else None
        if entry is not None:
            self.lists.expect(key, entry)
        return entry

    def take_injection(self) -> bytes:
        """Queued events for this session, if the stream is between events (never mid-event)."""
        if not self.session_id or (self._sse is not None and self._sse.buffered_bytes):
            return b""
        buf = self.learner.stream_inject.pop((self.server, self.session_id), None)
        return bytes(buf) if buf else b""
