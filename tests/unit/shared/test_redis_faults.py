"""Faults of the shared state on a real redis-server: what is written back when Redis restarts
empty, what is counted as lost while it is away, and the scheduled-discovery lease."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from types import SimpleNamespace

import orjson
from prometheus_client import generate_latest

from extauthz.app import App
from extauthz.core.reasons import Reason
from extauthz.server import _discovery_lease
from extauthz.shared.config import redis_config
from extauthz.shared.redis import RedisShared
from extauthz.shared.testing import RedisProcess

from .test_redis_risk import check as risk_check
from .test_redis_risk import policy, until
from .test_redis_risk import replica as risk_replica
from .test_redis_state import close, replica, settle
from .test_store_contract import SEARCH, check, drifted


async def reconnected(*apps: App) -> None:
    await until(lambda: all(a.shared.connected for a in apps), "the replicas reconnect")
    await settle(*apps)


async def test_approvals_are_written_back_when_redis_restarts_empty(redis_server: RedisProcess) -> None:
    a = await replica(redis_server)
    try:
        a.specs.apply_page("crm", "tools", drifted("now different"), first=True, last=True)     # held
        assert a.specs.approve("crm", "tools", "search_customers")
        digest = a.specs.get("crm").tools["search_customers"].digest
        await settle(a)
        redis_server.stop()                 # its data gone
        redis_server.start()
        await reconnected(a)
        field = orjson.dumps(["crm", "tools", "search_customers"])
        assert await a.shared.r.hget("t:approved", field) == digest.encode()
        c = await replica(redis_server, learned=False)      # started after the restart
        try:
            assert c.specs.get("crm").approved[("tools", "search_customers")] == digest
            assert (await check(c, SEARCH, sid="late")).allowed
        finally:
            await close(c)
    finally:
        await close(a)


async def test_a_hold_is_written_back_when_redis_restarts_empty(redis_server: RedisProcess) -> None:
    a = await replica(redis_server)
    try:
        a.specs.apply_page("crm", "tools", drifted("now different"), first=True, last=True)     # held
        await settle(a)
        redis_server.stop()
        redis_server.start()
        await reconnected(a)
        c = await replica(redis_server, learned=False)
        try:
            assert (await check(c, SEARCH, sid="late")).reason is Reason.QUARANTINED
        finally:
            await close(c)
    finally:
        await close(a)


async def test_rate_reports_made_while_redis_is_down_are_counted_as_dropped(redis_server: RedisProcess,
                                                                             tmp_path: Path) -> None:
    """A rate report is worth something only within its minute: made while Redis is away, it is
    not queued for replay but counted in shared_writes_dropped_total."""
    a = await risk_replica(redis_server, policy(tmp_path, "blockAt: 1000, volumePerMinute: 1000, callsPerMinute: 50"))
    try:
        assert (await risk_check(a, "open_tool", {"q": "x"}, sid="S1")).allowed
        await settle(a)
        assert a.shared.writes_dropped == 0
        redis_server.stop()
        await until(lambda: not a.shared.connected, "the replica notices Redis is gone")
        queued = len(a.shared.outbox)
        for _ in range(3):                  # a known session: decided locally, counted locally
            assert (await risk_check(a, "open_tool", {"q": "x"}, sid="S1")).allowed
        await until(lambda: a.shared.writes_dropped >= 1, "the report made while down is counted as dropped")
        assert not any(op == "rate" for op, _ in list(a.shared.outbox)[queued:])     # and not queued
        a.metrics.watch_shared(a.shared.status)          # as extauthz.cli does
        metrics = generate_latest(a.metrics.registry).decode()
        assert f"mcp_extauthz_shared_writes_dropped_total {float(a.shared.writes_dropped)}" in metrics
    finally:
        redis_server.start()
        await close(a)


async def test_the_discovery_lease_is_held_by_one_replica_at_a_time(redis_server: RedisProcess) -> None:
    apps = [App(str(Path(__file__).parent.parent / "core" / "policy.yaml"), decision_out=io.BytesIO())
            for _ in range(2)]
    shared = [RedisShared(redis_config(redis_server.url, prefix="lease"), app) for app in apps]
    for s in shared:
        await s.start()
        await asyncio.wait_for(s.loaded.wait(), 10)
    # each replica's scheduler (extauthz.discovery.service), configured to run scheduled discovery
    replicas = [SimpleNamespace(discovery=SimpleNamespace(scheduled=True)) for _ in apps]
    tasks = [asyncio.create_task(_discovery_lease(r.discovery, s, every=0.1)) for r, s in zip(replicas, shared)]  # type: ignore[arg-type]
    try:
        await until(lambda: sum(r.discovery.scheduled for r in replicas) == 1, "one replica holds the lease")
        for _ in range(10):                  # and keeps holding it while it renews
            await asyncio.sleep(0.05)
            assert sum(r.discovery.scheduled for r in replicas) == 1
        holder = next(i for i, r in enumerate(replicas) if r.discovery.scheduled)
        tasks[holder].cancel()               # the holder dies: the other takes over within 3 renewals
        other = replicas[1 - holder]
        await until(lambda: other.discovery.scheduled, "the other replica takes the lease over")
    finally:
        for t in tasks:
            t.cancel()
        for s in shared:
            await s.close()
