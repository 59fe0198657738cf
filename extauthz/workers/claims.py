"""Session owners under `serve --workers N` without Redis: the supervisor is the claim authority.

A worker's copy of the session bindings is a cache. The first request of a session id a worker
holds no live binding for (never seen there, or idle there past the TTL) is not decided from that
cache: `BusClaims.claim` asks the supervisor over the bus (`{"op": "claim", "rid", ...}`), whose
`ClaimAuthority` answers with the owner (binding the id to the asker when it is free) in
`{"op": "claimed", "rid", "owner", "ended"}`, and relays a new binding to every other worker. The
supervisor handles one bus message at a time, so two workers racing for one new id get one owner.

The supervisor's copy never idles out while a worker uses the session: each worker reports the ids
it touched since its last tick (`SessionRegistry.touched_since`) and the authority refreshes them;
only the authority lets a binding expire. A binding a worker made by itself (an initialize
response's id, `op: session`) is accepted when free and corrected when the authority knows another
owner. No answer within `CLAIM_TIMEOUT` is `SharedUnavailable`: the policy's
`sessions.sharedStateDown` decides (deny by default).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from extauthz.sessions.registry import SessionRegistry
from extauthz.shared.changes import SessionBound
from extauthz.shared.readthrough import ReadThrough
from extauthz.shared.redis import SharedUnavailable

CLAIM_TIMEOUT = 2.0        # seconds a Check waits for the supervisor's answer before it is denied
MAX_WAITING = 10_000       # claims in flight per worker; beyond it a claim fails closed at once
MAX_TOUCHED = 100_000      # session ids one worker reports per tick

Send = Callable[[str, dict[str, Any]], None]


class BusClaims:
    """A worker's `App.shared`: the interface the Check path uses for Redis, over the bus."""

    remote = True
    readthrough: ReadThrough | None = None      # reading behind a lagging feed is Redis's (App._lagging)

    def __init__(self, send: Send, timeout: float = CLAIM_TIMEOUT) -> None:
        self._send = send
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[tuple[str, bool]]] = {}
        self.loaded = asyncio.Event()      # set when the supervisor's catch-up has been applied
        self.connected = True
        self.claims = 0
        self.claims_denied = 0             # counted by App.confirm_claim when a claim fails closed

    def publish(self, op: str, payload: dict[str, Any]) -> None:
        self._send(op, payload)

    async def claim(self, sid: str, caller: str, server: str, meta: dict[str, str]) -> tuple[str, bool]:
        """(owner of `sid`, whether it has ended), as the supervisor says. Raises SharedUnavailable."""
        if not self.connected:
            raise SharedUnavailable("the supervisor's bus is closed")
        if len(self._waiting) >= MAX_WAITING:
            raise SharedUnavailable(f"{MAX_WAITING} session claims already wait for the supervisor")
        rid = next(self._ids)
        fut: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            self._send("claim", {"rid": rid, "sid": sid, "caller": caller, "server": server,
                                 "user_session": meta.get("u", ""), "client_id": meta.get("i", ""),
                                 "protocol_version": meta.get("v", "")})
            owner, ended = await asyncio.wait_for(fut, self.timeout)
        except TimeoutError as e:
            raise SharedUnavailable(f"the supervisor did not answer within {self.timeout:g}s") from e
        finally:
            self._waiting.pop(rid, None)
        self.claims += 1
        return owner, ended

    def on_answer(self, msg: dict[str, Any]) -> None:
        fut = self._waiting.get(msg.get("rid"))  # type: ignore[arg-type]
        if fut is None or fut.done():
            return                          # late (timed out) or not ours
        if msg.get("error") or not isinstance(msg.get("owner"), str):
            fut.set_exception(SharedUnavailable(str(msg.get("error") or "malformed claim answer")))
        else:
            fut.set_result((msg["owner"], bool(msg.get("ended"))))

    def lost(self) -> None:
        """The bus closed: every waiting claim fails closed now, and so does every later one."""
        self.connected = False
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(SharedUnavailable("the supervisor's bus closed"))

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self.lost()

    def status(self) -> dict[str, Any]:
        return {"backend": "workers-bus", "connected": self.connected, "loaded": self.loaded.is_set(),
                "lagSeconds": 0.0, "queued": len(self._waiting), "writesDropped": 0,
                "claimsDenied": self.claims_denied}


class ClaimAuthority:
    """The supervisor's side: its `SessionRegistry` decides who owns a session id."""

    def __init__(self, sessions: SessionRegistry) -> None:
        self.sessions = sessions
        self.claims = 0
        self.corrected = 0      # worker-made bindings refused because another caller owns the id

    def claim(self, msg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(the answer to the asking worker, the new binding for every other worker or None)."""
        rid, sid, caller, server = msg.get("rid"), msg.get("sid"), msg.get("caller"), msg.get("server")
        if not (isinstance(sid, str) and isinstance(caller, str) and caller and isinstance(server, str)):
            return {"op": "claimed", "rid": rid, "error": "malformed claim"}, None
        self.claims += 1
        former = self.sessions.ended_owner(sid)
        if former is not None:
            return {"op": "claimed", "rid": rid, "owner": former, "ended": True}, None
        owner = self.sessions.owner(sid)
        if owner is not None:
            self.sessions.keep_alive((sid,))
            return {"op": "claimed", "rid": rid, "owner": owner, "ended": False}, None
        meta = {k: str(msg.get(k) or "") for k in ("user_session", "client_id", "protocol_version")}
        if self.sessions.touch(sid, caller, server, user_session=meta["user_session"], client_id=meta["client_id"],
                               protocol_version=meta["protocol_version"]) is None:
            return {"op": "claimed", "rid": rid, "error": "sessions.maxSessions live sessions are bound"}, None
        binding = {"op": "session", "sid": sid, "caller": caller, "server": server, **meta}
        return {"op": "claimed", "rid": rid, "owner": caller, "ended": False}, binding

    def offer(self, msg: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """A binding a worker made itself: (relay it to the others?, the correction for that worker).
        Kept when the id is free or already the same caller's; otherwise the authority's owner
        (or the end it confirmed) goes back to the worker, and nothing is relayed."""
        sid, caller = msg.get("sid"), msg.get("caller")
        if not (isinstance(sid, str) and isinstance(caller, str)):
            return False, None
        former = self.sessions.ended_owner(sid)
        if former is not None:
            self.corrected += 1
            return False, {"op": "end", "sid": sid, "caller": former}
        owner = self.sessions.owner(sid)
        if owner is not None and owner != caller:
            self.corrected += 1
            info = self.sessions.get(sid)
            assert info is not None
            return False, {"op": "session", "sid": sid, "caller": owner, "server": info.server,
                           "user_session": info.user_session, "client_id": info.client_id,
                           "protocol_version": info.protocol_version, "path": info.path}
        self.sessions.apply(SessionBound(     # the worker had room for it
            sid, caller, str(msg.get("server") or ""), user_session=str(msg.get("user_session") or ""),
            client_id=str(msg.get("client_id") or ""), protocol_version=str(msg.get("protocol_version") or ""),
            path=str(msg.get("path") or "")))
        return owner is None, None

    def keep_alive(self, touched: Any) -> None:
        """Session ids a worker used since its last tick: the authority's copy stays alive."""
        if isinstance(touched, list):
            self.sessions.keep_alive(touched[:MAX_TOUCHED])
