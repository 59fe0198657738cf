"""What the actor page costs with `--redis` (issue 18): one caller's full timeline on replica B,
built from B alone (local) and merged with every replica's decisions from the shared actor log
(`extauthz.shared.actor_log`, read back up to its bound, `KEEP` per caller).

One real redis-server (extauthz.shared.testing.RedisProcess), two replicas A and B (Apps with
RedisShared, as `serve --redis` runs them, each writing its decisions to the actor log). The
investigated caller's decisions are split between A and B as each row says; B also holds `others`
other callers. Per row, medians over the rounds of: gathering B's facts (`LocalActors.facts`), the
shared part (`SharedActors.facts` minus the local part: one XREVRANGE of up to KEEP records plus
the merge), building the view (`actor_view.build`) and rendering the HTML (`actor_page.render`).
Then what the writer costs (records written behind per second, one Lua call per batch) and what a
caller's full stream holds in Redis (MEMORY USAGE, exact). Numbers are printed, never asserted.

    python bench/actor_page.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import common as C
from actor_view import KEY, SMALL, TOOLS, request

from extauthz.admin.actor_page import render
from extauthz.admin.actor_view import build
from extauthz.admin.actors import LocalActors
from extauthz.admin.actors_shared import SharedActors, with_shared_log
from extauthz.app import App
from extauthz.shared.actor_log import BATCH, KEEP, QUEUE_MAX, ActorLog
from extauthz.shared.config import redis_config
from extauthz.shared.redis import RedisShared
from extauthz.shared.testing import RedisProcess


async def replica(url: str, prefix: str) -> tuple[App, SharedActors, ActorLog]:
    app = App(str(C.POLICY), decision_out=io.BytesIO())
    app.specs.apply_page(C.SERVER, "tools", TOOLS, first=True, last=True)
    app.risk.configure(block_at=10**9, decay_per_minute=1, enabled=True, volume_per_minute=10**6,
                       timeline=32, max_callers=100_000)
    shared = RedisShared(redis_config(url, prefix=prefix), app)
    app.use_shared(shared)
    await shared.start()
    await asyncio.wait_for(shared.loaded.wait(), 10)
    source, log = with_shared_log(app, LocalActors(app), shared, write=True)
    assert isinstance(source, SharedActors) and log is not None
    return app, source, log


async def check(app: App, req: Any) -> None:
    d = app.check(req)
    if d.claim:         # a session id this replica never saw: claimed in Redis first
        await app.confirm_claim(req, d)


async def decide(app: App, n: int, start: int, session: str) -> None:
    for i in range(start, start + n):     # one in four a denial (an unknown name)
        t = SMALL[i % len(SMALL)]
        await check(app, request("investigated", session, f"nope_{i}" if i % 4 == 0 else t["name"], C.small_args(t)))
    app.record_pending()


async def drained(*logs: ActorLog) -> None:
    while any(lg.pending for lg in logs):
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)


async def timed(fn: Callable[[], Awaitable[Any]], rounds: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = await fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, out


def timed_sync(fn: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, out


async def row(url: str, n: int, on_a: int, on_b: int, others: int, rounds: int) -> None:
    (a, _, la), (b, sb, lb) = await replica(url, f"bench{n}"), await replica(url, f"bench{n}")
    try:
        t = SMALL[0]
        for i in range(others):
            await check(b, request(f"other-{i}", f"o-{i}", t["name"], C.small_args(t)))
        b.record_pending()
        await decide(a, on_a, 0, "s-a")
        await decide(b, on_b, on_a, "s-b")
        await drained(la, lb)
        local = LocalActors(b)
        g, lfacts = await timed(lambda: local.facts(KEY), rounds)
        m, mfacts = await timed(lambda: sb.facts(KEY), rounds)
        for label, facts, gather_ms, shared_ms in (("local", lfacts, g, 0.0), ("merged", mfacts, g, max(0.0, m - g))):
            bt, view = timed_sync(lambda f=facts: build(f), rounds)
            rt, page = timed_sync(lambda v=view: render(v), rounds)
            print(f"{label:>7} {on_a:>5} {on_b:>5} {others:>6} {view.bounds.kept:>5} {gather_ms:>9.2f} "
                  f"{shared_ms:>9.2f} {bt:>8.2f} {rt:>9.2f} {gather_ms + shared_ms + bt + rt:>8.2f} "
                  f"{len(page) / 1024:>7.0f}")
    finally:
        for app, lg in ((a, la), (b, lb)):
            await lg.close()
            await app.shared.close()


def record(i: int, proc: str) -> dict[str, Any]:
    """A decision-log record of one of 100 callers, with an id made now by process `proc`."""
    return {"decision_id": f"{int(time.time() * 1000):012x}{proc}{i:08x}", "time": "2026-12-03T06:00:00.000Z",
            "decision": "deny" if i % 4 == 0 else "allow", "server": "crm", "method": "tools/call",
            "name": "crm_get_0", "reason": "allowed" if i % 4 else "unknown_capability",
            "caller": {"iss": "https://issuer", "sub": f"u{i % 100}", "client_id": "agent"},
            "mcp_session_id": f"s-{i % 400}", "user_session": f"u-{i % 100}"}


async def writer(url: str, n: int) -> None:
    app, _, log = await replica(url, "benchw")
    try:
        log._task.cancel()           # flushed by hand below, so the batches are timed alone
        dt, last = 0.0, {}
        for i in range(0, n, QUEUE_MAX):      # the queue holds QUEUE_MAX: added and written in turns
            for j in range(i, min(n, i + QUEUE_MAX)):
                last = record(j, "a" * 12)
                log.add(last)
            t = time.perf_counter()
            while log.queue:
                await log.flush()
            dt += time.perf_counter() - t
        assert log.written == n and log.dropped == 0, log.status()
        r = app.shared.r
        mem = await r.memory_usage(log.key("actor", "https://issuer|u0|agent"), samples=0)
        length = await r.xlen(log.key("actor", "https://issuer|u0|agent"))
        print(f"\nwriter: {n} records for 100 callers in {dt * 1000:.0f} ms ({n / dt:,.0f} records/s written behind, "
              f"one Lua call per batch of up to {BATCH})")
        # an allowed id (not in the denial index): looked for in the streams of the callers its
        # process served in its second (here all 100, each with ~250 records in the window)
        probe = last["decision_id"] if last["decision"] == "allow" else ""
        assert probe
        ft, hits = await timed(lambda: log.find(probe), 15)
        assert hits and hits[0][1] == "decision", (hits, probe)
        miss, _ = await timed(lambda: log.find(probe[:-8] + "ffffffff"), 15)
        print(f"find an allowed decision id among 100 busy callers' streams: {ft:.2f} ms in Redis and back "
              f"(an id its process never made in that second: {miss:.2f} ms)")
        print(f"a caller's full stream: {length} records (KEEP {KEEP}, MAXLEN ~), {mem / 1024:.0f} KB in Redis "
              f"({mem / max(length, 1):.0f} B a record)")
    finally:
        await app.shared.close()


async def main_async(quick: bool) -> None:
    redis = RedisProcess().start()
    try:
        rounds = 5 if quick else 15
        cases = [(KEEP, 0, 0), (KEEP // 2, KEEP // 2, 0), (KEEP, KEEP, 0), (KEEP, 1000, 1000), (KEEP, 1000, 10_000)]
        if quick:
            cases = cases[:3]
        print(f"{'view':>7} {'on A':>5} {'on B':>5} {'others':>6} {'kept':>5} {'local ms':>9} {'shared ms':>9} "
              f"{'build ms':>8} {'render ms':>9} {'total ms':>8} {'page KB':>7}")
        for n, (on_a, on_b, others) in enumerate(cases):
            await row(redis.url, n, on_a, on_b, others, rounds)
        await writer(redis.url, 20_000 if quick else 100_000)
    finally:
        redis.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    asyncio.run(main_async(ap.parse_args().quick))


if __name__ == "__main__":
    main()
