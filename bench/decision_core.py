"""Decision-core latency: `App.check(HttpRequest)` per request kind, with a 1,000-tool spec learned.

What is timed: one `app.check(http)` call (decide + session and risk bookkeeping), measured with
time.perf_counter_ns around each call, gc left on, inside a running event loop as in the service.
Metrics, inventory and the decision-log line are recorded after the answer, in a batch
(App.record_pending): that cost is timed on its own and shown as "recorded after". The HttpRequest is built
once per distinct request by converting a real CheckRequest (extauthz.envoy.convert), so it is
exactly what the gRPC servicer would pass in. Validators are compiled during warm-up.

Noise handling: kinds are run in interleaved rounds (every kind a batch per round), so a noisy
neighbour slows all kinds alike instead of one. Percentiles are over all samples of all rounds.

    python bench/decision_core.py [--quick] [--rounds N] [--budget SECONDS] [--profile KIND]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import common as C

from extauthz.app import App
from extauthz.envoy.convert import to_http_request
from extauthz.envoy.wire import encode_check_response
from extauthz.mcp.request import HttpRequest


@dataclass
class Kind:
    key: str
    label: str
    expect: str                      # the reason every request of this kind must get
    bodies: list[bytes]
    app: str = "mem"                 # which App: "mem" (log -> BytesIO) or "devnull"
    full_path: bool = False          # time the whole servicer path, proto bytes in -> bytes out
    samples: list[int] = field(default_factory=list)
    per_batch: int = 0
    recorded_ns: int = 0             # App.record_pending after each batch (after the answers, untimed in samples)
    recorded_n: int = 0


def build_kinds(tools: list[dict[str, Any]]) -> list[Kind]:
    policy_text = C.POLICY.read_text()
    by = {shape: [t for t in ts if t["name"] not in policy_text]      # skip the exact-name exceptions
          for shape, ts in C.tools_by_shape(tools).items()}
    allowed = ("crm_", "billing_", "orders_", "inventory_", "tickets_", "docs_")
    small = [t for t in by["small"] if t["name"].startswith(allowed)][:32]
    nested = [t for t in by["nested"] if t["name"].startswith(allowed)][:16]
    records = [t for t in by["records"] if t["name"].startswith(allowed)][:4]
    text = [t for t in by["text"] if t["name"].startswith(allowed)][:4]
    admin = [t for t in by["small"] if t["name"].startswith("admin_")][:32]
    rec64, txt64 = C.records_args(), C.text_args()
    small_bodies = [C.call_body(t["name"], C.small_args(t), i) for i, t in enumerate(small)]
    return [
        Kind("list", "tools/list (pass-through)", "allowed", [C.rpc("tools/list", {}, i) for i in range(8)]),
        Kind("small_call", "tools/call small", "allowed", small_bodies),
        Kind("nested_call", "tools/call nested $defs", "allowed",
             [C.call_body(t["name"], C.nested_args(), i) for i, t in enumerate(nested)]),
        Kind("call_64k_records", "tools/call 64 KiB (~400 nested records)", "allowed",
             [C.call_body(t["name"], rec64, i) for i, t in enumerate(records)]),
        Kind("call_64k_text", "tools/call 64 KiB (one string)", "allowed",
             [C.call_body(t["name"], txt64, i) for i, t in enumerate(text)]),
        Kind("denied", "tools/call denied (not_allowed)", "not_allowed",
             [C.call_body(t["name"], C.small_args(t), i) for i, t in enumerate(admin)]),
        Kind("schema_violation", "tools/call undeclared arg (schema_violation)", "schema_violation",
             [C.call_body(t["name"], {**C.small_args(t), "include_internal_notes": True}, i)
              for i, t in enumerate(small)]),
        Kind("read_template", "resources/read via a template (12 listed)", "allowed",
             [C.rpc("resources/read", {"uri": f"crm://customers/c-{i}"}, i) for i in range(8)]),
        Kind("small_devnull", "tools/call small, log -> /dev/null", "allowed", small_bodies, app="devnull"),
        Kind("small_full", "tools/call small, whole servicer path*", "allowed", small_bodies, full_path=True),
    ]


# Templates in every shape servers publish; the reads match the last one, so all are tried.
TEMPLATES = [{"uriTemplate": t, "name": f"t{i}"} for i, t in enumerate([
    "crm://orders/{order_id}", "crm://orders/{order_id}/lines/{line}", "crm://docs/{+path}",
    "crm://files{/path*}", "crm://search{?q,lang}", "crm://kb/{path*}", "crm://tickets/{id}{.format}",
    "crm://reports/{year}/{month}", "crm://tags{;tag*}", "crm://guide{#section}", "crm://users/{user_id}",
    "crm://customers/{customer_id}"])]


def make_app(tools: list[dict[str, Any]], out: Any) -> App:
    app = App(str(C.POLICY), decision_out=out)
    app.specs.apply_page(C.SERVER, "tools", tools, first=True, last=True)
    app.specs.apply_page(C.SERVER, "resourceTemplates", TEMPLATES, first=True, last=True)
    return app


def prepare(kind: Kind, app: App) -> list[Callable[[], Any]]:
    """One zero-argument callable per distinct request; checks each decides as expected."""
    from envoy.service.auth.v3 import external_auth_pb2

    calls: list[Callable[[], Any]] = []
    for body in kind.bodies:
        raw = C.check_request(body).SerializeToString()
        http: HttpRequest = to_http_request(external_auth_pb2.CheckRequest.FromString(raw))
        d = app.check(http)
        if d.reason.value != kind.expect:
            raise SystemExit(f"bench setup error: {kind.label}: expected {kind.expect}, got "
                             f"{d.reason.value} ({d.detail})")
        if kind.full_path:
            parse, check = external_auth_pb2.CheckRequest.FromString, app.check

            def full(raw: bytes = raw) -> bytes:
                return encode_check_response(check(to_http_request(parse(raw))))
            calls.append(full)
        else:
            calls.append(lambda http=http, check=app.check: check(http))
    return calls


def run_batch(calls: list[Callable[[], Any]], n: int, out: list[int]) -> None:
    clock = time.perf_counter_ns
    m = len(calls)
    append = out.append
    for i in range(n):
        f = calls[i % m]
        t0 = clock()
        f()
        append(clock() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (3 rounds, smaller batches)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 12, quick 3)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds per kind per round (default 0.4, quick 0.12)")
    ap.add_argument("--profile", metavar="KIND", default=None,
                    help="instead of timing, cProfile KIND (e.g. small_call) and print the top functions")
    a = ap.parse_args(argv)
    rounds = a.rounds or (3 if a.quick else 12)
    budget = a.budget or (0.12 if a.quick else 0.4)

    tools = C.make_tools()
    mem = io.BytesIO()
    devnull = open(os.devnull, "wb")     # buffered, like the service's sys.stdout.buffer
    apps = {"mem": make_app(tools, mem), "devnull": make_app(tools, devnull)}
    kinds = build_kinds(tools)
    if a.profile:
        return profile(kinds, apps, a.profile, 20000 if not a.quick else 3000)

    calls = {k.key: prepare(k, apps[k.app]) for k in kinds}
    # Warm-up: compile validators, fill caches, settle the allocator; size batches to the budget.
    for k in kinds:
        warm: list[int] = []
        run_batch(calls[k.key], len(calls[k.key]) * 3, warm)
        est_ns = sorted(warm)[len(warm) // 2]
        warm.clear()
        run_batch(calls[k.key], 200 if est_ns < 1_000_000 else 10, warm)
        est_ns = sorted(warm)[len(warm) // 2]
        k.per_batch = max(10, min(20000, int(budget * 1e9 / max(est_ns, 1))))
        mem.seek(0)
        mem.truncate()
    # As the service does once specs, validators or policy change (extauthz.server.settle): the
    # long-lived state leaves the cyclic GC's sight, so collections only walk new objects.
    from extauthz.server import settle
    for app in apps.values():
        settle(app)

    async def timed_rounds() -> None:
        # Inside a running loop, as in the service: App.check answers, and metrics, inventory and
        # the decision log are recorded after it (App.record_pending, 20 ms later in the service;
        # here after each batch, timed on its own).
        clock = time.perf_counter_ns
        for _ in range(rounds):
            for k in kinds:
                run_batch(calls[k.key], k.per_batch, k.samples)
                app = apps[k.app]
                t0 = clock()
                app.record_pending()
                k.recorded_ns += clock() - t0
                k.recorded_n += k.per_batch
                mem.seek(0)                  # keep the in-memory log from growing (outside the timing)
                mem.truncate()
    asyncio.run(timed_rounds())

    rows = []
    summary = {}
    for k in kinds:
        s = sorted(k.samples)
        p50, p90, p99 = (C.percentile(s, q) / 1000 for q in (50, 90, 99))
        mean = sum(s) / len(s) / 1000
        size = sum(len(b) for b in k.bodies) // len(k.bodies)
        rec = k.recorded_ns / max(k.recorded_n, 1) / 1000
        rows.append([k.label, size, len(s), f"{p50:.1f}", f"{p90:.1f}", f"{p99:.1f}", f"{mean:.1f}",
                     f"{1e6 / mean:,.0f}", f"{rec:.1f}"])
        summary[k.key] = (p50, p99)
    devnull.close()

    print(f"decision core: App.check, 1,000-tool spec learned, {rounds} interleaved rounds, gc on "
          f"(extauthz {C.revision()}, python {sys.version.split()[0]})")
    print(C.table(["request kind", "body B", "n", "p50 µs", "p90 µs", "p99 µs", "mean µs", "checks/s*",
                   "recorded after µs"], rows))
    print("  checks/s* = 1e6 / mean: one core, decision core only (no gRPC, no protobuf) except the row")
    print("  'whole servicer path', which times CheckRequest bytes -> to_http_request -> App.check ->")
    print("  encode_check_response -> bytes (everything Check does except the gRPC runtime itself).")
    print("  recorded after = App.record_pending per decision: metrics, inventory and the decision log,")
    print("  written after the answer in a batch (not in p50/p99; the service pays it on the loop).")
    parts = [f"{k} p50 {p50:.0f}/p99 {p99:.0f} µs" for k, (p50, p99) in summary.items()
             if k in ("list", "small_call", "nested_call", "call_64k_records", "denied", "schema_violation")]
    print("SUMMARY decision_core: " + "; ".join(parts))
    return 0


def profile(kinds: list[Kind], apps: dict[str, App], key: str, n: int) -> int:
    match = [k for k in kinds if k.key == key]
    if not match:
        raise SystemExit(f"unknown kind {key!r}; one of: {', '.join(k.key for k in kinds)}")
    k = match[0]
    calls = prepare(k, apps[k.app])
    warm: list[int] = []
    run_batch(calls, 500, warm)
    m = len(calls)

    def loop() -> None:
        for i in range(n):
            calls[i % m]()

    prof = cProfile.Profile()
    gc.collect()
    prof.runcall(loop)
    print(f"cProfile of {n} x {k.label} (deterministic profiler: adds overhead per call, read the "
          "shares, not the absolute times)")
    st = pstats.Stats(prof)
    st.sort_stats("cumulative").print_stats(14)
    st.sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
