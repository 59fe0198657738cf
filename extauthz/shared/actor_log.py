"""Every replica's decisions per actor, in Redis: the actor view (`/callers/{id}`, `extauthz
investigate`) on any replica shows what the others decided for that caller.

Written behind, never on the Check path: `add` (the decision log's tap, called where decisions are
recorded, after their answers went out) appends to a bounded queue; a writer task sends a batch
every `FLUSH_EVERY` seconds on the shared-state connection, as one Lua call (`_WRITE`). Read by
`read` (one caller's stream) and `find` (which callers a session id, user session id, subject,
client id or denied decision id points at), each one round trip with a timeout; a failure raises
`ActorLogUnavailable` and the view says it is partial.

Keys (under the release prefix, every one with a TTL):
  {p}:actor:{caller}            stream of compact decision records, XADD MAXLEN ~KEEP, EX TTL
  {p}:actor-ix:{kind}:{value}   set of callers (s: MCP session, u: user session, sub, cid), EX TTL
  {p}:actor-did:{minute}        hash denied decision id -> caller, EX TTL + 60 (a client sees a
                                decision id only in a denial's error.data.decisionId)
  {p}:actor-sec:{second}:{proc} set of callers a process decided for that second, EX TTL + 60:
                                any other decision id (the upstream's x-mcp-decision-id) is
                                looked for in those callers' streams around its time, by a script

Bound: per caller, about KEEP records of ~400 B (~100 KB, bench/actor_page.py) plus one index
entry per distinct session, user session, subject and client id, each for TTL after its last
decision. The denial index holds at most DENIALS_PER_MINUTE ids a minute per replica (~100 B
each): ~12 MB an hour per replica at the cap. The queue holds QUEUE_MAX records; beyond that
they are dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import orjson
from redis.exceptions import RedisError, ResponseError

log = logging.getLogger("extauthz.shared")

KEEP = 256                    # decisions per caller kept over all replicas (the newest written)
TTL = 3600                    # seconds a caller's stream and index entries live after its last decision
QUEUE_MAX = 20_000
BATCH = 250                   # records per script call: Redis runs it in ~1 ms, claims wait no longer
FLUSH_EVERY = 0.1
READ_TIMEOUT = 1.0
DENIALS_PER_MINUTE = 2000     # denied decision ids indexed per replica and minute
DENIALS_PER_CALLER = 100      # of them, per caller (a blocked caller's repeats stay in its stream)
MAX_VALUE = 256               # longer ids are not indexed (a session id is far shorter)
MAX_CALLERS = 50
SCAN_CALLERS = 200            # callers of one process and second whose streams an id is looked for in
LATE_COUNT = 64
SCAN_CHUNK = 20
WRITTEN_WITHIN = 15_000       # ms after its decision a record is in Redis (write-behind; not after an outage)
_FIELDS = ("time", "decision_id", "server", "method", "name", "caller", "mcp_session_id", "user_session",
           "decision", "reason", "rule", "monitor", "http_method")


# One call per batch: a pipeline of ~6 commands per record cost the replica ~37 us of CPU per
# decision in redis-py (bench/actor_page.py); one argument decoded by Redis costs a few.
_WRITE = """
local p, keep, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local b = cjson.decode(ARGV[4])
local streams, dids = {}, {}
for _, e in ipairs(b.r) do
  local k = p .. ':actor:' .. e[1]
  redis.call('XADD', k, 'MAXLEN', '~', keep, '*', 'd', e[3], 'r', e[2])
  streams[k] = true
end
for k in pairs(streams) do redis.call('EXPIRE', k, ttl) end
for _, e in ipairs(b.i) do
  local k = p .. ':actor-ix:' .. e[1]
  redis.call('SADD', k, e[2])
  redis.call('EXPIRE', k, ttl)
end
for _, e in ipairs(b.d) do
  local k = p .. ':actor-did:' .. e[1]
  redis.call('HSET', k, e[2], e[3])
  dids[k] = true
end
for k in pairs(dids) do redis.call('EXPIRE', k, ttl + 60) end
for _, e in ipairs(b.m) do
  local k = p .. ':actor-sec:' .. e[1]
  redis.call('SADD', k, e[2])
  redis.call('EXPIRE', k, ttl + 60)
end
return 1
"""

# The caller of a decision id among some callers (ARGV[6..]): their streams read from 1 s before
# the decision to 2 s after (its record is written behind within about a second; replica and
# Redis clocks agree, NTP), then the next WRITTEN_WITHIN ms, LATE_COUNT entries each. Called for
# SCAN_CHUNK callers at a time, so Redis serves claims between two calls (bench/actor_page.py).
_FIND_ID = """
local p, ms, did, late, count = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local windows = {{math.max(0, ms - 1000), ms + 2000, 1000000}, {ms + 2001, ms + late, count}}
for _, w in ipairs(windows) do
  for i = 6, #ARGV do
    for _, e in ipairs(redis.call('XRANGE', p .. ':actor:' .. ARGV[i], w[1], w[2], 'COUNT', w[3])) do
      if e[2][2] == did then return ARGV[i] end
    end
  end
end
return false
"""


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
        self.inflight = 0             # records of the batch being written
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
        except TimeoutError:
            pass

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), FLUSH_EVERY)
            except TimeoutError:
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
        self.inflight = len(batch)
        try:
            await self.shared.r.eval(_WRITE, 0, self.shared.p, self.keep, self.ttl, self._payload(batch))
            self.written += len(batch)
            return True
        except ResponseError as e:
            # Redis answered (a script error, BUSY, LOADING): not put back, retrying could stall the log
            self.dropped += len(batch)
            log.warning("actor log batch of %d dropped: %s", len(batch), e)
            return True
        except (RedisError, OSError) as e:
            room = QUEUE_MAX - len(self.queue)
            self.queue.extendleft(reversed(batch[:max(0, room)]))
            self.dropped += max(0, len(batch) - room)
            log.warning("actor log write failed: %s", e)
            return False
        finally:
            self.inflight = 0

    def _payload(self, batch: list[dict[str, Any]]) -> bytes:
        """The batch as one argument of `_WRITE`: records [caller, JSON], index entries [part,
        caller] once each, denials [minute, decision id, caller]."""
        replica = self.shared.replica
        recs: list[list[str]] = []
        index: dict[tuple[str, str], None] = {}
        denials: list[list[str]] = []
        seconds: dict[tuple[str, str], None] = {}
        for rec in batch:
            caller = caller_of(rec)
            c = rec["caller"]
            # (JSON already: the decision log wrote this record before handing it over)
            recs.append([caller, orjson.dumps(compact(rec, replica)).decode(), str(rec.get("decision_id", ""))])
            for kind, value in (("s", rec.get("mcp_session_id")), ("u", rec.get("user_session")),
                                ("sub", c.get("sub")), ("cid", c.get("client_id"))):
                if value and isinstance(value, str) and len(value) <= MAX_VALUE:
                    index[(f"{kind}:{value}", caller)] = None
            did = str(rec.get("decision_id", ""))
            minute = _minute(did)
            if minute:
                seconds[(f"{int(did[:12], 16) // 1000}:{did[12:24]}", caller)] = None
                if rec.get("decision") == "deny" and self._may_index(caller):
                    denials.append([minute, did, caller])
        return orjson.dumps({"r": recs, "i": [list(k) for k in index], "d": denials,
                             "m": [list(k) for k in seconds]})

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
        minute = _minute(q)
        async with self.shared.r.pipeline(transaction=False) as pipe:
            if minute:
                pipe.hget(self.key("actor-did", minute), q)
            else:
                pipe.echo("")
            pipe.exists(self.key("actor", q))
            for kind in ("s", "u", "sub", "cid"):
                pipe.srandmember(self.key("actor-ix", kind, q), MAX_CALLERS)
            got = await self._call(pipe.execute())
        did, exists, *sets = got
        if minute and not did:      # not a denial indexed: any decision, in its minute's streams
            did = await self._find_id(q)
        hits: list[tuple[str, str, str]] = []
        if did:
            hits.append((_s(did), "decision", q))
        if exists:
            hits.append((q, "caller", ""))
        for via, members in zip(("session", "userSession", "subject", "client"), sets, strict=False):
            hits.extend((_s(m), via, "") for m in sorted(members or ()))
        return hits

    async def _find_id(self, did: str) -> str:
        """The caller of any decision id: among the callers the process that made it (the id's
        middle part) served in its second (at most SCAN_CALLERS)."""
        ms = int(did[:12], 16)
        callers = [_s(c) for c in await self._call(self.shared.r.srandmember(
            self.key("actor-sec", str(ms // 1000), did[12:24]), SCAN_CALLERS)) or ()]
        for i in range(0, len(callers), SCAN_CHUNK):
            found = await self._call(self.shared.r.eval(_FIND_ID, 0, self.shared.p, ms, did, WRITTEN_WITHIN,
                                                        LATE_COUNT, *callers[i:i + SCAN_CHUNK]))
            if found:
                return _s(found)
        return ""

    async def _call(self, aw: Any) -> Any:
        if not self.shared.connected:
            if asyncio.iscoroutine(aw):
                aw.close()              # never awaited: no "coroutine was never awaited" warning
            raise ActorLogUnavailable("Redis is not connected")
        try:
            return await asyncio.wait_for(aw, READ_TIMEOUT)
        except (TimeoutError, RedisError, OSError) as e:
            raise ActorLogUnavailable(str(e) or type(e).__name__) from e

    def key(self, *parts: str) -> str:
        return ":".join((self.shared.p, *parts))

    @property
    def pending(self) -> int:
        """Records not yet in Redis (queued or being written)."""
        return len(self.queue) + self.inflight

    def status(self) -> dict[str, Any]:
        return {"queued": len(self.queue), "written": self.written, "dropped": self.dropped, "keep": self.keep}


def _minute(did: str) -> str:
    """The minute a decision id was made in ("" when it is not one): its first 12 hex are ms."""
    if len(did) != 32:
        return ""
    try:
        int(did, 16)
    except ValueError:
        return ""
    return str(int(did[:12], 16) // 60000)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)
