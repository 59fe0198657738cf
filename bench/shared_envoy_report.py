"""The tables of shared_envoy.py: per kind (known / new session) and target, the latency and the latency
added over plain Envoy (A), Envoy's own ext_authz timing, CPU per request, then memory vs Redis."""

from __future__ import annotations

import math
import re
import statistics

import common as C
from envoy_load import LoadResult
from envoy_procs import DISTURBED, Target

KINDS = ("known", "new")


def _pct(values: list[int], q: float) -> float:
    return C.percentile(values, q) / 1e3 if values else float("nan")


def _pooled(results: list[LoadResult], name: str, kind: str) -> list[LoadResult]:
    return [x for x in results if x.target == name and x.extra.get("kind") == kind]


def _lat(rs: list[LoadResult]) -> list[int]:
    return sorted(v for x in rs for v in x.lat_ns)


def _cpu(rs: list[LoadResult], proc: str) -> float:
    """`proc`'s CPU µs per request answered over the runs `rs`."""
    return sum(x.extra["cpu"].get(proc, 0.0) for x in rs) / max(sum(x.answered for x in rs), 1) * 1e6


def _authz_call(rs: list[LoadResult]) -> str:
    s = sorted(v for x in rs for v in x.extra.get("phases", {}).get("ext_authz", []))
    return f"{C.percentile(s, 50):,.0f} / {C.percentile(s, 99):,.0f}" if s else "-"


def report(results: list[LoadResult], targets: list[Target], rate: int, repeated: int,
           claims_denied: dict[str, float]) -> int:
    rows = []
    for kind in KINDS:
        la = _lat(_pooled(results, "A", kind))
        for t in targets:
            rs = _pooled(results, t.name, kind)
            lat = _lat(rs)
            achieved = sum(x.ok for x in rs) / max(sum(x.scheduled for x in rs) / rate, 1e-9)
            added = " / ".join(f"{_pct(lat, q) - _pct(la, q):+,.0f}" for q in (50, 90, 99)) if t.name != "A" else "-"
            check = [x.extra["check_us"] for x in rs if "check_us" in x.extra]
            svc = _cpu(rs, t.service.name) if t.service is not None else (_cpu(rs, "null authz") if t.name == "N"
                                                                          else float("nan"))
            redis = _cpu(rs, "redis") if t.name in ("R", "P") else float("nan")
            rows.append([kind, t.label, f"{achieved:,.0f}", f"{_pct(lat, 50):,.0f}", f"{_pct(lat, 90):,.0f}",
                         f"{_pct(lat, 99):,.0f}", added, _authz_call(rs),
                         f"{statistics.median(check):.0f}" if check else "-",
                         "-" if math.isnan(svc) else f"{svc:.0f}", "-" if math.isnan(redis) else f"{redis:.0f}",
                         sum(x.failed for x in rs), f"{sum(x.extra.get('denied', 0) for x in rs):.0f}",
                         f"{max((x.extra['other_cpu'] for x in rs), default=0):.0%}", len(lat)])
    print()
    print(C.table(["session", "target", "ok/s", "p50 µs", "p90 µs", "p99 µs", "added vs A p50/p90/p99 µs",
                   "ext_authz call p50/p99 µs", "decide µs (mean)", "authz cpu µs/req", "redis cpu µs/req",
                   "failed", "denied", "other cpu", "samples"], rows))
    print(f"  {rate:,}/s offered; latency from the scheduled send time to the last byte, successes only (a failure "
          "stops the run);")
    print("  added = target minus A (plain Envoy) at the same percentile and kind, pooled over rounds; N is the "
          "floor of the")
    print("  ext_authz hop (config B against a do-nothing server); ext_authz call: Envoy's own timing of the Check "
          "round trip;")
    print("  decide µs: App.check from the service's histogram (median over runs); authz cpu: the ext_authz "
          "server's process,")
    print("  redis cpu: redis-server's (shared by R and P), both over the run / requests answered; other cpu: "
          f"the most any run saw outside the bench; runs above {DISTURBED:.0%} were repeated: {repeated}.")

    names = {t.name for t in targets}
    pairs = [("R", "M", "redis - memory"), *([("P", "R", "no hiredis - hiredis")] if "P" in names else [])]
    rows = []
    summary = []
    for kind in KINDS:
        for x, y, what in pairs:
            lx, ly = _lat(_pooled(results, x, kind)), _lat(_pooled(results, y, kind))
            d = [_pct(lx, q) - _pct(ly, q) for q in (50, 90, 99)]
            sx = _cpu(_pooled(results, x, kind), next(t.service.name for t in targets if t.name == x and t.service))
            sy = _cpu(_pooled(results, y, kind), next(t.service.name for t in targets if t.name == y and t.service))
            rows.append([kind, f"{x} - {y} ({what})", " / ".join(f"{v:+,.0f}" for v in d), f"x{sx / max(sy, 1e-9):.2f}"])
            summary.append(f"{kind} {x}-{y} p50/p99 {d[0]:+.0f}/{d[2]:+.0f} µs")
    print()
    print(C.table(["session", "pair", "latency difference p50/p90/p99 µs", "authz cpu/req ratio"], rows))
    print("  Same kind, same percentile, pooled over rounds. Other helpers' tests share these cores: read pairs "
          "measured in the same")
    print("  rounds, not absolute numbers across runs.")
    floor = [f"{k} N-A p50/p99 {_pct(_lat(_pooled(results, 'N', k)), 50) - _pct(_lat(_pooled(results, 'A', k)), 50):+.0f}"
             f"/{_pct(_lat(_pooled(results, 'N', k)), 99) - _pct(_lat(_pooled(results, 'A', k)), 99):+.0f} µs"
             for k in KINDS]
    failed = sum(res.failed for res in results)
    errors: dict[str, int] = {}
    for res in results:
        for e, n in res.errors.items():
            reason = re.search(r'"reason":"(\w+)"', e)       # the service's denial, without its decision id
            key = f"{res.target} {res.extra.get('kind')}: " + (f"{e[:8]} {reason.group(1)}" if reason else e)
            errors[key] = errors.get(key, 0) + n
    for e, n in sorted(errors.items(), key=lambda kv: -kv[1])[:6]:
        print(f"  failed: {n} x {e[:220]}")
    if claims_denied:
        print("  claims denied (could not be confirmed in Redis, mcp_extauthz_shared_claims_denied_total, whole run): "
              + ", ".join(f"{k} {v:.0f}" for k, v in claims_denied.items()))
    print(f"SUMMARY shared_envoy: {rate}/s; {'; '.join(summary)}; floor {'; '.join(floor)}; failed requests {failed}, claims denied "
          f"{sum(claims_denied.values()):.0f}")
    return 0
