"""Every replica's decisions per actor, in Redis: the actor view (`/callers/{id}`, `extauthz
investigate`) on any replica shows what the others decided for that caller.

Written behind, never on the Check path: `add` (the decision log's tap, called where decisions are
recorded, after their answers went out) appends to a bounded queue; a writer task pipelines a
batch every `FLUSH_EVERY` seconds on the shared-state connection. Read by `read` (one caller's
stream) and `find` (which callers a session id, user session id, subject, client id or denied
decision id points at), each one round trip with a timeout; a failure raises `ActorLogUnavailable`
and the view says it is partial.

Keys (under the release prefix, every one with a TTL):
  {p}:actor:{caller}            stream of compact decision records, XADD MAXLEN ~KEEP, EX TTL
  {p}:actor-ix:{kind}:{value}   set of callers (s: MCP session, u: user session, sub, cid), EX TTL
  {p}:actor-did:{minute}        hash denied decision id -> caller, EX TTL + 60 (a client sees a
                                decision id only in a denial's error.data.decisionId)

Bound: per caller, about KEEP records of ~300 B (~80 KB) plus one index entry per distinct
session, user session, subject and client id, each for TTL after its last decision. The denial
index holds at most DENIALS_PER_MINUTE ids a minute per replica (~100 B each): ~12 MB an hour per
replica at the cap. The queue holds QUEUE_MAX records; beyond that they are dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import orjson
from redis.exceptions import RedisError

log = logging.getLogger("extauthz.shared")

KEEP = 256                    # decisions per caller kept over all replicas (read back exactly)
TTL = 3600                    # seconds a caller's stream and index entries live after its last decision
QUEUE_MAX = 20_000
BATCH = 1000
FLUSH_EVERY = 0.1
READ_TIMEOUT = 1.0
DENIALS_PER_MINUTE = 2000     # denied decision ids indexed per replica and minute
DENIALS_PER_CALLER = 100      # of them, per caller (a blocked caller's repeats stay in its stream)
MAX_VALUE = 256               # longer ids are not indexed (a session id is far shorter)
MAX_CALLERS = 50
_FIELDS = ("time", "decision_id", "server", "method", "name", "caller", "mcp_session_id", "user_session",
           "decision", "reason", "rule", "monitor", "http_method")


class ActorLogUnavailable(RuntimeError):
    """Redis did not answer: the actor view is built from this replica alone, marked partial."""


def compact(rec: dict[str, Any], replica: str) -> dict[str, Any]:
    """The decision-log record as kept in Redis: no arguments, no batch detail, detail capped."""
    out = {k: rec[k] for k in _FIELDS if k in rec}
    if rec.get("detail"):
        out["detail"] = str(rec["detail"])[:300]
    out["replica"] = replica
    return out


def caller_of(rec: dict[str, Any]) -> str:
    c = rec.get("caller")
    if not isinstance(c, dict):
        return ""
    return f"{c.get('iss', '')}|{c.get('sub', '')}|{c.get('client_id', '')}"


class ActorLog:
    """One replica's writer and reader. `shared` is its RedisShared (connection, prefix, name)."""

    def __init__(self, shared: Any, *, keep: int = KEEP, ttl: int = TTL) -> None:
        self.shared, self.keep, self.ttl = shared, keep, ttl
        self.queue: deque[dict[str, Any]] = deque()
        self.dropped = 0
        self.written = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._minute = -1
        self._denials = 0
        self._per_caller: dict[str, int] = {}

    # -- write behind ----------------------------------------------------------------------------------
    def add(self, rec: dict[str, Any]) -> None:
        """A decision recorded here (never raises, never waits)."""
        if not caller_of(rec):
            return                       # anonymous or unreadable: no actor to put it on
        if len(self.queue) >= QUEUE_MAX:
            self.dropped += 1
            return
        self.queue.append(rec)
        if len(self.queue) >= BATCH:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop, writing what is queued first (bounded: a stopping replica does not wait on Redis)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2)
        try:
            while self.queue and self.shared.connected:
                if not await asyncio.wait_for(self.flush(), 2):
                    break
        except asyncio.TimeoutError:
            pass

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), FLUSH_EVERY)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            while self.queue and self.shared.connected:
                if not await self.flush():
                    break

    async def flush(self) -> bool:
        """Write one batch; on failure it is put back (bounded) for after the reconnect."""
        batch = [self.queue.popleft() for _ in range(min(len(self.queue), BATCH))]
        if not batch:
            return True
        try:
            async with self.shared.r.pipeline(transaction=False) as pipe:
                self._pipeline(pipe, batch)
                await pipe.execute()
            self.written += len(batch)
            return True
        except (RedisError, OSError) as e:
            room = QUEUE_MAX - len(self.queue)
            self.queue.extendleft(reversed(batch[:max(0, room)]))
            self.dropped += max(0, len(batch) - room)
            log.warning("actor log write failed: %s", e)
            return False

    def _pipeline(self, pipe: Any, batch: list[dict[str, Any]]) -> None:
        replica = self.shared.replica
        streams: set[str] = set()
        index: dict[str, set[str]] = {}
        denials: dict[str, dict[str, str]] = {}
        for rec in batch:
            caller = caller_of(rec)
            key = self.key("actor", caller)
            pipe.xadd(key, {"r": orjson.dumps(compact(rec, replica))}, maxlen=self.keep, approximate=True)
            streams.add(key)
            c = rec["caller"]
            for kind, value in (("s", rec.get("mcp_session_id")), ("u", rec.get("user_session")),
                                ("sub", c.get("sub")), ("cid", c.get("client_id"))):
                if value and isinstance(value, str) and len(value) <= MAX_VALUE:
                    index.setdefault(self.key("actor-ix", kind, value), set()).add(caller)
            did = str(rec.get("decision_id", ""))
            if rec.get("decision") == "deny" and len(did) == 32 and self._may_index(caller):
                try:
                    minute = int(did[:12], 16) // 60000
                except ValueError:
                    continue
                denials.setdefault(self.key("actor-did", str(minute)), {})[did] = caller
        for key in streams:
            pipe.expire(key, self.ttl)
        for key, callers in index.items():
            pipe.sadd(key, *callers)
            pipe.expire(key, self.ttl)
        for key, fields in denials.items():
            pipe.hset(key, mapping=fields)
            pipe.expire(key, self.ttl + 60)

    def _may_index(self, caller: str) -> bool:
        minute = int(time.time() // 60)
        if minute != self._minute:
            self._minute, self._denials, self._per_caller = minute, 0, {}
        n = self._per_caller.get(caller, 0)
        if self._denials >= DENIALS_PER_MINUTE or n >= DENIALS_PER_CALLER:
            return False
        self._denials += 1
        self._per_caller[caller] = n + 1
        return True

    # -- read --------------------------------------------------------------------------------------------
    async def read(self, caller: str) -> list[dict[str, Any]]:
        """The newest `keep` decisions of `caller` over every replica, oldest first."""
        got = await self._call(self.shared.r.xrevrange(self.key("actor", caller), count=self.keep))
        out = []
        for _eid, fields in reversed(got or []):
            try:
                out.append(orjson.loads(fields[b"r"]))
            except (KeyError, orjson.JSONDecodeError):
                continue
        return out

    async def find(self, query: str) -> list[tuple[str, str, str]]:
        """(caller, via, decision id) for every caller `query` names in the shared log."""
        q = query.strip()
        if not q or len(q) > MAX_VALUE:
            return []
        async with self.shared.r.pipeline(transaction=False) as pipe:
            if len(q) == 32:
                try:
                    minute = int(q[:12], 16) // 60000
                    pipe.hget(self.key("actor-did", str(minute)), q)
                except ValueError:
                    pipe.echo("")
            else:
                pipe.echo("")
            pipe.exists(self.key("actor", q))
            for kind in ("s", "u", "sub", "cid"):
                pipe.srandmember(self.key("actor-ix", kind, q), MAX_CALLERS)
            got = await self._call(pipe.execute())
        did, exists, *sets = got
        hits: list[tuple[str, str, str]] = []
        if did:
            hits.append((_s(did), "decision", q))
        if exists:
            hits.append((q, "caller", ""))
        for via, members in zip(("session", "userSession", "subject", "client"), sets):
            hits.extend((_s(m), via, "") for m in sorted(members or ()))
        return hits

    async def _call(self, aw: Any) -> Any:
        if not self.shared.connected:
            if asyncio.iscoroutine(aw):
                aw.close()              # never awaited: no "coroutine was never awaited" warning
            raise ActorLogUnavailable("Redis is not connected")
        try:
            return await asyncio.wait_for(aw, READ_TIMEOUT)
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            raise ActorLogUnavailable(str(e) or type(e).__name__) from e

    def key(self, *parts: str) -> str:
        return ":".join((self.shared.p, *parts))

    def status(self) -> dict[str, Any]:
        return {"queued": len(self.queue), "written": self.written, "dropped": self.dropped, "keep": self.keep}


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)
