"""Interleaved rounds of open-loop runs over targets, with each run's CPU, counters and checks.

Rounds interleave the targets (t1, t2, ..., then ..., t2, t1, ...) at every rate, so a slow drift or
a noisy neighbour lands on all of them. Before each run the machine must be quiet (others below
QUIET of a core, up to `max_wait`), and a run during which others used more than DISTURBED is
repeated (up to `retries` times). After a run against a target with a service behind it, that
service's /metrics must show no denials and at least as many allows as the generator's successes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import common as C
from envoy_load import LoadResult, Request, run_load
from envoy_procs import (
    DISTURBED,
    EXT_AUTHZ,
    Proc,
    Target,
    decisions,
    envoy_counters,
    system_cpu,
    wait_quiet,
)
from envoy_variants import access_log
from gc_probe import gc_pauses


@dataclass
class Plan:
    rates: list[int]
    rounds: int
    warmup: float
    duration: float
    connections: int
    retries: int
    max_wait: float
    access_dir: Path | None      # where each Envoy target's access-<name>.log is, or None
    strict: bool = True          # a failed request or a denial stops the bench; else it is counted


def one_run(loop: asyncio.AbstractEventLoop, t: Target, request: Request, rate: int, rnd: int, plan: Plan,
            procs: list[Proc]) -> LoadResult:
    before = decisions(t.service_admin) if t.service_admin else None
    eb = envoy_counters(t.admin_port, EXT_AUTHZ) if t.authz and t.admin_port else None
    cpu0 = {p.name: p.cpu() for p in procs}
    sys0, me0 = system_cpu(), time.process_time()
    res = run_load(loop, t.name, t.label, t.port, request, rate, rnd, plan.warmup, plan.duration, plan.connections,
                   timeout=10.0)
    sys1, me1 = system_cpu(), time.process_time()
    cpu = {p.name: p.cpu() - cpu0[p.name] for p in procs}
    # CPU used by anything but this bench's processes (a noisy neighbour), and stolen by the hypervisor.
    ours = sum(cpu.values()) + (me1 - me0)
    res.extra["cpu"] = cpu
    res.extra["other_cpu"] = max(0.0, (sys1[0] - sys0[0]) - ours) / max(res.wall_s, 1e-9)
    res.extra["steal"] = (sys1[1] - sys0[1]) / max(res.wall_s, 1e-9)
    for p in procs:
        if not p.alive():
            raise p.fail("exited during a run")
    if before is not None and t.service_admin:
        after = decisions(t.service_admin)
        allowed, denied = after["allow"] - before["allow"], after["deny"] - before["deny"]
        res.extra["check_us"] = ((after["sum"] - before["sum"]) / max(after["count"] - before["count"], 1)) * 1e6
        res.extra["denied"] = denied
        if allowed < res.ok or (denied and plan.strict):
            raise SystemExit(f"bench error: extauthz behind {t.label} allowed {allowed:.0f} and denied {denied:.0f} "
                             f"Checks, but the load generator counted {res.ok} successes at {rate}/s")
    if eb is not None and t.admin_port:
        ea = envoy_counters(t.admin_port, EXT_AUTHZ)
        res.extra["ext_authz"] = {k: ea[k] - eb[k] for k in EXT_AUTHZ}
    if res.failed and plan.strict:
        errs = "; ".join(f"{n} x {e}" for e, n in sorted(res.errors.items(), key=lambda kv: -kv[1])[:5])
        raise SystemExit(f"bench error: {res.failed} of {res.scheduled} requests to {t.label} failed at {rate}/s: "
                         f"{errs}")
    return res


def run_rounds(loop: asyncio.AbstractEventLoop, targets: list[Target], requests: dict[str, Request], plan: Plan,
               procs: list[Proc], offsets: dict[str, dict[str, int]] | None = None,
               first_round: int = 0, tag: str = "") -> tuple[list[LoadResult], int]:
    """Every target at every rate in every round; returns the results and how many runs were repeated.

    `offsets` (access log per target, GC log per service) carries over between calls that share
    processes; `first_round` numbers the rounds and `tag` prefixes each run's line (e.g. the kind)."""
    results: list[LoadResult] = []
    offsets = offsets if offsets is not None else {}
    al_offsets = offsets.setdefault("access", {})
    gc_offsets = offsets.setdefault("gc", {})
    width = max([20, *(len(t.label) for t in targets)])      # the per-run lines line up
    repeated = 0
    for r in range(first_round, first_round + plan.rounds):
        for rate in plan.rates:
            order = targets if (r + plan.rates.index(rate)) % 2 == 0 else targets[::-1]
            for t in order:
                svc = t.service
                for attempt in range(plan.retries + 1):
                    waited = wait_quiet(procs, plan.max_wait)
                    if svc is not None:
                        _, gc_offsets[svc.name] = gc_pauses(svc.log_path, gc_offsets.get(svc.name, 0))
                    res = one_run(loop, t, requests[t.name], rate, r, plan, procs)
                    res.extra["waited"] = waited
                    res.extra["gc"] = {}
                    if svc is not None:
                        res.extra["gc"], gc_offsets[svc.name] = gc_pauses(svc.log_path, gc_offsets[svc.name])
                    if res.extra["other_cpu"] <= DISTURBED or attempt == plan.retries:
                        break
                    repeated += 1
                    print(f"  round {r + 1} {rate:5d}/s {tag}{t.label:<{width}} disturbed: other processes used "
                          f"{res.extra['other_cpu']:.0%} of a core; repeating", flush=True)
                if plan.access_dir is not None and t.proc is not None:
                    res.extra["phases"], al_offsets[t.name] = access_log(
                        plan.access_dir / f"access-{t.name.lower()}.log", al_offsets.get(t.name, 0), res)
                results.append(res)
                s = sorted(res.lat_ns)
                print(f"  round {r + 1} {rate:5d}/s {tag}{t.label:<{width}} p50 {C.percentile(s, 50) / 1e3:7.0f} µs  "
                      f"p99 {C.percentile(s, 99) / 1e3:7.0f} µs  ok {res.ok}  failed {res.failed}  "
                      f"new conns {res.new_connections}  other cpu {res.extra['other_cpu']:.0%}"
                      + (f"  service gen2 GC {len(g2)}x, longest {max(g2):.0f} ms"
                         if (g2 := res.extra["gc"].get(2)) else "")
                      + (f"  (waited {res.extra['waited']:.0f}s for quiet)" if res.extra["waited"] >= 1 else ""),
                      flush=True)
    return results, repeated
