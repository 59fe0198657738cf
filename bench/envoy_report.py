"""The tables of through_envoy.py: per target and rate, the added latency B - A with its split into
the transport floor N - A and the service's share B - N, CPU per request, and Envoy's own phases."""

from __future__ import annotations

import statistics
from typing import Any

import common as C
from envoy_load import LoadResult
from envoy_procs import DISTURBED, Target


def report(results: list[LoadResult], rates: list[int], targets: list[Target], stats: dict[str, int],
           stats_n: dict[str, int] | None, repeated: int, no_gc_log: bool) -> int:
    def pct(values: list[int], q: float, scale: float = 1e3) -> float:
        return C.percentile(values, q) / scale

    rows: list[list[Any]] = []
    pooled: dict[tuple[str, int], list[int]] = {}
    for rate in rates:
        for t in targets:
            rs = [x for x in results if x.target == t.name and x.rate == rate]
            lat = sorted(v for x in rs for v in x.lat_ns)
            lag = sorted(v for x in rs for v in x.lag_ns)
            pooled[(t.name, rate)] = lat
            n = sum(x.scheduled for x in rs)
            achieved = sum(x.ok for x in rs) / max(sum(x.scheduled for x in rs) / rate, 1e-9)
            gen_cpu = sum(x.cpu_s for x in rs) / max(sum(x.answered for x in rs), 1) * 1e6
            rows.append([f"{rate:,}/s", t.label, f"{achieved:,.0f}", f"{pct(lat, 50):,.0f}", f"{pct(lat, 90):,.0f}",
                         f"{pct(lat, 99):,.0f}", f"{pct(lat, 99.9):,.0f}", f"{lat[-1] / 1e3:,.0f}" if lat else "-",
                         sum(x.failed for x in rs), f"{pct(lag, 50):.0f}/{pct(lag, 99):.0f}", f"{gen_cpu:.0f}",
                         sum(x.new_connections for x in rs), f"{max(x.extra['other_cpu'] for x in rs):.0%}", n])
    print()
    print(C.table(["rate", "target", "ok/s", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "failed",
                   "gen lag p50/p99 µs", "gen cpu µs/req", "new conns", "other cpu", "samples"], rows))
    print("  latency: from the scheduled send time to the last byte of the answer, successes only (a failure "
          "stops the run);")
    print("  gen lag: scheduled time -> request written to the socket (the generator's own lateness, included "
          "in the latency);")
    print("  gen cpu: the load generator's CPU time per request; new conns: opened mid-run because all pooled "
          "ones were busy;")
    print(f"  other cpu: the most any run of the row saw processes outside this bench use (cores); runs above "
          f"{DISTURBED:.0%} were repeated: {repeated}.")

    names = {t.name for t in targets}
    if not {"A", "B"} <= names:
        parts = [f"{t.name} {rate}/s p50 {pct(pooled[(t.name, rate)], 50):.0f}/p99 {pct(pooled[(t.name, rate)], 99):.0f} µs"
                 for rate in rates for t in targets]
        print(f"SUMMARY through_envoy: {'; '.join(parts)} (no A and B in --targets: no added latency)")
        return 0

    def cpu_per_req(target: str, proc: str, rate: int) -> float:
        """`proc`'s CPU µs per request answered over `target`'s runs at `rate`."""
        xs = [x for x in results if x.target == target and x.rate == rate]
        return sum(x.extra["cpu"].get(proc, 0.0) for x in xs) / max(sum(x.answered for x in xs), 1) * 1e6

    def b_minus_p99_by_round(other: str, rate: int) -> list[float]:
        """B's p99 minus `other`'s in the same round, for each round at `rate`."""
        out = []
        for x in results:
            if x.target == "B" and x.rate == rate:
                y = next(y for y in results if y.target == other and y.rate == rate and y.round == x.round)
                out.append(pct(sorted(x.lat_ns), 99) - pct(sorted(y.lat_ns), 99))
        return out

    with_n = "N" in names
    # Added latency: B - A per percentile (pooled over rounds), and per round for the spread.
    rows = []
    added: dict[int, tuple[float, float, float]] = {}
    for rate in rates:
        la, lb = pooled[("A", rate)], pooled[("B", rate)]
        d = tuple(pct(lb, q) - pct(la, q) for q in (50, 90, 99))
        added[rate] = d  # type: ignore[assignment]
        per_round = b_minus_p99_by_round("A", rate)
        bs = [x for x in results if x.target == "B" and x.rate == rate]
        check_us = statistics.median(x.extra.get("check_us", float("nan")) for x in bs)
        svc_cpu, env_b_cpu = cpu_per_req("B", "extauthz", rate), cpu_per_req("B", "envoy B", rate)
        env_a_cpu = cpu_per_req("A", "envoy A", rate)
        gen2 = [ms for x in bs for ms in x.extra.get("gc", {}).get(2, [])]
        gen1 = [ms for x in bs for ms in x.extra.get("gc", {}).get(1, [])]
        gcs = (f"{len(gen2)} / {max(gen2):.0f}" if gen2 else "0 / -") + (f"  ({max(gen1):.1f})" if gen1 else "")
        if not gen1 and not gen2:
            gcs = "none logged"       # e.g. --workers: the hook runs in the supervisor, not in the workers
        row = [f"{rate:,}/s", f"+{d[0]:,.0f}", f"+{d[1]:,.0f}", f"+{d[2]:,.0f}",
               f"{min(per_round):,.0f} .. {max(per_round):,.0f}", f"{check_us:.0f}", f"{svc_cpu:.0f}",
               f"{env_a_cpu:.0f} / {env_b_cpu:.0f}", gcs if not no_gc_log else "-"]
        if with_n:          # the null server's CPU next to the service's; Envoy N's between A's and B's
            row[7:8] = [f"{cpu_per_req('N', 'null authz', rate):.0f}",
                        f"{env_a_cpu:.0f} / {cpu_per_req('N', 'envoy N', rate):.0f} / {env_b_cpu:.0f}"]
        rows.append(row)
    print()
    print(C.table(["rate", "added p50 µs", "added p90 µs", "added p99 µs", "added p99 per round",
                   "decide µs (mean)", "extauthz cpu µs/req",
                   *(["null authz cpu µs/req", "envoy cpu µs/req A / N / B"] if with_n else
                     ["envoy cpu µs/req A / B"]),
                   "service gen2 GCs / max ms (gen1 max)"], rows))
    print("  added = B minus A at the same percentile (pooled over rounds); decide µs: App.check time from the "
          "service's")
    print("  histogram sum/count; cpu µs/req: process CPU time (all threads) over the run / requests answered;")
    print("  service GCs: full (gen2) collections in the service during B's runs at that rate, and the longest pause:")
    print("  every Check waits while one runs, so a pause of P ms at R req/s delays about P*R/1000 requests.")

    # The split: N - A (the ext_authz hop with nothing behind it) + B - N (the service's work) = B - A.
    split: dict[int, tuple[tuple[float, ...], tuple[float, ...]]] = {}
    if with_n:
        rows = []
        for rate in rates:
            la, ln, lb = pooled[("A", rate)], pooled[("N", rate)], pooled[("B", rate)]
            floor = tuple(pct(ln, q) - pct(la, q) for q in (50, 90, 99))
            own = tuple(pct(lb, q) - pct(ln, q) for q in (50, 90, 99))
            split[rate] = (floor, own)
            per_round = b_minus_p99_by_round("N", rate)
            rows.append([f"{rate:,}/s", " / ".join(f"{v:+,.0f}" for v in floor), " / ".join(f"{v:+,.0f}" for v in own),
                         f"{min(per_round):,.0f} .. {max(per_round):,.0f}"])
        print()
        print(C.table(["rate", "floor N-A p50/p90/p99 µs", "service B-N p50/p90/p99 µs", "B-N p99 per round"], rows))
        print("  floor = N minus A: jwt_authn, body buffering and the gRPC Check to a do-nothing server (grpc.aio +")
        print("  uvloop, empty OK); service = B minus N: what extauthz's own work adds. Same percentile, pooled over")
        print("  rounds, so floor + service = added at each percentile.")

    phases_rows = []
    for rate in rates:
        for t in targets:
            if t.proc is None:
                continue
            ph: dict[str, list[int]] = {}
            for x in results:
                if x.target == t.name and x.rate == rate:
                    for k, v in x.extra.get("phases", {}).items():
                        ph.setdefault(k, []).extend(v)
            if not ph or not ph.get("total"):
                continue
            cells = [f"{rate:,}/s", t.label]
            for k in ("total", "before_upstream", "upstream", "ext_authz"):
                # Without ext_authz buffering the body, A starts the upstream request before the downstream
                # one has ended, so "before upstream" only means something for N and B.
                s = sorted(ph.get(k, [])) if (k == "total" or k == "upstream" or t.name in ("B", "N")) else []
                cells.append(f"{C.percentile(s, 50):,.0f} / {C.percentile(s, 99):,.0f}" if s else "-")
            phases_rows.append(cells)
    if phases_rows:
        print()
        print(C.table(["rate", "target", "in Envoy p50/p99 µs", "before upstream", "upstream (rx->tx end)",
                       "ext_authz call"], phases_rows))
        print("  From Envoy's access log (µs, its own clocks): in Envoy = first byte in -> last byte out; before "
              "upstream =")
        print("  request received -> first byte to the upstream (jwt_authn + ext_authz + routing); upstream = "
              "first byte to the")
        print("  upstream -> last byte back; ext_authz call = the gRPC Check round trip as ext_authz timed it.")
    print(f"  Envoy B over the whole run: ext_authz ok {stats.get('http.mcp.ext_authz.ok', 0):,}, denied "
          f"{stats.get('http.mcp.ext_authz.denied', 0):,}, error {stats.get('http.mcp.ext_authz.error', 0):,}; "
          f"jwt_authn allowed {stats.get('http.mcp.jwt_authn.allowed', 0):,}, denied "
          f"{stats.get('http.mcp.jwt_authn.denied', 0):,} (the setup checks account for the denials)")
    if stats_n is not None:
        print(f"  Envoy N over the whole run: ext_authz ok {stats_n.get('http.mcp.ext_authz.ok', 0):,}, denied "
              f"{stats_n.get('http.mcp.ext_authz.denied', 0):,}, error {stats_n.get('http.mcp.ext_authz.error', 0):,}")

    failed = sum(x.failed for x in results)
    parts = [f"{rate}/s +{added[rate][0]:.0f}/+{added[rate][2]:.0f} µs" for rate in rates]
    tail = ""
    if split:
        tail = ("; transport floor N-A p50/p99 "
                + ", ".join(f"{rate}/s {f[0]:+.0f}/{f[2]:+.0f} µs" for rate, (f, _) in split.items())
                + "; service B-N p50/p99 "
                + ", ".join(f"{rate}/s {o[0]:+.0f}/{o[2]:+.0f} µs" for rate, (_, o) in split.items()))
    print(f"SUMMARY through_envoy: added latency B-A p50/p99 {'; '.join(parts)}; failed requests {failed} "
          f"(reference: added p99 <= 2,000 µs at 1,000/s){tail}")
    return 0
