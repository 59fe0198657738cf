"""Claims in flight beyond the claim pool wait for a connection within their budget: a burst of
new sessions is neither denied nor taken for Redis being down (which would resync the replica),
and it cannot starve the feed. Only a Redis that does not answer denies, and the replica recovers."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import signal

from extauthz.app import App
from extauthz.core.decision import Decision
from extauthz.core.reasons import Reason
from extauthz.shared.config import redis_config
from extauthz.shared.redis import RedisShared
from extauthz.shared.testing import RedisProcess

from ..core.conftest import learn
from .test_redis_state import LOOKUP, POLICY, check, close, replica, settle

POOL = 10


async def pooled(redis: RedisProcess, *, timeout: float = 0.25) -> App:
    app = App(str(POLICY), decision_out=io.BytesIO())
    cfg = dataclasses.replace(redis_config(redis.url, prefix="t", timeout=timeout), claim_connections=POOL)
    shared = RedisShared(cfg, app)
    app.use_shared(shared)
    await shared.start()
    await asyncio.wait_for(shared.loaded.wait(), 10)
    learn(app)
    return app


def claim_pool_size(app: App) -> int:
    pool = app.shared.rc.connection_pool
    return len(pool._available_connections) + len(pool._in_use_connections)


async def test_300_first_claims_over_10_connections_are_all_bound_without_a_resync(
        redis_server: RedisProcess) -> None:
    # a budget the whole burst fits in on a loaded machine: the point is waiting, not speed
    a = await pooled(redis_server, timeout=10.0)
    downs: list[bool] = []
    a.shared.on_state = downs.append
    try:
        got = await asyncio.gather(*(check(a, LOOKUP, sid=f"burst-{i}") for i in range(300)),
                                   return_exceptions=True)
        decided = [g for g in got if isinstance(g, Decision)]
        assert len(decided) == 300, [g for g in got if isinstance(g, BaseException)][:3]
        assert all(d.allowed for d in decided), {d.reason for d in decided if not d.allowed}
        assert a.shared.claims == 300 and a.shared.claims_denied == 0 and a.shared.claims_waited_out == 0
        assert a.shared.connected and a.shared.syncs == 1 and False not in downs
        assert 1 < claim_pool_size(a) <= POOL
        assert a.sessions.owner("burst-299") is not None
    finally:
        await close(a)


async def test_a_claim_finding_no_free_connection_is_denied_alone_and_the_feed_goes_on(
        redis_server: RedisProcess) -> None:
    a = await pooled(redis_server)
    b = await replica(redis_server)
    try:
        for _ in range(POOL):                      # every claim connection busy (a burst in flight)
            await a.shared.claim_slots.acquire()
        d = await check(a, LOOKUP, sid="waits-too-long")
        assert d.reason is Reason.NOT_ALLOWED and d.rule == "sessions.sharedStateDown"
        assert "no Redis connection free" in d.detail
        assert a.shared.claims_denied == 1 and a.shared.claims_waited_out == 1
        assert a.shared.status()["claimsWaitedOut"] == 1
        assert a.shared.connected and a.shared.syncs == 1        # not "Redis down": no resync
        # the feed has its own connection: what b binds meanwhile reaches a
        assert (await check(b, LOOKUP, sid="bound-on-b")).allowed
        await settle(a, b)
        assert a.sessions.owner("bound-on-b") is not None
        for _ in range(POOL):
            a.shared.claim_slots.release()
        assert (await check(a, LOOKUP, sid="waits-too-long")).allowed
    finally:
        await close(a, b)


async def test_claims_deny_while_redis_is_paused_and_the_replica_recovers(redis_server: RedisProcess) -> None:
    a = await pooled(redis_server)
    assert redis_server.proc is not None
    try:
        assert (await check(a, LOOKUP, sid="before")).allowed
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            got = await asyncio.wait_for(asyncio.gather(*(check(a, LOOKUP, sid=f"paused-{i}") for i in range(30))), 20)
            assert all(d.reason is Reason.NOT_ALLOWED and d.rule == "sessions.sharedStateDown" for d in got)
            assert a.shared.claims_denied == 30
            assert (await check(a, LOOKUP, sid="before")).allowed      # known here: decided locally
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        for _ in range(200):
            await asyncio.sleep(0.05)
            if a.shared.connected:
                break
        assert a.shared.connected
        assert (await check(a, LOOKUP, sid="paused-0")).allowed
    finally:
        await close(a)
