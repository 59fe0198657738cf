"""Latency through real Envoy: MCP tools/call at fixed request rates, without and with extauthz.

Starts, in the same run: bench/upstream_echo.py (a tiny HTTP/1.1 upstream answering a fixed
JSON-RPC result), `extauthz serve` (bench/policy.yaml + the pinned 1,000-tool spec, decision log to
/dev/null), bench/null_server.py (a do-nothing ext_authz server), and three real Envoys in front of
the same upstream:

* **A (no authz)**: a plain router: the same listener and HTTP connection manager settings as B,
  but no jwt_authn, ext_authz, ext_proc or header stripping (derived from B's config in this script).
* **N (do-nothing authz)**: B's config exactly (jwt_authn, ext_authz, ext_proc, routes, access
  log), except that its `extauthz` cluster points at null_server.py: grpc.aio + uvloop like the
  service, answering every Check with an empty OK, so Envoy forwards the request unchanged. N - A
  is the floor of the ext_authz hop itself (body buffering, gRPC to a Python server and back);
  B - N is what the service's own work adds on top. The two add up to B - A at every percentile.
* **B (extauthz)**: our full config, `extauthz.demo.envoy_config.render`, with the JWKS of a runtime
  `TokenIssuer`; every request carries the same RS256 JWT it minted (a support agent), MCP
  2025-11-25 style: no session, no 2026-07-28 routing headers. The call is a small allowed
  `billing_*`/`crm_*`/`orders_*` tools/call, checked against its schema and the `customer_ids` constraint, of a tool
  the inventory does not classify as sensitive (`--sensitive-call`: one it does; then the caller
  soon has a risk score and every call of theirs is also observed over ext_proc, up to 50 a second).

Before loading, the run checks that A, N and B answer from the upstream (and that N's ext_authz
really called the null server), that B answers 401 without a token and denies an `admin_*` call
(sent as a second caller, so the measured one keeps a risk score of 0): B really enforces. After
every B run, the service's /metrics must show no denials and at least as many allows as the
generator counted successes. The null server and Envoy N are only started when
N is in --targets.

Load is open-loop at a fixed rate (default 250, 500, 1000 req/s; envoy_load.py): requests are
scheduled on a fixed timeline over a pool of keep-alive HTTP/1.1 connections, and latency is
measured from the *scheduled* time to the last byte of the answer (no coordinated omission). The generator's own
lateness (scheduled -> written) and CPU per request are printed, and a `direct` row (generator ->
upstream, no Envoy) shows its floor. Rounds interleave the targets (direct, A, N, B, then B, N, A,
direct, ...) at every rate. The added latency is B - A per percentile, split into the transport
floor N - A and the service's share B - N when N was measured.

Where the time goes: all Envoys write an access log with µs phase timings (%COMMON_DURATION%) and
N's and B's ext_authz emit their gRPC round-trip time (`emit_filter_state_stats`); the service is
started through gc_probe.py, a gc.callbacks hook that logs its gen1/gen2 collection pauses
(`--no-gc-log`: plain `python -m extauthz.cli serve`); per-process CPU (the service's and the null
server's too) comes from /proc.

Modules: envoy_load.py (the generator), envoy_procs.py (processes, counters, quiet machine),
envoy_variants.py (configs A, B, N, the policy and call), envoy_stack.py (what gets started),
envoy_runs.py (interleaved rounds), envoy_report.py (the tables), gc_probe.py, pinning.py.

Shared machines: before each run the bench waits (up to --max-wait) until processes outside it use
less than 10% of a core, and repeats a run during which they used more than 25% (--retries).
No CPU pinning by default (see --pin and pinning.py: on 2 cores, Envoy and the service must not share one;
the null server takes the service's place).

    python bench/through_envoy.py [--quick] [--rates 250,500,1000] [--rounds N] [--duration S]
                                  [--targets direct,A,N,B] [--pin none|auto|ROLE=CORE,...]
                                  [--service-args '--workers 2']
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common as C
from envoy_load import MARKER, LoadResult, Request, http_request
from envoy_procs import (
    DISTURBED,
    EXT_AUTHZ,
    Proc,
    Target,
    envoy_counters,
    envoy_version,
    post,
)
from envoy_report import report
from envoy_runs import Plan, run_rounds
from envoy_stack import (
    envoy_proc,
    find_envoy,
    new_loop,
    null_proc,
    service_proc,
    tokens,
    upstream_proc,
    wait_envoy,
    wait_null,
    wait_service,
    wait_upstream,
)
from envoy_variants import envoy_configs, write_policy
from pinning import layout, pin_note

from extauthz.demo.tokens import TokenIssuer


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s per rate and target (a smoke run)")
    ap.add_argument("--rates", default="250,500,1000", help="requests per second, comma-separated")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, quick 1)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per run (default 6, quick 2)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per run (default 1, quick 0.5)")
    ap.add_argument("--connections", type=int, default=16,
                    help="keep-alive connections opened before each run (more are opened if all are busy)")
    ap.add_argument("--envoy-concurrency", type=int, default=None,
                    help="Envoy worker threads (default: Envoy's own, one per core it may use)")
    ap.add_argument("--no-direct", action="store_true", help="skip the generator -> upstream row (no Envoy)")
    ap.add_argument("--no-access-log", action="store_true",
                    help="no Envoy access log (then no per-phase timings from Envoy)")
    ap.add_argument("--pin", default="none",
                    help="'none' (default), 'auto' (load generator, upstream and service on the first core, Envoys on "
                         "the last), or role=core pairs, e.g. load=0,upstream=0,service=0,envoy=1")
    ap.add_argument("--targets", default="direct,A,N,B",
                    help="which of direct (no Envoy), A (Envoy, no authz), N (B's config, do-nothing authz server), "
                         "B (Envoy + extauthz) to load; without N, the null server and Envoy N are not started")
    ap.add_argument("--link-call", action="store_true",
                    help="the upstream's results carry a resource_link: every B call is read on the learn route")
    ap.add_argument("--sensitive-call", action="store_true",
                    help="call a tool classified as sensitive: the caller gets a risk score, and every call of theirs "
                         "is then observed over ext_proc (up to 50/s); default: a tool that is not")
    ap.add_argument("--service-args", default="", help="extra arguments for `extauthz serve`, e.g. '--workers 2'")
    ap.add_argument("--no-gc-log", action="store_true",
                    help="start the service as plain `python -m extauthz.cli serve`, without the hook that logs "
                         "its gen1/gen2 garbage collections")
    ap.add_argument("--retries", type=int, default=2,
                    help=f"repeat a run during which other processes used more than {DISTURBED:.0%}% of a core "
                         "(default 2 times)")
    ap.add_argument("--max-wait", type=float, default=60.0,
                    help="before each run, wait up to this many seconds for other processes to go quiet")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    return ap.parse_args(argv)


@dataclass
class Stack:
    """What one run started: the processes, the targets, and the ports the setup checks use."""
    procs: list[Proc] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    service: Proc | None = None
    admin: dict[str, int] = field(default_factory=dict)        # Envoy admin port per target name
    listen: dict[str, int] = field(default_factory=dict)       # Envoy listener per target name


def start(a: argparse.Namespace, tmp: Path, pins: dict[str, int | None], envoy_bin: str, policy: Path,
          issuer: TokenIssuer, wanted: set[str], stack: Stack) -> None:
    """Write the configs, start every process `wanted` needs (into `stack`, so a failure stops them) and wait."""
    with_n = "N" in wanted            # the null server and Envoy N cost a start-up and CPU: only when loaded
    up_port, grpc_port, svc_admin = C.free_port(), C.free_port(), C.free_port()
    la, lb, aa, ab = C.free_port(), C.free_port(), C.free_port(), C.free_port()
    ln, an, null_port = (C.free_port(), C.free_port(), C.free_port()) if with_n else (None, None, None)
    access_dir = None if a.no_access_log else tmp
    cfg_a, cfg_b, cfg_n = envoy_configs(listen_a=la, listen_b=lb, admin_a=aa, admin_b=ab, upstream_port=up_port,
                                        authz_port=grpc_port, jwks_json=issuer.jwks_json(),
                                        access_log_dir=access_dir, listen_n=ln, admin_n=an, null_port=null_port)
    for name, cfg in (("a", cfg_a), ("b", cfg_b), ("n", cfg_n)):
        if cfg is not None:
            (tmp / f"envoy-{name}.yaml").write_text(cfg)
    upstream = upstream_proc(tmp, up_port, pins, a.link_call)
    service = service_proc("extauthz", tmp, policy, grpc_port, svc_admin, pins, gc_log=not a.no_gc_log,
                           extra_args=a.service_args)
    env_a = envoy_proc("envoy A", envoy_bin, tmp / "envoy-a.yaml", pins, a.envoy_concurrency)
    env_b = envoy_proc("envoy B", envoy_bin, tmp / "envoy-b.yaml", pins, a.envoy_concurrency)
    stack.procs += [upstream, service, env_a, env_b]
    envoys = [(env_a, aa), (env_b, ab)]
    null = env_n = None
    if with_n and an is not None:
        null = null_proc(tmp, null_port or 0, pins)
        env_n = envoy_proc("envoy N", envoy_bin, tmp / "envoy-n.yaml", pins, a.envoy_concurrency)
        stack.procs += [null, env_n]
        envoys.append((env_n, an))
    for p in stack.procs:
        p.start()
    wait_upstream(upstream, up_port)
    wait_service(service, svc_admin)
    if null is not None:
        wait_null(null)
    for env, admin in envoys:
        wait_envoy(env, admin)
    stack.service = service
    stack.admin = {"A": aa, "B": ab, **({"N": an} if an is not None else {})}
    stack.listen = {"A": la, "B": lb, **({"N": ln} if ln is not None else {})}
    direct = Target("direct", "direct (no Envoy)", up_port, None)
    ta = Target("A", "A Envoy, no authz", la, env_a, aa)
    tb = Target("B", "B Envoy + extauthz", lb, env_b, ab, authz=True, service=service, service_admin=svc_admin)
    tn = Target("N", "N Envoy + do-nothing authz", ln, env_n, an, authz=True) if ln is not None else None
    stack.targets = [t for t in (direct, ta, tn, tb) if t is not None and t.name in wanted]


def check_setup(stack: Stack, body: bytes, token: str, prober: str, admin_call: bytes) -> None:
    """Correctness first: A passes, B allows the bench call, B really enforces, N really calls the null server."""
    lb, service = stack.listen["B"], stack.service
    checks = [("A", stack.listen["A"], token, 200, True), ("B", lb, token, 200, True),
              ("B without a token", lb, None, 401, False)]
    for what, port, tok, status, echoed in checks:
        st, hdrs, rbody = post(port, body, tok)
        if st != status or (MARKER in rbody) != echoed:
            raise SystemExit(f"bench setup error: {what}: HTTP {st} {hdrs.get('x-mcp-extauthz-reason', '')} "
                             f"{rbody[:300]!r}; expected {status} {'from the upstream' if echoed else 'from extauthz'}"
                             f"\n--- extauthz ---\n{service.tail() if service else ''}")
    st, hdrs, rbody = post(lb, admin_call, prober)
    if MARKER in rbody or hdrs.get("x-mcp-extauthz-reason") != "not_allowed":
        raise SystemExit(f"bench setup error: B let a denied call through: HTTP {st} {hdrs} {rbody[:300]!r}")
    if "N" in stack.listen:
        # N passes the bench call, and really through the null server's Check (else N would be just A).
        an = stack.admin["N"]
        n0 = envoy_counters(an, EXT_AUTHZ)["http.mcp.ext_authz.ok"]
        st, hdrs, rbody = post(stack.listen["N"], body, token)
        n1 = envoy_counters(an, EXT_AUTHZ)["http.mcp.ext_authz.ok"]
        if st != 200 or MARKER not in rbody or n1 != n0 + 1:
            raise SystemExit(f"bench setup error: N: HTTP {st} {rbody[:300]!r}, ext_authz ok {n0} -> {n1}; "
                             f"expected 200 from the upstream after one OK Check from the null server")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    rates = [int(r) for r in a.rates.split(",") if r.strip()]
    plan = Plan(rates=rates, rounds=a.rounds or (1 if a.quick else 3),
                warmup=a.warmup if a.warmup is not None else (0.5 if a.quick else 1.0),
                duration=a.duration or (2.0 if a.quick else 6.0), connections=a.connections,
                retries=a.retries, max_wait=a.max_wait, access_dir=None)
    envoy_bin = find_envoy()
    pins = layout(a.pin)
    wanted = {x.strip() for x in a.targets.split(",") if x.strip()} - ({"direct"} if a.no_direct else set())
    if not wanted & {"direct", "A", "N", "B"}:
        raise SystemExit("--targets: none of direct, A, N, B")
    loop, loop_name = new_loop()
    tmp = Path(tempfile.mkdtemp(prefix="extauthz-bench-envoy-"))
    plan.access_dir = None if a.no_access_log else tmp
    stack = Stack()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    results: list[LoadResult] = []
    try:
        policy, tool, extra = write_policy(tmp, a.sensitive_call)
        issuer = TokenIssuer()
        token, prober = tokens(issuer)
        body = C.call_body(tool, extra["args"])
        start(a, tmp, pins, envoy_bin, policy, issuer, wanted, stack)
        admin_tool = extra["admin"]
        check_setup(stack, body, token, prober, C.call_body(admin_tool["name"], C.small_args(admin_tool)))
        fixed = {t.name: http_request(t.port, body, token) for t in stack.targets}
        requests: dict[str, Request] = dict(fixed)
        if pins["load"] is not None:
            os.sched_setaffinity(0, {pins["load"]})
        print(f"through Envoy (extauthz {C.revision()}, envoy {envoy_version(envoy_bin)}): tools/call {tool}"
              f"{' (sensitive: its caller is observed)' if a.sensitive_call else ''}"
              f"{' (returns a resource link: read on the learn route)' if a.link_call else ''} "
              f"({len(next(iter(fixed.values())))} B request, {len(body)} B body), open-loop {loop_name} generator, "
              f"{a.connections} keep-alive connections; rates {', '.join(map(str, rates))}/s; {plan.rounds} rounds x "
              f"{plan.duration:g}s (+{plan.warmup:g}s warm-up) per rate and target; {pin_note(pins)}; "
              f"Envoy {'--concurrency ' + str(a.envoy_concurrency) if a.envoy_concurrency else 'workers: one per core it may use'}"
              f"{'; extauthz serve ' + a.service_args if a.service_args else ''}"
              f"{', access log on (all Envoys)' if plan.access_dir else ''}", flush=True)
        results, repeated = run_rounds(loop, stack.targets, requests, plan, stack.procs)
        stats = envoy_counters(stack.admin["B"], EXT_AUTHZ)
        stats_n = envoy_counters(stack.admin["N"], EXT_AUTHZ) if "N" in stack.admin else None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for p in reversed(stack.procs):
            p.stop()
        signal.signal(signal.SIGTERM, previous)
        loop.close()
        if a.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return report(results, rates, stack.targets, stats, stats_n, repeated, a.no_gc_log)


if __name__ == "__main__":
    sys.exit(main())
