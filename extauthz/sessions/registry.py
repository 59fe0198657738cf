"""MCP session -> caller binding. A session id is a bearer secret issued by the server; if a
different caller presents it, that is a hijack attempt whatever the server would have said.

A binding ends only when the server confirmed the session ended (its answer to the owner's DELETE,
seen over ext_proc: `end`), or when it has been idle past `idle_ttl`. It is never evicted to make
room: with `max_sessions` live bindings, a new claim is refused (`has_room`), because evicting a
live binding would hand its session id to whoever presents it next.

An id whose end the server confirmed stays reserved to its former owner (for the idle TTL,
bounded, outside `max_sessions`) and is never bound again: the former owner's stale reuse reaches
the server, which answers it (404); anybody else's is still `session_hijack`, so even a server that
confirmed an end wrongly never hands a live session to another caller."""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from extauthz.shared.changes import SessionBound, SessionEnded, Sink, emit

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


class SessionOwners(Protocol):
    """The seam: who owns each session id, as the Check path and the transports use it."""
    on_change: Sink | None

    def owner(self, session_id: str) -> str | None: ...
    def touch(self, session_id: str, caller: str, server: str, *, user_session: str = "",
              client_id: str = "", protocol_version: str = "", path: str = "") -> SessionInfo | None: ...
    def end(self, session_id: str, *, caller: str = "") -> SessionInfo | None: ...
    def apply(self, change: SessionBound | SessionEnded) -> None: ...


class SessionRegistry:
    """Bounded, idle-expiring map of session id -> owner, least recently used first."""

    def __init__(self, max_sessions: int = 100_000, idle_ttl: float = 3600.0) -> None:
        self._by_id: OrderedDict[str, SessionInfo] = OrderedDict()
        self.max_sessions = max_sessions
        self.idle_ttl = idle_ttl
        self.refused = 0        # claims refused because max_sessions live bindings exist (a metric)
        # session id -> (when its end was confirmed, its former owner; None: nobody's)
        self._ended: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        # (op, payload) for bindings other replicas must know; set by the workers bus.
        self.on_change: Sink | None = None

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, session_id: str) -> SessionInfo | None:
        return self._by_id.get(session_id)

    def owner_ok(self, session_id: str, caller: str) -> bool:
        """True unless the session is bound to somebody else (expired sessions are forgotten)."""
        info = self._by_id.get(session_id)
        if info is None:
            gone = self._ended_entry(session_id)
            return gone is None or gone[1] == caller
        if time.monotonic() - info.last_seen > self.idle_ttl:
            del self._by_id[session_id]
            return True
        return info.caller == caller

    def owner(self, session_id: str) -> str | None:
        """Who this replica knows to own the session, or None (never seen here, or idle here past
        the TTL: with shared state that is a question for the shared store, not a free session)."""
        info = self._by_id.get(session_id)
        if info is None:
            return None
        if time.monotonic() - info.last_seen > self.idle_ttl:
            del self._by_id[session_id]
            return None
        return info.caller

    def touched_since(self, since: float, limit: int = 100_000) -> list[str]:
        """Session ids used since `since` (monotonic), newest first: the recently touched sit at
        the end of the map, so this costs what was touched, not every session."""
        out: list[str] = []
        for info in reversed(self._by_id.values()):
            if info.last_seen < since or len(out) >= limit:
                break
            out.append(info.session_id)
        return out

    def keep_alive(self, session_ids: Any) -> int:
        """Refresh the bindings of `session_ids` (used elsewhere: the --workers claim authority
        hears of every use, so its copy never idles out while a worker still uses the session)."""
        now, n = time.monotonic(), 0
        for sid in session_ids:
            info = self._by_id.get(sid) if isinstance(sid, str) else None
            if info is not None and now - info.last_seen <= self.idle_ttl:
                info.last_seen = now
                self._by_id.move_to_end(sid)
                n += 1
        return n

    def ended_owner(self, session_id: str) -> str | None:
        """The former owner of an id whose end was confirmed within the TTL ("" for nobody's), or
        None when it has not ended."""
        gone = self._ended_entry(session_id)
        return None if gone is None else (gone[1] or "")

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
              client_id: str = "", protocol_version: str = "", path: str = "") -> SessionInfo | None:
        """Bind (or refresh) `session_id` for `caller`; None when a new binding has no room or the
        id has ended. A new binding is published."""
        return self._bind(session_id, caller, server, user_session, client_id, protocol_version, path, relayed=False)

    def apply(self, change: SessionBound | SessionEnded) -> None:
        """A binding another process made is always kept (it had room, the claim authority or Redis
        confirmed it); an end is applied as sent. Neither is published again."""
        if isinstance(change, SessionBound):
            self._bind(change.sid, change.caller, change.server, change.user_session, change.client_id,
                       change.protocol_version, change.path, relayed=True)
        elif isinstance(change, SessionEnded):
            self._end(change.sid, change.caller, relayed=True)
        else:
            raise TypeError(f"not a session change: {change!r}")

    def _bind(self, session_id: str, caller: str, server: str, user_session: str, client_id: str,
              protocol_version: str, path: str, *, relayed: bool) -> SessionInfo | None:
        now = time.monotonic()
        info = self._by_id.get(session_id)
        if info is None or info.caller != caller:
            gone = self._ended_entry(session_id) if info is None else None
            if gone is not None and not relayed:
                if gone[1] == caller:       # its former owner still uses it: keep it reserved
                    self._ended[session_id] = (now, caller)
                    self._ended.move_to_end(session_id)
                return None
            if info is None and not relayed and not self.has_room(session_id):
                return None
            info = SessionInfo(session_id, caller, server, user_session, client_id, protocol_version, now, now,
                               path=path)
            self._by_id[session_id] = info
            self._by_id.move_to_end(session_id)
            if not relayed:
                emit(self.on_change, SessionBound(session_id, caller, server, user_session, client_id,
                                                  protocol_version, path))
        else:
            self._by_id.move_to_end(session_id)
            if not info.path and path:
                info.path = path            # bound from an initialize response: first use names it
        info.last_seen = now
        info.requests += 1
        if protocol_version:
            info.protocol_version = protocol_version
        return info

    def end(self, session_id: str, *, caller: str = "") -> SessionInfo | None:
        """The server confirmed the session is gone: forget the binding, keep the id reserved to
        its former owner (`caller` when this replica never saw the binding), tell the others."""
        return self._end(session_id, caller, relayed=False)

    def _end(self, session_id: str, caller: str, *, relayed: bool) -> SessionInfo | None:
        info = self._by_id.pop(session_id, None)
        owner = info.caller if info is not None else (caller or None)
        self._ended[session_id] = (time.monotonic(), owner)
        self._ended.move_to_end(session_id)
        while len(self._ended) > self.max_sessions:
            self._ended.popitem(last=False)     # the oldest dead id: unreserved (the server still says 404)
        if info is not None and not relayed:
            emit(self.on_change, SessionEnded(session_id, owner or "", info.server))
        return info

    def _ended_entry(self, session_id: str) -> tuple[float, str | None] | None:
        hit = self._ended.get(session_id)
        if hit is not None and time.monotonic() - hit[0] > self.idle_ttl:
            del self._ended[session_id]
            return None
        return hit

    def ended(self, session_id: str) -> bool:
        """The server confirmed this session's end within the idle TTL."""
        return self._ended_entry(session_id) is not None

    def ended_ids(self) -> list[tuple[str, str]]:
        """(id, former owner) of ends confirmed within the TTL (a restarted worker's catch-up)."""
        return [(sid, hit[1] or "") for sid in list(self._ended) if (hit := self._ended_entry(sid)) is not None]

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
        while self._ended and now - next(iter(self._ended.values()))[0] > self.idle_ttl:
            self._ended.popitem(last=False)
        return self._expire(now)

    def snapshot(self, limit: int = 1000) -> list[SessionInfo]:
        return list(self._by_id.values())[-limit:]
