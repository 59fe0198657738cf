"""Shared state on Redis: one truth for every replica, with the Check path kept local.

What a decision cannot do without waits on Redis: the first claim of a session id this replica has
never seen (`claim`: one Lua round trip, atomic first-claim-wins, the idle TTL as expiry). All else
is written behind (`publish` queues, a writer task pipelines) and read ahead (a reader task follows
the change feed, a Redis Stream resumed by id, so a replica that was disconnected misses nothing
the stream still holds). Durable keys hold what a new replica must load before it is ready:
spec snapshots, server info, quarantines and approvals (by digest), visibility, risk scores.

Keys (all under the release prefix, all but the durable spec/approval hashes with TTLs):
  {p}:sess:{sid}          JSON owner record, PX = sessions.idleTtlSeconds, refreshed in batches
  {p}:feed                the change feed (XADD MAXLEN ~FEED_MAXLEN); also every replica's `rate`
                          records (risk counts, extauthz.risk.report: at most 4 a second, feed only)
  {p}:spec, {p}:info      hashes: learned snapshots per (server, kind, viewer), server info
  {p}:quarantine, {p}:approved   hashes: why held / the digest an operator approved
  {p}:vis:{server}|{part} hash kind -> names, EX = idle TTL
  {p}:risk:{caller}       JSON {score, at}, EX = until it would have decayed to 0
  {p}:rate:{minute}       hash c:{caller} / u:{caller} -> calls / sensitive uses that minute, EX 120 s
  {p}:epoch               present while the data set is the one replicas loaded; missing after
                          Redis restarted empty, which makes every replica republish its state
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from extauthz.risk.report import report_counts
from extauthz.shared.changes import (
    Approved,
    Change,
    InfoNoted,
    Listed,
    Quarantined,
    RateCounts,
    RiskEvent,
    RiskScore,
    SessionBound,
    SessionEnded,
    SpecLearned,
    apply_to,
    decode,
)
from extauthz.shared.config import RedisConfig
from extauthz.shared.readthrough import ReadThrough

if TYPE_CHECKING:
    from extauthz.app import App

log = logging.getLogger("extauthz.shared")

FEED_MAXLEN = 100_000          # stream entries kept (approximate trim): ~minutes of heavy learning
OUTBOX_MAX = 50_000            # writes queued while Redis is away; beyond it they are dropped, counted
READ_BATCH = 500
REFRESH_EVERY = 10.0           # seconds between batched PEXPIREs of sessions touched here
RECONNECT_BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0)
MAX_RESTORED_CALLERS = 100_000
_OWN_OPS = frozenset({"spec", "approve", "visible"})    # what a read-through must not overwrite

# First claim wins; a claim of a live session returns its owner and refreshes its expiry.
_CLAIM = """
local o = redis.call('GET', KEYS[1])
if o then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return o end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""


class SharedUnavailable(RuntimeError):
    """Redis could not answer in time: the caller falls back to the policy's sharedStateDown."""


class NoFreeSlot(TimeoutError):
    """No claim connection came free within the budget: Redis is busy, not down."""


class RedisShared:
    """One replica's (or worker's) connection to the shared state. `observer` replicas (the
    supervisor of --workers) follow the feed for their admin views but decide nothing."""

    remote = True

    def __init__(self, cfg: RedisConfig, app: App, *, observer: bool = False,
                 client: aioredis.Redis | None = None) -> None:
        self.cfg, self.app, self.observer = cfg, app, observer
        self.replica = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(3).hex()}"
        # Two clients, two pools: a burst of claims never starves the feed, the writer or the
        # liveness ping (a handful of tasks, so `r` stays small), and they never take a claim's slot.
        self.r = client or _client(cfg)
        self.rc = client or _client(cfg, claims=cfg.claim_connections)
        self.claim_slots = asyncio.Semaphore(cfg.claim_connections)
        self.p = cfg.prefix
        self.outbox: deque[tuple[str, dict[str, Any]]] = deque()
        self.inflight: list[tuple[str, dict[str, Any]]] = []    # the batch being written
        self.published: Counter[str] = Counter()    # own spec/approval/list changes per server (read-through)
        self._wake = asyncio.Event()
        self.last_id = "0-0"
        self.connected = False
        self.loaded = asyncio.Event()      # the initial state is in: only then is this replica ready
        self.lag = 0.0                     # seconds behind the newest feed entry read
        self.writes_dropped = 0
        self.claims_denied = 0
        self.claims = 0
        self.claims_waited_out = 0         # claims that found no free connection within their budget
        self.syncs = 0                     # (re)connections: 1 unless Redis went away (each one resyncs)
        self.last_refresh = time.monotonic()
        self._tasks: list[asyncio.Task[Any]] = []
        self._closed = False          # redis-py may swallow a cancellation mid-command: loops check this
        self.on_state: Callable[[bool], None] | None = None
        self.readthrough = ReadThrough(self)   # denials the feed lag may cause (App.confirm_claim)

    # -- the Check path's one wait ------------------------------------------------------------------
    async def claim(self, sid: str, caller: str, server: str, meta: dict[str, str]) -> tuple[str, bool]:
        """(owner of `sid`, whether the session has ended): `caller` if nobody held it (now bound),
        else whoever does or did (an ended id stays its former owner's for the TTL). Also brings in
        what the session was listed on other replicas. Raises SharedUnavailable."""
        ttl = int(self.app.sessions.idle_ttl * 1000)
        value = orjson.dumps({"c": caller, "s": server, **meta}).decode()
        deadline = time.monotonic() + self.cfg.timeout
        try:
            async with self.claim_slot():
                got, vis = await self._claim_trip(sid, server, value, ttl, deadline)
        except NoFreeSlot as e:
            self.claims_waited_out += 1      # this claim's failure: Redis is not down, only busy
            raise SharedUnavailable(str(e)) from e
        self.claims += 1
        rec = orjson.loads(got)
        for kind, names in (vis or {}).items():
            self.app.visibility.apply(Listed(server, sid, "", _s(kind), tuple(orjson.loads(names))))
        return str(rec["c"]), bool(rec.get("e"))

    @asynccontextmanager
    async def claim_slot(self) -> AsyncIterator[None]:
        """One of the claim pool's connections, held for the block (claims and read-throughs): at
        most claim_connections in flight, the rest wait their turn within the budget (`cfg.timeout`),
        then NoFreeSlot. The slot is given back however the block ends."""
        try:
            await asyncio.wait_for(self.claim_slots.acquire(), self.cfg.timeout)
        except TimeoutError as e:
            raise NoFreeSlot(f"no Redis connection free within {self.cfg.timeout:g}s "
                             f"({self.cfg.claim_connections} claims in flight)") from e
        try:
            yield
        finally:
            self.claim_slots.release()

    async def _claim_trip(self, sid: str, server: str, value: str, ttl: int,
                          deadline: float) -> tuple[Any, Any]:
        """The claim's round trip. A slow answer fails this claim alone: whether Redis is down is
        for a connection error or the liveness ping to say (a down marks every claim and resyncs)."""
        for attempt in (1, 2):
            left = deadline - time.monotonic()
            if left <= 0:
                raise SharedUnavailable(f"no answer from Redis within {self.cfg.timeout:g}s")
            try:
                async with self.rc.pipeline(transaction=False) as pipe:
                    # EVAL, not a registered Script: in a pipeline redis-py sends SCRIPT EXISTS first, a
                    # second round trip on every claim; Redis caches the compiled body by its SHA anyway.
                    pipe.eval(_CLAIM, 1, self._sess(sid), value, ttl)
                    pipe.hgetall(self._vis(server, "s:" + sid))
                    got, vis = await asyncio.wait_for(pipe.execute(), left)
                return got, vis
            except (TimeoutError, RedisTimeoutError) as e:
                raise SharedUnavailable(f"no answer from Redis within {self.cfg.timeout:g}s") from e
            except RedisConnectionError as e:
                # a pooled connection Redis closed when it restarted: once more on a fresh one
                # (safe: a claim that did land returns our own record the second time)
                if attempt == 2:
                    self._down(e)
                    raise SharedUnavailable(str(e) or type(e).__name__) from e
            except (RedisError, OSError) as e:
                self._down(e)
                raise SharedUnavailable(str(e) or type(e).__name__) from e
        raise AssertionError("unreachable")

    # -- write behind ----------------------------------------------------------------------------------
    def publish(self, op: str, payload: dict[str, Any]) -> None:
        """A change made here, for every other replica (never awaited: the Check path calls it)."""
        if self.observer:
            return
        if len(self.outbox) >= OUTBOX_MAX:
            self.writes_dropped += 1
            return
        self.outbox.append((op, payload))
        if op in _OWN_OPS:
            self.published[str(payload.get("server", ""))] += 1
        self._wake.set()

    async def _write(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while self.outbox:
                if not self.connected:
                    break                          # kept (bounded) for the reconnect to replay
                batch = self.inflight = [self.outbox.popleft() for _ in range(min(len(self.outbox), 256))]
                try:
                    async with self.r.pipeline(transaction=False) as pipe:
                        for op, payload in batch:
                            self._durable(pipe, _record(op, payload))
                            pipe.xadd(self._feed, {"o": self.replica, "m": orjson.dumps({"op": op, **payload})},
                                      maxlen=FEED_MAXLEN, approximate=True)
                        await pipe.execute()
                except (RedisError, OSError) as e:
                    self.outbox.extendleft(reversed(batch))     # replayed once Redis is back
                    self._down(e)
                    break
                finally:
                    self.inflight = []

    def _durable(self, pipe: Any, c: Change | None) -> None:
        """What a replica that starts later must find (the feed alone may have been trimmed)."""
        ttl = max(1, int(self.app.sessions.idle_ttl))
        if isinstance(c, SpecLearned):
            pipe.hset(self._k("spec"), _field(c.server, c.kind, c.viewer, c.source), orjson.dumps(list(c.items)))
        elif isinstance(c, InfoNoted):
            spec = self.app.specs.get(c.server)
            pipe.hset(self._k("info"), c.server, orjson.dumps(spec.info if spec is not None else c.info))
        elif isinstance(c, Quarantined):
            pipe.hset(self._k("quarantine"), _field(c.server, c.kind, c.name), c.why)
        elif isinstance(c, Approved):
            f = _field(c.server, c.kind, c.name)
            pipe.hdel(self._k("quarantine"), f)
            pipe.hset(self._k("approved"), f, c.digest)
        elif isinstance(c, SessionBound):
            meta = {"u": c.user_session, "i": c.client_id, "v": c.protocol_version}
            pipe.set(self._sess(c.sid), orjson.dumps({"c": c.caller, "s": c.server, **meta}), px=ttl * 1000, nx=True)
        elif isinstance(c, SessionEnded):   # kept, marked ended: the id stays its former owner's for the TTL
            pipe.set(self._sess(c.sid), orjson.dumps({"c": c.caller, "s": c.server, "e": 1}), px=ttl * 1000)
        elif isinstance(c, Listed):
            for part in ((f"s:{c.sid}",) if c.sid else ()) + ((f"c:{c.caller}",) if c.caller else ()):
                key = self._vis(c.server, part)
                pipe.hset(key, c.kind, orjson.dumps(list(c.names)))
                pipe.expire(key, ttl)
        elif isinstance(c, RateCounts):     # the minute's global counts, for a replica that starts mid-minute
            key = self._k("rate", str(c.minute))
            for prefix, counts in (("c:", c.calls), ("u:", c.uses)):
                for caller, n in counts.items():
                    pipe.hincrby(key, prefix + caller, int(n))
            pipe.expire(key, 120)
        elif isinstance(c, (RiskEvent, RiskScore)):
            score = self.app.risk.score(c.caller)
            if score > 0:
                decay = max(self.app.risk.decay, 1e-6)
                pipe.set(self._k("risk", c.caller), orjson.dumps({"score": score, "at": time.time()}),
                         ex=max(60, min(int(score / decay * 60) + 60, 30 * 86400)))

    # -- read ahead ------------------------------------------------------------------------------------
    async def _read(self) -> None:
        while not self._closed:
            if not self.connected:
                await asyncio.sleep(0.05)
                continue
            try:
                got = cast("list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None",  # RESP2 shape
                           await self.r.xread({self._feed: self.last_id}, count=READ_BATCH, block=1000))
            except (RedisError, OSError) as e:
                self._down(e)
                continue
            for _stream, entries in got or ():
                for eid, fields in entries:
                    self.last_id = _s(eid)
                    if _s(fields.get(b"o", b"")) == self.replica:
                        continue
                    try:
                        msg = orjson.loads(fields[b"m"])
                        self._apply(msg)
                    except Exception:  # noqa: BLE001 - one bad entry must not stop the feed
                        log.exception("shared feed entry %s ignored", self.last_id)
                if entries:
                    self.lag = max(0.0, time.time() - int(self.last_id.split("-")[0]) / 1000)

    def _apply(self, msg: dict[str, Any]) -> None:
        change = decode(msg)
        apply_to(self.app, change)
        self.readthrough.heard(change)

    def pending_own(self, server: str) -> set[tuple[str, str]]:
        """(op, kind) of this replica's writes about `server` not yet in Redis (queued or being
        written): there, what Redis holds may be older than what this replica knows."""
        return {(op, str(p.get("kind", ""))) for op, p in (*self.outbox, *self.inflight)
                if p.get("server") == server and op in _OWN_OPS}

    # -- connection, load, republish ---------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._connect_loop()), asyncio.create_task(self._read()),
                       asyncio.create_task(self._write()), asyncio.create_task(self._refresh())]
        if not self.observer:       # calls and sensitive uses counted here, for the global limits
            self._tasks.append(asyncio.create_task(report_counts(self.app.risk, self.publish, lambda: self.connected,
                                                                 dropped=self._dropped)))

    def _dropped(self, n: int) -> None:
        """Writes given up rather than replayed (rate reports made while Redis was away)."""
        self.writes_dropped += n

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.wait(self._tasks, timeout=3)
        for r in {id(self.r): self.r, id(self.rc): self.rc}.values():
            try:
                await r.aclose()
            except (RedisError, OSError):
                pass

    def _down(self, e: BaseException) -> None:
        if self.connected:
            log.warning("shared state (Redis %s) unavailable: %s", self.cfg.redacted(), e)
        self.connected = False
        if self.on_state is not None:
            self.on_state(False)

    async def _connect_loop(self) -> None:
        attempt = 0
        while not self._closed:
            if self.connected:
                await asyncio.sleep(0.2)
                try:
                    await asyncio.wait_for(self.r.ping(), 1.0)   # a dead server shows here, not only on use
                except (TimeoutError, RedisError, OSError) as e:
                    self._down(e)
                continue
            try:
                await asyncio.wait_for(self._sync(), 30)
                self.syncs += 1
                self.connected = True
                attempt = 0
                log.info("shared state connected (%s)", self.cfg.redacted())
                if self.on_state is not None:
                    self.on_state(True)
                self.loaded.set()
                self._wake.set()                       # replay what queued while away
            except (TimeoutError, RedisError, OSError) as e:
                self._down(e)
                await asyncio.sleep(RECONNECT_BACKOFF[min(attempt, len(RECONNECT_BACKOFF) - 1)])
                attempt += 1

    async def _sync(self) -> None:
        """(Re)connect: load the shared state (first time, or after the feed moved past us), or
        republish ours when Redis came back empty."""
        await self.r.ping()
        epoch = await self.r.get(self._k("epoch"))
        if epoch is None:
            # A new data set (first replica ever, or Redis restarted empty): what we know goes in.
            if not self.observer:
                await self._republish()
            await self.r.set(self._k("epoch"), self.replica, nx=True)
        head = await self.r.xrevrange(self._feed, count=1)
        first = await self.r.xrange(self._feed, count=1)
        missed = self.last_id == "0-0" or not first or _older(self.last_id, _s(first[0][0]))
        if missed:
            await self._load()
            self.last_id = _s(head[0][0]) if head else "0-0"

    async def _load(self) -> None:
        """Everything a replica must know before it decides: approvals before specs, so that an
        approved capability is not held again when its snapshot is screened."""
        app = self.app
        for f, digest in (await self.r.hgetall(self._k("approved"))).items():
            server, kind, name = orjson.loads(f)
            app.specs.apply(Approved(server, kind, name, _s(digest)))
        for server, info in (await self.r.hgetall(self._k("info"))).items():
            app.specs.apply(InfoNoted(_s(server), orjson.loads(info)))
        for f, items in (await self.r.hgetall(self._k("spec"))).items():
            server, kind, viewer, source = orjson.loads(f)
            app.specs.apply(SpecLearned(server, kind, tuple(orjson.loads(items)), "accept", source,
                                        viewer or "replica"))
        for f, why in (await self.r.hgetall(self._k("quarantine"))).items():
            server, kind, name = orjson.loads(f)
            app.specs.apply(Quarantined(server, kind, name, _s(why)))
        n = 0
        async for key in self.r.scan_iter(match=self._k("vis", "*"), count=1000):
            server, part = _s(key)[len(self._k("vis", "")):].split("|", 1)
            for kind, names in (await self.r.hgetall(key)).items():
                sid, caller = (part[2:], "") if part.startswith("s:") else ("", part[2:])
                app.visibility.apply(Listed(server, sid, caller, _s(kind), tuple(orjson.loads(names))))
            n += 1
            if n >= app.visibility.max_partitions:
                break
        minute = int(app.risk.clock.time() // 60)
        calls: dict[str, int] = {}
        uses: dict[str, int] = {}
        for f, v in (await self.r.hgetall(self._k("rate", str(minute)))).items():
            kind, caller = _s(f).split(":", 1)
            (calls if kind == "c" else uses)[caller] = int(v)
        app.risk.apply(RateCounts(minute, calls, uses, totals=True))
        n = 0
        async for key in self.r.scan_iter(match=self._k("risk", "*"), count=1000):
            raw = await self.r.get(key)
            if raw is not None:
                rec = orjson.loads(raw)
                left = float(rec["score"]) - app.risk.decay * (time.time() - float(rec["at"])) / 60.0
                if left > 0:
                    app.risk.apply(RiskScore(_s(key)[len(self._k("risk", "")):], left))
            n += 1
            if n >= MAX_RESTORED_CALLERS:
                break

    async def _republish(self) -> None:
        """Redis lost its data: every replica writes back what it holds (the same records a
        restarted worker is sent), sessions with SET NX so a live claim is never overwritten."""
        from extauthz.workers.supervisor import catch_up
        count = 0
        async with self.r.pipeline(transaction=False) as pipe:
            for change in catch_up(self.app):
                if isinstance(change, RateCounts):  # every replica holds the global count: written back R times
                    continue
                self._durable(pipe, change)        # approvals with their digests, holds, sessions (NX), ...
                count += 1
            await pipe.execute()
        log.warning("shared state was empty: republished %d records", count)

    async def _refresh(self) -> None:
        """Keep alive, in Redis, the sessions this replica saw used: a session busy here never
        expires there while it idles elsewhere."""
        while not self._closed:
            await asyncio.sleep(min(REFRESH_EVERY, max(0.5, self.app.sessions.idle_ttl / 4)))
            if not self.connected:
                continue
            since, self.last_refresh = self.last_refresh, time.monotonic()
            sids = self.app.sessions.touched_since(since)
            if not sids:
                continue
            ttl = int(self.app.sessions.idle_ttl * 1000)
            try:
                async with self.r.pipeline(transaction=False) as pipe:
                    for sid in sids:
                        pipe.pexpire(self._sess(sid), ttl)
                    await pipe.execute()
            except (RedisError, OSError) as e:
                self._down(e)

    # -- discovery lease -----------------------------------------------------------------------------------
    async def hold_lease(self, name: str, seconds: float) -> bool:
        """True while this replica holds `name` (e.g. scheduled discovery runs on one replica)."""
        key = self._k("lease", name)
        try:
            if await self.r.set(key, self.replica, nx=True, px=int(seconds * 1000)):
                return True
            if _s(await self.r.get(key) or b"") == self.replica:
                await self.r.pexpire(key, int(seconds * 1000))
                return True
        except (RedisError, OSError) as e:
            self._down(e)
        return False

    # -- keys --------------------------------------------------------------------------------------------------
    def _k(self, *parts: str) -> str:
        return ":".join((self.p, *parts))

    @property
    def _feed(self) -> str:
        return self._k("feed")

    def _sess(self, sid: str) -> str:
        return self._k("sess", sid)

    def _vis(self, server: str, part: str) -> str:
        return self._k("vis", f"{server}|{part}")

    def status(self) -> dict[str, Any]:
        return {"backend": "redis", "url": self.cfg.redacted(), "connected": self.connected,
                "loaded": self.loaded.is_set(), "lagSeconds": round(self.lag, 3), "queued": len(self.outbox),
                "writesDropped": self.writes_dropped, "claimsDenied": self.claims_denied,
                "claimsWaitedOut": self.claims_waited_out,    # of those denied: no free claim connection
                "readThrough": self.readthrough.status()}


def _client(cfg: RedisConfig, *, claims: int = 0) -> aioredis.Redis:
    """The background client (feed, writer, ping, loads; a fixed handful of tasks), or with `claims`
    the claims' own: a pool of that many connections that waits for a free one (the semaphore in
    `claim` keeps it from waiting at all) instead of raising MaxConnectionsError."""
    kw: dict[str, Any] = {"username": cfg.username, "password": cfg.password, "socket_timeout": 5.0,
                          "socket_connect_timeout": 2.0, "health_check_interval": 15}
    if cfg.tls:
        kw.update(ssl_ca_certs=cfg.ca_file, ssl_certfile=cfg.cert_file, ssl_keyfile=cfg.key_file,
                  ssl_cert_reqs="required")
    if claims:
        pool = aioredis.BlockingConnectionPool.from_url(cfg.url, max_connections=claims, timeout=cfg.timeout, **kw)
        return aioredis.Redis(connection_pool=pool)
    return aioredis.from_url(cfg.url, **kw)


def _record(op: str, payload: dict[str, Any]) -> Change | None:
    """The record a queued write stands for (None: nothing durable, e.g. a stream hint)."""
    try:
        return decode({"op": op, **payload})
    except ValueError:
        return None


def _field(*parts: str) -> bytes:
    return orjson.dumps(list(parts))


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)


def _older(a: str, b: str) -> bool:
    """Stream id a < b."""
    x, y = a.split("-"), b.split("-")
    return (int(x[0]), int(x[1])) < (int(y[0]), int(y[1]))


__all__ = ["NoFreeSlot", "RedisShared", "SharedUnavailable", "ResponseError"]
