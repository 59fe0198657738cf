"""Shared state on Redis: what a Check costs with `--redis` next to in memory, and what Redis holds.

One run, one real redis-server (extauthz.shared.testing.RedisProcess), two Apps with the same
1,000-tool spec and bench policy: `memory` (no shared state) and `redis` (RedisShared started and
loaded, as `serve --redis` runs it). Timed inside a running event loop, as in the service:

  known session   `App.check` on a session the replica already holds (the hot path: the target is
                  the same cost as in memory; nothing may be awaited or queued for Redis)
  new session     the first call of a session id never seen: in memory `App.check` binds it; with
                  Redis `App.check` returns a pending claim and `App.confirm_claim` awaits the Lua
                  first-claim round trip, then decides again. The floor beside it is a bare PING
                  through the same client (the round trip with nothing behind it).

Rounds interleave the two Apps so noise lands on both. During the known-session rounds the redis
server's own command counters (INFO commandstats) and the replica's outbox are read: the commands
the Check path caused must be none (the background reader's XREAD and the liveness PING run between
batches, and are listed apart).

Then memory per item in Redis (MEMORY USAGE ... SAMPLES 0, exact): N sessions claimed, N visibility
snapshots of a 30-tool list (one per session and one per caller), N risk scores, a spec of 100
tools, and the change feed per entry of each kind. Numbers are printed, never asserted.

    python bench/shared_state.py [--quick] [--rounds N] [--batch N] [--new N] [--items N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import time
from typing import Any

import common as C
import redis as syncredis

from extauthz.app import App
from extauthz.envoy.convert import to_http_request
from extauthz.mcp.request import HttpRequest
from extauthz.shared.config import redis_config
from extauthz.shared.redis import RedisShared
from extauthz.shared.testing import RedisProcess

PREFIX = "bench"
# The replica's own loops, not the Check path: liveness PING, the feed reader's XREAD, and the batched
# PEXPIRE that keeps sessions used here alive in Redis (every min(10 s, idle TTL / 4)).
BACKGROUND = {"ping", "xread", "pexpire"}


def requests(tools: list[dict[str, Any]], sids: list[str]) -> list[HttpRequest]:
    """One HttpRequest per session id (a small allowed tools/call), converted from a real CheckRequest."""
    from envoy.service.auth.v3 import external_auth_pb2

    policy_text = C.POLICY.read_text()
    small = [t for t in C.tools_by_shape(tools)["small"]
             if t["name"].startswith(("crm_", "billing_", "orders_")) and t["name"] not in policy_text][:32]
    out = []
    for i, sid in enumerate(sids):
        t = small[i % len(small)]
        req = C.check_request(C.call_body(t["name"], C.small_args(t), i))
        req.attributes.request.http.headers["mcp-session-id"] = sid
        out.append(to_http_request(external_auth_pb2.CheckRequest.FromString(req.SerializeToString())))
    return out


async def redis_app(tools: list[dict[str, Any]], url: str) -> App:
    app = App(str(C.POLICY), decision_out=io.BytesIO())
    shared = RedisShared(redis_config(url, prefix=PREFIX), app)
    app.use_shared(shared)
    await shared.start()
    await asyncio.wait_for(shared.loaded.wait(), 30)
    app.specs.apply_page(C.SERVER, "tools", tools, first=True, last=True)
    await drain(app)
    return app


async def drain(app: App) -> None:
    for _ in range(1000):
        if not app.shared.outbox:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)


async def decide(app: App, http: HttpRequest) -> Any:
    d = app.check(http)
    if d.claim:
        d = await app.confirm_claim(http, d)
    return d


def commandstats(r: syncredis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in r.info("commandstats").items()}


def stats_row(label: str, s: list[int]) -> list[Any]:
    s = sorted(s)
    mean = sum(s) / len(s) / 1000
    return [label, len(s), f"{C.percentile(s, 50) / 1000:.1f}", f"{C.percentile(s, 90) / 1000:.1f}",
            f"{C.percentile(s, 99) / 1000:.1f}", f"{mean:.1f}"]


async def latency(a: argparse.Namespace, tools: list[dict[str, Any]], mem: App, red: App,
                  admin: syncredis.Redis) -> dict[str, float]:
    clock = time.perf_counter_ns
    known = {"memory": [], "redis": []}                  # type: dict[str, list[int]]
    new = {"memory": [], "redis": [], "PING floor": []}  # type: dict[str, list[int]]
    apps = {"memory": mem, "redis": red}
    hot = requests(tools, [C.SESSION_ID] * 32)
    for name, app in apps.items():                       # bind the known session, warm the validators
        for h in hot * 3:
            d = await decide(app, h)
            if not d.allowed:
                raise SystemExit(f"bench setup error: {name}: known-session call denied ({d.reason.value}: {d.detail})")
        app.record_pending()
    await drain(red)
    fresh = {name: requests(tools, [f"new-{name}-{i:07d}" for i in range(a.rounds * a.new)]) for name in apps}
    from extauthz.server import settle
    for app in apps.values():
        settle(app)

    published: dict[str, int] = {}         # op -> writes queued for Redis (publish is never awaited)
    orig_publish = red.shared.publish

    def counting(op: str, payload: dict[str, Any]) -> None:
        published[op] = published.get(op, 0) + 1
        orig_publish(op, payload)
    for store in (red.specs, red.sessions, red.visibility, red.risk):
        store.on_change = counting

    claim_ns: list[int] = []                # the awaited claim alone, inside confirm_claim
    orig_claim = red.shared.claim

    async def timed_claim(*args: Any) -> Any:
        t0 = clock()
        try:
            return await orig_claim(*args)
        finally:
            claim_ns.append(clock() - t0)
    red.shared.claim = timed_claim
    caused: dict[str, int] = {}
    per_new: dict[str, int] = {}            # commands Redis ran during the new-session batches
    background: dict[str, int] = {}
    for rnd in range(a.rounds):
        order = list(apps.items()) if rnd % 2 == 0 else list(apps.items())[::-1]
        for name, app in order:
            before = commandstats(admin)
            pub0 = dict(published)
            out = known[name]
            m = len(hot)
            for i in range(a.batch):                     # no await inside: the Check path is synchronous
                h = hot[i % m]
                t0 = clock()
                app.check(h)
                out.append(clock() - t0)
            app.record_pending()
            await asyncio.sleep(0.02)                    # let the writer flush anything the batch queued
            after = commandstats(admin)
            if name == "redis":
                for cmd, n in after.items():
                    delta = n - before.get(cmd, 0) - (1 if cmd == "info" else 0)
                    if delta > 0:
                        bucket = background if cmd in BACKGROUND else caused
                        bucket[cmd] = bucket.get(cmd, 0) + delta
                for op, n in published.items():
                    if n > pub0.get(op, 0):
                        caused[f"publish {op}"] = caused.get(f"publish {op}", 0) + n - pub0.get(op, 0)
        for name, app in order:
            reqs = fresh[name][rnd * a.new:(rnd + 1) * a.new]
            if name == "redis":
                before_new = commandstats(admin)
            for h in reqs:
                t0 = clock()
                d = await decide(app, h)
                new[name].append(clock() - t0)
                if not d.allowed:
                    raise SystemExit(f"bench error: {name}: a new session was denied ({d.reason.value}: {d.detail})")
            app.record_pending()
            if name == "redis":
                await drain(red)
                for cmd, n in commandstats(admin).items():
                    delta = n - before_new.get(cmd, 0) - (1 if cmd == "info" else 0)
                    if delta > 0 and cmd not in BACKGROUND:
                        per_new[cmd] = per_new.get(cmd, 0) + delta
        for _ in range(a.new):
            t0 = clock()
            await red.shared.r.ping()
            new["PING floor"].append(clock() - t0)
        await drain(red)

    rows = [stats_row(f"known session, {n}", s) for n, s in known.items()]
    rows += [stats_row(f"new session, {n}", s) for n, s in new.items() if n != "PING floor"]
    rows += [stats_row("  of which the awaited claim", claim_ns), stats_row("  PING floor (bare round trip)", new["PING floor"])]
    print(f"shared state: App.check in a running loop, memory vs --redis (redis-server {admin.info('server')['redis_version']} "
          f"on loopback), 1,000-tool spec, {a.rounds} interleaved rounds (extauthz {C.revision()})")
    print(C.table(["Check", "n", "p50 µs", "p90 µs", "p99 µs", "mean µs"], rows))
    print("  new session, redis = App.check (pending claim) + await App.confirm_claim (RedisShared.claim: the Lua")
    print("  claim + HGETALL of its visibility, one pipelined round trip) + the decision again. The rest of the row")
    print("  is the loop's other work for a new binding landing in the same window: the writer's SET NX + XADD")
    print("  pipeline and the feed reader waking on that entry. PING floor = one bare round trip, same client.")
    hot_cmds = {k: v for k, v in caused.items() if v}
    n_new = len(new["redis"])
    print("  commands per new session (awaited, one pipelined round trip: eval, which runs get+set inside, and hgetall; written behind: set NX + xadd of the binding): "
          + ", ".join(f"{k} {v / n_new:.2f}" for k, v in sorted(per_new.items())))
    print(f"  during the known-session rounds on redis ({len(known['redis']):,} Checks): commands and writes caused "
          f"{hot_cmds or 'none'}; background loops {background or 'none'}")
    print("  (publish risk: the caller crossed risk.volumePerMinute, a score change queued once a minute, not per Check)")
    med = {n: C.percentile(sorted(s), 50) / 1000 for n, s in {**{f'k_{k}': v for k, v in known.items()},
                                                              **{f'n_{k}': v for k, v in new.items()}}.items()}
    med["p99_n_redis"] = C.percentile(sorted(new["redis"]), 99) / 1000
    med["claim"] = C.percentile(sorted(claim_ns), 50) / 1000
    med["caused"] = sum(v for k, v in caused.items() if not k.startswith("publish"))
    med["queued"] = sum(v for k, v in caused.items() if k.startswith("publish"))
    med["known_n"] = len(known["redis"])
    return med


async def memory(a: argparse.Namespace, url: str, admin: syncredis.Redis, tools: list[dict[str, Any]]) -> dict[str, float]:
    """Load N sessions, visibility and risk scores, and a 100-tool spec, into a fresh prefix; MEMORY USAGE."""
    admin.flushall()
    app = App(str(C.POLICY), decision_out=io.BytesIO())
    shared = RedisShared(redis_config(url, prefix=PREFIX), app)
    app.use_shared(shared)
    await shared.start()
    await asyncio.wait_for(shared.loaded.wait(), 30)
    feed = f"{PREFIX}:feed"
    n = a.items

    def usage(pattern: str) -> tuple[int, int]:
        total = keys = 0
        for k in admin.scan_iter(match=pattern, count=1000):
            total += admin.memory_usage(k, samples=0) or 0
            keys += 1
        return total, keys

    def feed_usage() -> tuple[int, int]:
        return (admin.memory_usage(feed, samples=0) or 0) if admin.exists(feed) else 0, admin.xlen(feed)

    per_feed: dict[str, float] = {}

    async def phase(op: str, load: Any) -> None:
        b0, e0 = feed_usage()
        load()
        await drain(app)
        b1, e1 = feed_usage()
        per_feed[op] = (b1 - b0) / max(e1 - e0, 1)

    spec_tools = tools[:100]
    await phase("spec", lambda: app.specs.apply_page(C.SERVER, "tools", spec_tools, first=True, last=True))
    # Sessions as a replica writes them: the first claim (Lua SET PX), one real round trip each.
    # Then, as App.confirm_claim does, the binding is touched here and written behind (SET NX + XADD).
    users = [f"user-{i:06d}" for i in range(n)]

    async def claims() -> None:
        for i, u in enumerate(users):
            sid, meta = f"{i:08x}-5c1e-4d7b-9f8e-2b3a4c5d6e7f", {"u": f"user-session-{i:06d}", "i": "support-agent",
                                                                 "v": C.PROTOCOL}
            await shared.claim(sid, f"sub:{u}", C.SERVER, meta)
            app.sessions.touch(sid, f"sub:{u}", C.SERVER, user_session=meta["u"], client_id=meta["i"],
                               protocol_version=C.PROTOCOL)
    b0, e0 = feed_usage()
    await claims()
    await drain(app)
    b1, e1 = feed_usage()
    per_feed["session"] = (b1 - b0) / max(e1 - e0, 1)
    names = [t["name"] for t in tools[:30]]
    await phase("visible", lambda: [app.visibility.listed(C.SERVER, f"{i:08x}-5c1e-4d7b-9f8e-2b3a4c5d6e7f", f"sub:{u}",
                                                         "tools", names) for i, u in enumerate(users)])

    def risk() -> None:
        for i, u in enumerate(users):      # the record RiskEngine.observe publishes (Event.as_json + signature)
            app.risk.restore(f"sub:{u}", 12.5)
            shared.publish("risk", {"caller": f"sub:{u}", "time": round(time.time(), 3),
                                    "decisionId": f"{i:016x}{i:016x}", "sessionId": f"{i:08x}-5c1e-4d7b-9f8e-2b3a4c5d6e7f",
                                    "server": C.SERVER, "method": "tools/call", "name": "crm_unknown_tool",
                                    "reason": "unknown_capability", "stage": "probe", "points": 12.5,
                                    "signature": f"{C.SERVER}|tools/call|crm_unknown_tool"})
    await phase("risk", risk)
    await shared.close()

    sess, nsess = usage(f"{PREFIX}:sess:*")
    vis_s, nvs = usage(f"{PREFIX}:vis:*|s:*")
    vis_c, nvc = usage(f"{PREFIX}:vis:*|c:*")
    risk_b, nrisk = usage(f"{PREFIX}:risk:*")
    spec_b = admin.memory_usage(f"{PREFIX}:spec", samples=0) or 0
    spec_json = sum(len(v) for v in admin.hvals(f"{PREFIX}:spec"))
    feed_b, entries = feed_usage()
    used = admin.info("memory")["used_memory"]
    if not (nsess == nvs == nvc == nrisk == n):
        raise SystemExit(f"bench error: expected {n} of each key, found sessions {nsess}, vis {nvs}/{nvc}, risk {nrisk}")
    rows = [
        ["session owner  {p}:sess:{sid} (string, PX)", nsess, f"{sess / nsess:.0f}"],
        ["session visibility  {p}:vis:{srv}|s:{sid} (30 tools)", nvs, f"{vis_s / nvs:.0f}"],
        ["caller visibility  {p}:vis:{srv}|c:{caller} (30 tools)", nvc, f"{vis_c / nvc:.0f}"],
        ["caller risk score  {p}:risk:{caller} (string, EX)", nrisk, f"{risk_b / nrisk:.0f}"],
        [f"spec  {{p}}:spec, one snapshot of 100 tools ({spec_json / 100:,.0f} B JSON per tool)", 100,
         f"{spec_b / 100:.0f}"],
        [f"feed  {{p}}:feed, all {entries:,} entries", entries, f"{feed_b / max(entries, 1):.0f}"],
    ]
    rows += [[f"feed entry, op {op}" + (" (one entry: the whole 100-tool snapshot)" if op == "spec" else ""), "",
              f"{b:.0f}"] for op, b in per_feed.items()]
    print()
    print(f"memory in Redis (MEMORY USAGE ... SAMPLES 0, {n:,} sessions/callers; used_memory {used / 1e6:.1f} MB):")
    print(C.table(["item", "keys/entries", "bytes each"], rows))
    per_session = (sess + vis_s) / n
    per_caller = (vis_c + risk_b) / n
    print(f"  per session (owner + its visibility): {per_session:.0f} B; per caller (visibility + risk score): "
          f"{per_caller:.0f} B; per tool in a spec snapshot: {spec_b / 100:.0f} B")
    print("  the feed is capped (XADD MAXLEN ~100,000): at most ~100,000 entries of the sizes above.")
    return {"session": per_session, "caller": per_caller, "tool": spec_b / 100, "feed": feed_b / max(entries, 1)}


async def run(a: argparse.Namespace) -> int:
    tools = C.make_tools()
    rp = RedisProcess().start()
    admin = syncredis.Redis(port=rp.port)
    try:
        mem = App(str(C.POLICY), decision_out=io.BytesIO())
        mem.specs.apply_page(C.SERVER, "tools", tools, first=True, last=True)
        red = await redis_app(tools, rp.url)
        try:
            lat = await latency(a, tools, mem, red, admin)
        finally:
            await red.shared.close()
        size = await memory(a, rp.url, admin, tools)
    finally:
        admin.close()
        rp.close()
    print(f"SUMMARY shared_state: known-session Check p50 {lat['k_memory']:.1f} µs memory vs {lat['k_redis']:.1f} µs "
          f"redis (Redis commands during {lat['known_n']:,.0f} known Checks: {lat['caused']}, writes queued: {lat['queued']}); new session p50 {lat['n_memory']:.0f} µs memory vs "
          f"{lat['n_redis']:.0f} µs redis (p99 {lat['p99_n_redis']:.0f}; the awaited claim {lat['claim']:.0f}, PING floor {lat['n_PING floor']:.0f}); "
          f"Redis bytes per session {size['session']:.0f}, per caller {size['caller']:.0f}, per tool {size['tool']:.0f}, "
          f"per feed entry {size['feed']:.0f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and items")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 10, quick 3)")
    ap.add_argument("--batch", type=int, default=None, help="known-session Checks per App per round (default 5000)")
    ap.add_argument("--new", type=int, default=None, help="new sessions per App per round (default 300)")
    ap.add_argument("--items", type=int, default=None, help="sessions/callers loaded for memory (default 10000)")
    a = ap.parse_args(argv)
    a.rounds = a.rounds or (3 if a.quick else 10)
    a.batch = a.batch or (1000 if a.quick else 5000)
    a.new = a.new or (100 if a.quick else 300)
    a.items = a.items or (1000 if a.quick else 10000)
    return asyncio.run(run(a))


if __name__ == "__main__":
    sys.exit(main())
