"""Risk over two replicas (two Apps, each with its own Redis connection, one real redis-server):
`risk.callsPerMinute` and `risk.volumePerMinute` hold globally within the stated bound, and a
recon -> probe -> extract chain split across the replicas is blocked on both."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from extauthz.app import App
from extauthz.core.decision import Decision
from extauthz.core.reasons import Reason
from extauthz.risk.stages import CHAIN_POINTS, VOLUME_POINTS
from extauthz.shared.config import redis_config
from extauthz.shared.redis import RedisShared
from extauthz.shared.testing import RedisProcess

from ..core.conftest import http
from ..risk.test_risk_app import ALICE, ALICE_CLAIMS, POLICY, TOOLS

LIMIT = 40


class FixedMinute:
    """The risk engine's clock: real monotonic time, a wall clock that stays inside one minute (a
    test must not straddle a minute boundary, where every count starts again)."""

    def __init__(self) -> None:
        import time
        self._t = time
        self.wall = 1_800_000_000.0 + 5

    def monotonic(self) -> float:
        return self._t.monotonic()

    def time(self) -> float:
        return self.wall


async def replica(redis: RedisProcess, policy: Path) -> App:
    app = App(str(policy), decision_out=io.BytesIO(), clock=FixedMinute())
    shared = RedisShared(redis_config(redis.url, prefix="t"), app)
    app.use_shared(shared)
    await shared.start()
    await asyncio.wait_for(shared.loaded.wait(), 10)
    app.specs.apply_page("crm", "tools", TOOLS, first=True, last=True)
    return app


def policy(tmp: Path, risk: str) -> Path:
    text = POLICY.read_text()
    old = "risk: {enabled: true, blockAt: 30, decayPerMinute: 1, volumePerMinute: 2}"
    assert old in text
    p = tmp / "policy.yaml"
    p.write_text(text.replace(old, f"risk: {{enabled: true, {risk}}}"))
    return p


async def check(app: App, name: str, args: dict[str, Any] | None = None, sid: str = "",
                claims: dict[str, Any] = ALICE_CLAIMS) -> Decision:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args or {}}}
    req = http(body, claims=claims, headers={"mcp-session-id": sid} if sid else {})
    d = app.check(req)
    if d.pending:
        d = await app.confirm_claim(req, d)
    return d


async def until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait for a replica to hear from the other (generous: the machine is shared)."""
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout}s: {what}")


async def close(*apps: App) -> None:
    for a in apps:
        await a.shared.close()


def rate(app: App) -> int:
    st = app.risk.get(ALICE)
    return 0 if st is None else st.rate_count


async def test_calls_per_minute_holds_over_two_replicas_within_the_bound(redis_server: RedisProcess,
                                                                         tmp_path: Path) -> None:
    """Calls spread over both replicas, K on each between two reports: at most LIMIT + (replicas - 1)
    x K are allowed in the minute (each counted 40 alone would have allowed 80)."""
    p = policy(tmp_path, f"blockAt: 1000, volumePerMinute: 1000, callsPerMinute: {LIMIT}")
    a, b = await replica(redis_server, p), await replica(redis_server, p)
    try:
        k, allowed, sent = 5, 0, 0
        for _ in range(16):
            for _ in range(k):
                allowed += (await check(a, "open_tool", {"q": "x"})).allowed
                allowed += (await check(b, "open_tool", {"q": "x"})).allowed
            sent += 2 * k
            await until(lambda: rate(a) == rate(b) == sent, f"both replicas count {sent}")
        assert LIMIT <= allowed <= LIMIT + (2 - 1) * k, allowed
        d = await check(b, "open_tool", {"q": "x"})
        assert d.reason is Reason.RATE_LIMITED and f"{LIMIT} requests" in d.detail
        assert (await check(a, "open_tool", {"q": "x"}, claims={**ALICE_CLAIMS, "sub": "bob"})).allowed
    finally:
        await close(a, b)


async def test_sensitive_volume_counts_over_both_replicas_and_scores_once(redis_server: RedisProcess,
                                                                         tmp_path: Path) -> None:
    p = policy(tmp_path, "blockAt: 1000, decayPerMinute: 0, volumePerMinute: 4")
    a, b = await replica(redis_server, p), await replica(redis_server, p)
    try:
        uses = lambda app: app.risk.get(ALICE).volume_count if app.risk.get(ALICE) else 0  # noqa: E731
        for _ in range(3):
            assert (await check(a, "export_data", {"q": "x"})).allowed
        await until(lambda: uses(b) == 3, "b counts a's sensitive uses")
        for _ in range(2):                      # the 4th and 5th of the minute, on b: above 4/min
            assert (await check(b, "export_data", {"q": "x"})).allowed
        assert b.risk.score(ALICE) == VOLUME_POINTS
        await until(lambda: a.risk.score(ALICE) == VOLUME_POINTS and uses(a) == 5, "a hears of b's volume")
        for _ in range(3):                      # more on a, the same minute: no more points anywhere
            assert (await check(a, "export_data", {"q": "x"})).allowed
        await until(lambda: uses(b) == 8, "b counts the rest")
        assert a.risk.score(ALICE) == b.risk.score(ALICE) == VOLUME_POINTS
    finally:
        await close(a, b)


async def test_a_chain_split_across_replicas_is_blocked_on_both(redis_server: RedisProcess, tmp_path: Path) -> None:
    """Recon and probes on a, extraction on b: b completes the chain, a hears of it within the feed
    lag; both deny risk_blocked, and the alert is counted once (where it was completed)."""
    p = policy(tmp_path, "blockAt: 100, decayPerMinute: 1, volumePerMinute: 600")
    a, b = await replica(redis_server, p), await replica(redis_server, p)
    try:
        assert (await check(a, "open_tool", {"q": "x"}, sid="s1")).allowed
        recon = [await check(a, f"ghost_{i}", sid="s1") for i in range(3)]              # 3 x 6
        probes = [await check(a, f"admin_{i}", {"q": "x"}, sid="s2") for i in range(6)]  # 6 x 8, the last escalated
        assert {d.reason for d in recon} == {Reason.UNKNOWN_CAPABILITY}
        assert {d.reason for d in probes} == {Reason.NOT_ALLOWED}
        before = a.risk.score(ALICE)
        assert 60 < before < 100 and not a.risk.blocked(ALICE)
        await until(lambda: abs(b.risk.score(ALICE) - a.risk.score(ALICE)) < 1, "b has a's evidence")
        d = await check(b, "export_data", {"q": "all"}, sid="s3")                       # extraction, on b
        assert d.allowed and d.alert is not None
        assert d.alert["sessions"] == ["s1", "s2", "s3"]
        assert b.risk.score(ALICE) >= before + CHAIN_POINTS - 1 >= 100
        assert (await check(b, "open_tool", {"q": "x"}, sid="s3")).reason is Reason.RISK_BLOCKED
        await until(lambda: a.risk.blocked(ALICE) != "", "a blocks the caller")
        for app, sid in ((a, "s1"), (b, "s1"), (a, "s4")):
            dd = await check(app, "open_tool", {"q": "x"}, sid=sid)
            assert dd.reason is Reason.RISK_BLOCKED and "chain recon -> probe -> extract" in dd.detail
        assert abs(a.risk.score(ALICE) - b.risk.score(ALICE)) < 1            # scored once each, not twice
        assert b.metrics.risk_alerts.value == 1 and a.metrics.risk_alerts.value == 0
        assert a.risk.get(ALICE).alerts and a.risk.get(ALICE).alerts[-1]["summary"] == d.alert["summary"]
    finally:
        await close(a, b)


async def test_a_replica_started_mid_minute_loads_the_minutes_counts(redis_server: RedisProcess,
                                                                     tmp_path: Path) -> None:
    p = policy(tmp_path, f"blockAt: 1000, volumePerMinute: 1000, callsPerMinute: {LIMIT}")
    a = await replica(redis_server, p)
    try:
        for _ in range(LIMIT):
            assert (await check(a, "open_tool", {"q": "x"})).allowed
        key = f"t:rate:{int(a.risk.clock.time() // 60)}"
        for _ in range(500):                        # a's report is in Redis
            if int(await a.shared.r.hget(key, f"c:{ALICE}") or 0) == LIMIT:
                break
            await asyncio.sleep(0.02)
        c = await replica(redis_server, p)          # loads {p}:rate:{minute} before it is ready
        try:
            assert rate(c) == LIMIT
            assert (await check(c, "open_tool", {"q": "x"})).reason is Reason.RATE_LIMITED
        finally:
            await close(c)
    finally:
        await close(a)
