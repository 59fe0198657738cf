"""MCP session -> caller binding. A session id is a bearer secret issued by the server; if a
different caller presents it, that is a hijack attempt whatever the server would have said."""

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


def valid_session_id(value: str) -> bool:
    return _SESSION_ID.match(value) is not None


class SessionRegistry:
    """Bounded, idle-expiring map of session id -> owner. Oldest-idle sessions are evicted first."""

    def __init__(self, max_sessions: int = 100_000, idle_ttl: float = 3600.0) -> None:
        self._by_id: OrderedDict[str, SessionInfo] = OrderedDict()
        self.max_sessions = max_sessions
        self.idle_ttl = idle_ttl
        # (op, payload) for bindings other replicas must know; set by the workers bus.
        self.on_change: Callable[[str, dict[str, Any]], None] | None = None

    def __len__(self) -> int:
        return len(self._by_id)

    def owner_ok(self, session_id: str, caller: str) -> bool:
        """True unless the session is bound to somebody else (expired sessions are forgotten)."""
        info = self._by_id.get(session_id)
        if info is None:
            return True
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

    def touch(self, session_id: str, caller: str, server: str, *, user_session: str = "",
              client_id: str = "", protocol_version: str = "", replicated: bool = False) -> SessionInfo:
        now = time.monotonic()
        info = self._by_id.get(session_id)
        if info is None or info.caller != caller:
            info = SessionInfo(session_id, caller, server, user_session, client_id, protocol_version, now, now)
            self._by_id[session_id] = info
            while len(self._by_id) > self.max_sessions:
                self._by_id.popitem(last=False)
            if self.on_change is not None and not replicated:
                self.on_change("session", {"sid": session_id, "caller": caller, "server": server,
                                           "user_session": user_session, "client_id": client_id,
                                           "protocol_version": protocol_version})
        else:
            self._by_id.move_to_end(session_id)
        info.last_seen = now
        info.requests += 1
        if protocol_version:
            info.protocol_version = protocol_version
        return info

    def end(self, session_id: str, *, replicated: bool = False) -> None:
        if self._by_id.pop(session_id, None) is not None and self.on_change is not None and not replicated:
            self.on_change("end", {"sid": session_id})

    def sweep(self) -> int:
        """Drop idle sessions; called periodically, off the hot path."""
        cutoff = time.monotonic() - self.idle_ttl
        dead = [k for k, v in self._by_id.items() if v.last_seen < cutoff]
        for k in dead:
            del self._by_id[k]
        return len(dead)

    def snapshot(self, limit: int = 1000) -> list[SessionInfo]:
        return list(self._by_id.values())[-limit:]
