"""What session tracking costs (issue 7): Check time, memory per session and per caller.

Check cost: the same small tools/call through `App.check` on two Apps built from one policy and
one 1,000-tool spec, run in interleaved rounds: "tracking" (session binding, visibility binding
with the session's own list snapshot, the caller's timeline and risk score, all on) and
"baseline" (the same App with session bookkeeping, visibility and risk scoring switched off:
`sessions.touch`, `_score` and the visibility lookup replaced by no-ops). Added cost = difference
of the medians, also as a ratio.

Memory (tracemalloc, Python heap): N MCP sessions that each listed 30 tools (visibility snapshot +
binding) and N callers that each filled a whole timeline (`risk.timelineLength` events).

    python bench/sessions.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import io
import time
import tracemalloc
from typing import Any

import common as C

from extauthz.app import App
from extauthz.mcp.request import HttpRequest

SESSION_FMT = "{:032x}"


def http(body: bytes, claims: dict[str, Any], session: str) -> HttpRequest:
    headers = C.headers(body)
    headers["mcp-session-id"] = session
    return HttpRequest(method="POST", path=C.PATH, authority=C.AUTHORITY, headers=headers, body=body,
                       partial=False, metadata={"envoy.filters.http.jwt_authn": {"jwt_payload": claims}})


def make_app(tools: list[dict[str, Any]], tracking: bool) -> App:
    app = App(str(C.POLICY), decision_out=io.BytesIO())
    app.specs.apply_page(C.SERVER, "tools", tools, first=True, last=True)
    if not tracking:
        app.sessions.touch = lambda *a, **k: None           # type: ignore[method-assign]
        app._score = lambda *a: None                        # type: ignore[method-assign]
        app.ctx.visibility = None                           # type: ignore[union-attr]
    return app


def check_cost(tools: list[dict[str, Any]], rounds: int, per_round: int) -> list[list[Any]]:
    policy_text = C.POLICY.read_text()
    small = [t for t in C.tools_by_shape(tools)["small"]
             if t["name"].startswith(("crm_", "billing_")) and t["name"] not in policy_text][:16]
    bodies = [C.call_body(t["name"], C.small_args(t), i) for i, t in enumerate(small)]
    names = [t["name"] for t in tools]
    apps = {"tracking": make_app(tools, True), "baseline": make_app(tools, False)}
    key = f"{C.CLAIMS.get('iss', '')}|{C.CLAIMS['sub']}|{C.CLAIMS.get('client_id', C.CLAIMS.get('azp', ''))}"
    sessions = [SESSION_FMT.format(i) for i in range(8)]
    for s in sessions:                                       # each session listed every tool
        apps["tracking"].visibility.listed(C.SERVER, s, key, "tools", names)
    reqs = [http(b, C.CLAIMS, sessions[i % len(sessions)]) for i, b in enumerate(bodies)]
    samples: dict[str, list[int]] = {k: [] for k in apps}
    for name, app in apps.items():                           # warm-up: compile validators
        for r in reqs:
            d = app.check(r)
            if not d.allowed:
                raise SystemExit(f"bench setup error ({name}): {d.reason.value} {d.detail}")
    for _ in range(rounds):
        for name, app in apps.items():
            out = samples[name]
            for i in range(per_round):
                r = reqs[i % len(reqs)]
                t0 = time.perf_counter_ns()
                app.check(r)
                out.append(time.perf_counter_ns() - t0)
    rows = []
    med = {}
    for name in ("baseline", "tracking"):
        s = sorted(samples[name])
        med[name] = C.percentile(s, 50)
        rows.append([name, f"{med[name] / 1000:.1f}", f"{C.percentile(s, 99) / 1000:.1f}", len(s)])
    rows.append(["added (p50)", f"{(med['tracking'] - med['baseline']) / 1000:.1f}",
                 f"x{med['tracking'] / med['baseline']:.2f}", ""])
    return rows


def memory(n: int, timeline: int) -> list[list[Any]]:
    names = [f"tool_{i}" for i in range(30)]
    gc.collect()
    app = App(str(C.POLICY), decision_out=io.BytesIO())
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        sid = SESSION_FMT.format(i)
        caller = f"https://issuer|user-{i % 100}|agent"
        app.sessions.touch(sid, caller, C.SERVER, protocol_version=C.PROTOCOL)
        app.visibility.listed(C.SERVER, sid, caller, "tools", names)
    gc.collect()
    per_session = (tracemalloc.get_traced_memory()[0] - base) / n
    tracemalloc.stop()

    app2 = App(str(C.POLICY), decision_out=io.BytesIO())
    app2.risk.configure(block_at=100, decay_per_minute=1, enabled=True, volume_per_minute=600,
                        timeline=timeline, max_callers=n + 1)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        caller = f"https://issuer|user-{i}|agent"
        for j in range(timeline):
            app2.risk.record(caller, decision_id=f"{i:012x}{j:020x}", session_id=SESSION_FMT.format(i),
                             server=C.SERVER, method="tools/call", name="crm_lookup", reason="allowed",
                             stage=None, points=0.0)
    gc.collect()
    per_caller = (tracemalloc.get_traced_memory()[0] - base) / n
    tracemalloc.stop()
    return [["MCP session (binding + 30-tool list snapshot)", n, f"{per_session:.0f} B"],
            [f"caller with a full timeline ({timeline} events)", n, f"{per_caller:.0f} B"],
            ["timeline event", n * timeline, f"{per_caller / timeline:.0f} B"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    tools = C.make_tools()
    rounds, per_round, n = (10, 500, 2000) if a.quick else (30, 1000, 10000)
    print("Check cost of session tracking (App.check, small tools/call, µs)")
    rows = check_cost(tools, rounds, per_round)
    print(C.table(["app", "p50 µs", "p99 µs", "samples"], rows))
    print("\nMemory (Python heap, tracemalloc)")
    print(C.table(["what", "count", "each"], memory(n, 32)))
    print(f"\nsummary: session tracking adds {rows[-1][1]} µs per Check (p50, {rows[-1][2]})")


if __name__ == "__main__":
    main()
