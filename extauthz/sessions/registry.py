"""MCP session -> caller binding. A session id is a bearer secret issued by the server; if a
different caller presents it, that is a hijack attempt whatever the server would have said.

A binding ends only when the server confirmed the session ended (its answer to the owner's DELETE,
seen over ext_proc: `end`), or when it has been idle past `idle_ttl`. It is never evicted to make
room: with `max_sessions` live bindings, a new claim is refused (`has_room`), because evicting a
live binding would hand its session id to whoever presents it next.

An id whose end the server confirmed is remembered (for the idle TTL, bounded) and never bound
again: it is dead at the server, which answers any reuse itself (404), and a stale client of its
former owner must not find it claimed by somebody else."""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

_SESSION_ID = re.compile(r"^[\x21-\x7e]{1,256}$")   # the spec: visible ASCII only


@dataclass(slots=True)
class SessionInfo:
    session_id: str
    caller: str
    server: str
    user_session: str
    client_id: str
    protocol_version: str
    first_seen: float
    last_seen: float
    requests: int = 0
    path: str = ""          # the endpoint the session lives at (first request path, without query)


def valid_session_id(value: str) -> bool:
    return _SESSION_ID.match(value) is not None


class SessionRegistry:
    """Bounded, idle-expiring map of session id -> owner, least recently used first."""

    def __init__(self, max_sessions: int = 100_000, idle_ttl: float = 3600.0) -> None:
        self._by_id: OrderedDict[str, SessionInfo] = OrderedDict()
        self.max_sessions = max_sessions
        self.idle_ttl = idle_ttl
        self.refused = 0        # claims refused because max_sessions live bindings exist (a metric)
        self._ended: OrderedDict[str, float] = OrderedDict()    # session id -> when its end was confirmed
        # (op, payload) for bindings other replicas must know; set by the workers bus.
        self.on_change: Callable[[str, dict[str, Any]], None] | None = None

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, session_id: str) -> SessionInfo | None:
        return self._by_id.get(session_id)

    def owner_ok(self, session_id: str, caller: str) -> bool:
        """True unless the session is bound to somebody else (expired sessions are forgotten)."""
        info = self._by_id.get(session_id)
        if info is None:
            return True
        if time.monotonic() - info.last_seen > self.idle_ttl:
            del self._by_id[session_id]
            return True
        return info.caller == caller

    def has_room(self, session_id: str) -> bool:
        """May `session_id` be bound now? Always when it is bound already; otherwise only below
        `max_sessions` after dropping bindings idle past the TTL (live ones are never dropped)."""
        if session_id in self._by_id or len(self._by_id) < self.max_sessions or self.ended(session_id):
            return True
        self._expire(time.monotonic(), limit=64)
        if len(self._by_id) < self.max_sessions:
            return True
        self.refused += 1
        return False

    def touch(self, session_id: str, caller: str, server: str, *, user_session: str = "",
              client_id: str = "", protocol_version: str = "", path: str = "",
              replicated: bool = False) -> SessionInfo | None:
        """Bind (or refresh) `session_id` for `caller`; None when a new binding has no room. A
        binding another worker made (`replicated`) is always kept: that worker had room for it."""
        now = time.monotonic()
        info = self._by_id.get(session_id)
        if info is None or info.caller != caller:
            if info is None and not replicated and (self.ended(session_id) or not self.has_room(session_id)):
                return None
            info = SessionInfo(session_id, caller, server, user_session, client_id, protocol_version, now, now,
                               path=path)
            self._by_id[session_id] = info
            self._by_id.move_to_end(session_id)
            if self.on_change is not None and not replicated:
                self.on_change("session", {"sid": session_id, "caller": caller, "server": server,
                                           "user_session": user_session, "client_id": client_id,
                                           "protocol_version": protocol_version, "path": path})
        else:
            self._by_id.move_to_end(session_id)
            if not info.path and path:
                info.path = path            # bound from an initialize response: first use names it
        info.last_seen = now
        info.requests += 1
        if protocol_version:
            info.protocol_version = protocol_version
        return info

    def end(self, session_id: str, *, replicated: bool = False) -> SessionInfo | None:
        """The server confirmed the session is gone: forget the binding (and tell the others)."""
        info = self._by_id.pop(session_id, None)
        self._ended[session_id] = time.monotonic()
        self._ended.move_to_end(session_id)
        while len(self._ended) > self.max_sessions:
            self._ended.popitem(last=False)     # forgetting a dead id only lets it be bound again
        if info is not None and self.on_change is not None and not replicated:
            self.on_change("end", {"sid": session_id, "server": info.server})
        return info

    def ended(self, session_id: str) -> bool:
        """The server confirmed this session's end within the idle TTL."""
        at = self._ended.get(session_id)
        if at is None:
            return False
        if time.monotonic() - at > self.idle_ttl:
            del self._ended[session_id]
            return False
        return True

    def ended_ids(self) -> list[str]:
        """Ids whose end was confirmed within the TTL (a restarted worker's catch-up)."""
        return [sid for sid in list(self._ended) if self.ended(sid)]

    def _expire(self, now: float, limit: int | None = None) -> int:
        """Drop bindings idle past the TTL, least recently used first (at most `limit`)."""
        cutoff = now - self.idle_ttl
        dead = 0
        while self._by_id and (limit is None or dead < limit):
            sid, info = next(iter(self._by_id.items()))
            if info.last_seen >= cutoff:
                break
            del self._by_id[sid]
            dead += 1
        return dead

    def sweep(self) -> int:
        """Drop idle sessions (and old ends); called periodically, off the hot path."""
        now = time.monotonic()
        while self._ended and now - next(iter(self._ended.values())) > self.idle_ttl:
            self._ended.popitem(last=False)
        return self._expire(now)

    def snapshot(self, limit: int = 1000) -> list[SessionInfo]:
        return list(self._by_id.values())[-limit:]
