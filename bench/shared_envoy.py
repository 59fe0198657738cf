"""Shared state through real Envoy: `extauthz serve` in memory vs `--redis`, at a fixed rate (1,000/s).

Starts, in one run: bench/upstream_echo.py, a real redis-server (extauthz.shared.testing.
RedisProcess), bench/null_server.py, three or four `extauthz serve` and one Envoy per target, all
Envoys with through_envoy.py's config B (envoy_variants.repoint: only the `extauthz` cluster's
endpoint differs):

  A   Envoy as a plain router (no jwt_authn, ext_authz, ext_proc): the base of "added"
  N   config B against the do-nothing ext_authz server: the floor of the ext_authz hop
  M   config B against `extauthz serve` (memory: no shared state)
  R   config B against `extauthz serve --redis URL` (redis-py with hiredis, when it is installed)
  P   R with hiredis hidden (gc_probe.py's BENCH_HIDE_MODULES=hiredis: redis-py's Python parser)

Two kinds of traffic, the same small allowed tools/call of one caller (a support agent's JWT):

  known  one of 64 session ids the service already holds (claimed during the setup)
  new    a session id never seen, on every request: the first call of a new session; with Redis
         that is the claim round trip (one pipelined EVAL + HGETALL) before the Check answers

Rounds interleave kinds and targets (known: A N M R P, new: P R M N A, then the reverse), open loop
at --rate with envoy_load.py's generator. Added = target - A at the same percentile and kind;
the ext_authz call is Envoy's own timing of the Check round trip (its access log). After every run
the service behind the target must have allowed at least every success; denials and failed
requests are counted and printed, not fatal here: a claim Redis cannot confirm fails closed, and
how often that happens under load is one of the results. R and P use
their own key prefix in one redis-server, so they never see each other's sessions.

    python bench/shared_envoy.py [--quick] [--rate 1000] [--rounds N] [--duration S] [--no-hiredis-row]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common as C
import yaml
from envoy_load import MARKER, LoadResult, Request, http_request
from envoy_procs import (
    DISTURBED,
    Proc,
    Target,
    decisions,
    envoy_version,
    http_get,
    post,
)
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
from envoy_variants import envoy_configs, repoint, write_policy
from gc_probe import HIDE_ENV, PARSER_LINE
from pinning import layout, pin_note
from shared_envoy_report import report

from extauthz.demo.tokens import TokenIssuer
from extauthz.shared.testing import RedisProcess

KNOWN_POOL = 64
SID_SLOT = "\x00sid\x00"          # where each request's session id goes in its pre-built bytes


class RedisProc(Proc):
    """The redis-server of extauthz.shared.testing, seen as one of the bench's processes (CPU, liveness)."""

    def __init__(self, tmp: Path) -> None:
        super().__init__("redis", ["redis-server"], tmp / "redis.log")
        self.redis = RedisProcess()

    def start(self) -> None:
        self.redis.start()
        self.proc = self.redis.proc
        self.cmd = [self.redis.binary, "--port", str(self.redis.port)]

    def cpu(self) -> float:
        if self.proc is None:
            return float("nan")
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join((self.redis.dir / "log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        self.redis.close()


@dataclass
class Stack:
    procs: list[Proc] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    hiredis: bool = False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s per kind and target (a smoke run)")
    ap.add_argument("--rate", type=int, default=1000, help="requests per second (default 1000)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, quick 1)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per run (default 5, quick 2)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per run (default 1, quick 0.5)")
    ap.add_argument("--connections", type=int, default=16, help="keep-alive connections opened before each run")
    ap.add_argument("--pin", default="none", help="as through_envoy.py --pin (pinning.py)")
    ap.add_argument("--no-hiredis-row", action="store_true", help="no P target (redis-py without hiredis)")
    ap.add_argument("--retries", type=int, default=2,
                    help=f"repeat a run during which other processes used more than {DISTURBED:.0%}% of a core")
    ap.add_argument("--max-wait", type=float, default=60.0,
                    help="before each run, wait up to this many seconds for other processes to go quiet")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    return ap.parse_args(argv)


def hiredis_installed() -> bool:
    try:
        import hiredis  # noqa: F401
    except ImportError:
        return False
    return True


def start(a: argparse.Namespace, tmp: Path, pins: dict[str, int | None], envoy_bin: str, policy: Path,
          issuer: TokenIssuer, stack: Stack) -> None:
    """Every process, into `stack` as soon as it exists (so a failure stops what was started)."""
    stack.hiredis = hiredis_installed() and not a.no_hiredis_row
    up_port, null_port = C.free_port(), C.free_port()
    listen = {n: C.free_port() for n in "ANMRP"}
    admin = {n: C.free_port() for n in "ANMRP"}
    grpc = {n: C.free_port() for n in "MRP"}
    svc_admin = {n: C.free_port() for n in "MRP"}
    cfg_a, cfg_b, _ = envoy_configs(listen_a=listen["A"], listen_b=listen["M"], admin_a=admin["A"],
                                    admin_b=admin["M"], upstream_port=up_port, authz_port=grpc["M"],
                                    jwks_json=issuer.jwks_json(), access_log_dir=tmp)
    (tmp / "envoy-a.yaml").write_text(cfg_a)
    authz_port = {"N": null_port, **grpc}
    for n in "NMRP":
        doc = repoint(cfg_b, listen=listen[n], admin=admin[n], authz_port=authz_port[n],
                      access_log=tmp / f"access-{n.lower()}.log")
        (tmp / f"envoy-{n.lower()}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    redis = RedisProc(tmp)
    stack.procs.append(redis)
    redis.start()
    upstream = upstream_proc(tmp, up_port, pins)
    null = null_proc(tmp, null_port, pins)
    services = {
        "M": service_proc("extauthz", tmp, policy, grpc["M"], svc_admin["M"], pins),
        "R": service_proc("extauthz+redis", tmp, policy, grpc["R"], svc_admin["R"], pins,
                          extra_args=f"--redis {redis.redis.url} --redis-prefix bench-r"),
    }
    if stack.hiredis:
        services["P"] = service_proc("extauthz+redis, no hiredis", tmp, policy, grpc["P"], svc_admin["P"], pins,
                                     extra_args=f"--redis {redis.redis.url} --redis-prefix bench-p",
                                     env={HIDE_ENV: "hiredis"})
    names = ["A", "N", *services]
    envoys = {n: envoy_proc(f"envoy {n}", envoy_bin, tmp / f"envoy-{n.lower()}.yaml", pins, None) for n in names}
    stack.procs += [upstream, null, *services.values(), *envoys.values()]
    for p in stack.procs[1:]:
        p.start()
    wait_upstream(upstream, up_port)
    wait_null(null)
    for n, svc in services.items():
        wait_service(svc, svc_admin[n])
    for n, env in envoys.items():
        wait_envoy(env, admin[n])
    for n, svc in services.items():                      # which reply parser redis-py really chose
        want = {"M": None, "R": "hiredis=True" if hiredis_installed() else "hiredis=False", "P": "hiredis=False"}[n]
        line = next((ln for ln in svc.log_path.read_bytes().splitlines() if ln.startswith(PARSER_LINE)), b"")
        if want is not None and want.encode() not in line:
            raise SystemExit(f"bench setup error: {svc.name}: expected redis-py {want}, its log says {line!r}")
    labels = {"A": "A Envoy, no authz", "N": "N Envoy + do-nothing authz", "M": "M extauthz (memory)",
              "R": "R extauthz --redis" + (" (hiredis)" if hiredis_installed() else ""),
              "P": "P extauthz --redis, no hiredis"}
    for n in names:
        behind = services.get(n)
        stack.targets.append(Target(n, labels[n], listen[n], envoys[n], admin[n], authz=n != "A", service=behind,
                                    service_admin=svc_admin[n] if behind is not None else None))


def session_requests(t: Target, body: bytes, token: str, kind: str) -> Request:
    """known: cycles over KNOWN_POOL ids claimed in the setup; new: a fresh id on every call (retries too)."""
    head, tail = http_request(t.port, body, token, SID_SLOT).split(SID_SLOT.encode())
    if kind == "known":
        pool = [head + f"known-{t.name}-{k:03d}".encode() + tail for k in range(KNOWN_POOL)]
        return lambda i: pool[i % KNOWN_POOL]
    counter = itertools.count()
    return lambda _i: head + f"new-{t.name}-{next(counter):08d}".encode() + tail


def check_setup(stack: Stack, body: bytes, token: str, prober: str, admin_call: bytes) -> None:
    """Each target answers the bench call from the upstream; each service denies a forbidden call and holds
    the known sessions (claimed here, through its own Envoy, so they are bound as in the measured runs)."""
    for t in stack.targets:
        for k in range(KNOWN_POOL):
            st, hdrs, rbody = post(t.port, body, token, f"known-{t.name}-{k:03d}")
            if st != 200 or MARKER not in rbody:
                raise SystemExit(f"bench setup error: {t.label}: HTTP {st} {hdrs.get('x-mcp-extauthz-reason', '')} "
                                 f"{rbody[:300]!r}; expected 200 from the upstream"
                                 + (f"\n--- {t.service.name} ---\n{t.service.tail()}" if t.service else ""))
        if t.service_admin:
            st, hdrs, rbody = post(t.port, admin_call, prober, f"probe-{t.name}")
            if MARKER in rbody or hdrs.get("x-mcp-extauthz-reason") != "not_allowed":
                raise SystemExit(f"bench setup error: {t.label} let a denied call through: HTTP {st} {hdrs}")
            d = decisions(t.service_admin)
            if d["allow"] < KNOWN_POOL:
                raise SystemExit(f"bench setup error: {t.label}: /metrics shows {d['allow']:.0f} allows")


def shared_counter(admin_port: int, name: str) -> float:
    _, text = http_get(admin_port, "/metrics")
    for line in text.decode().splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    plan = Plan(rates=[a.rate], rounds=1, warmup=a.warmup if a.warmup is not None else (0.5 if a.quick else 1.0),
                duration=a.duration or (2.0 if a.quick else 5.0), connections=a.connections, retries=a.retries,
                max_wait=a.max_wait, access_dir=None, strict=False)
    rounds = a.rounds or (1 if a.quick else 3)
    envoy_bin = find_envoy()
    pins = layout(a.pin)
    loop, loop_name = new_loop()
    tmp = Path(tempfile.mkdtemp(prefix="extauthz-bench-shared-"))
    plan.access_dir = tmp
    stack = Stack()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    results: list[LoadResult] = []
    repeated = 0
    claims_denied: dict[str, float] = {}
    try:
        policy, tool, extra = write_policy(tmp)
        issuer = TokenIssuer()
        token, prober = tokens(issuer)
        body = C.call_body(tool, extra["args"])
        start(a, tmp, pins, envoy_bin, policy, issuer, stack)
        admin_tool = extra["admin"]
        check_setup(stack, body, token, prober, C.call_body(admin_tool["name"], C.small_args(admin_tool)))
        if pins["load"] is not None:
            os.sched_setaffinity(0, {pins["load"]})
        requests = {kind: {t.name: session_requests(t, body, token, kind) for t in stack.targets}
                    for kind in ("known", "new")}
        print(f"shared state through Envoy (extauthz {C.revision()}, envoy {envoy_version(envoy_bin)}, "
              f"{'hiredis installed' if hiredis_installed() else 'no hiredis'}): tools/call {tool}, "
              f"{a.rate:,}/s open loop ({loop_name}), {rounds} rounds x {plan.duration:g}s (+{plan.warmup:g}s warm-up) "
              f"per kind and target; targets {', '.join(t.name for t in stack.targets)}; {pin_note(pins)}",
              flush=True)
        offsets: dict[str, dict[str, int]] = {}
        for r in range(rounds):
            kinds = ("known", "new") if r % 2 == 0 else ("new", "known")
            for j, kind in enumerate(kinds):
                order = stack.targets if (r + j) % 2 == 0 else stack.targets[::-1]
                res, rep = run_rounds(loop, order, requests[kind], plan, stack.procs, offsets, first_round=r,
                                      tag=f"{kind:<5} ")
                for x in res:
                    x.extra["kind"] = kind
                results += res
                repeated += rep
        claims_denied = {t.name: shared_counter(t.service_admin, "mcp_extauthz_shared_claims_denied_total")
                         for t in stack.targets if t.name in ("R", "P") and t.service_admin}
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
    return report(results, stack.targets, a.rate, repeated, claims_denied)


if __name__ == "__main__":
    sys.exit(main())
