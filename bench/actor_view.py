"""What the actor view costs to build (issue 18): `/callers/{id}` for one caller with a full
timeline, in one process, as the number of kept decisions and of other callers grows.

Each row: the caller's decisions kept (its risk timeline ring, `risk.timelineLength`, and its
records in the decision-log ring), the number of other callers and MCP sessions the service
holds, and the median time of the three parts of one page: gathering the facts
(`extauthz.admin.actors.gather`: reads the risk timeline, the session registry, the decision
ring, and every other caller's session list for hijack attempts), building the view model
(`actor_view.build`) and rendering the HTML (`actor_page.render`); then the page size, and the
longest stretch gathering holds the event loop (it yields every `CHUNK` callers or sessions; in
one process the admin port shares its loop with the Checks). Building and rendering run in a
thread (`asyncio.to_thread`), so they compete with Checks for the GIL, not for the loop.

    python bench/actor_view.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from typing import Any

import common as C
import orjson

from extauthz.admin.actor_page import render
from extauthz.admin.actor_view import build
from extauthz.admin.actors import _gather, gather
from extauthz.app import App
from extauthz.mcp.request import HttpRequest

KEY = "https://issuer|investigated|agent"


def request(sub: str, session: str, name: str, args: dict[str, Any]) -> HttpRequest:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}})
    headers = C.headers(body)
    headers["mcp-session-id"] = session
    claims = {"iss": "https://issuer", "sub": sub, "groups": ["support"], "client_id": "agent", "sid": f"u-{sub}"}
    return HttpRequest(method="POST", path=C.PATH, authority=C.AUTHORITY, headers=headers, body=body, partial=False,
                       metadata={"envoy.filters.http.jwt_authn": {"jwt_payload": claims}})


TOOLS = C.make_tools()
SMALL = [t for t in C.tools_by_shape(TOOLS)["small"] if t["name"].startswith(("crm_", "billing_"))][:16]


def make(timeline: int, kept: int, others: int) -> App:
    app = App(str(C.POLICY), decision_out=io.BytesIO())
    app.specs.apply_page(C.SERVER, "tools", TOOLS, first=True, last=True)
    app.risk.configure(block_at=10**9, decay_per_minute=1, enabled=True, volume_per_minute=10**6,
                       timeline=timeline, max_callers=100_000)
    t = SMALL[0]
    for i in range(others):
        app.check(request(f"other-{i}", f"o-{i}", t["name"], C.small_args(t)))
    for i in range(kept):   # one in four a denial (an unknown name), over eight sessions
        t = SMALL[i % len(SMALL)]
        app.check(request("investigated", f"s-{i % 8}", f"nope_{i}" if i % 4 == 0 else t["name"], C.small_args(t)))
    app.record_pending()
    return app


def timed(fn: Any, rounds: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, out


def longest_pause(app: App) -> float:
    """The longest stretch `gather` holds the event loop between two yields (what a Check queued
    behind an admin request waits at most for it), in ms."""
    worst, t, out = 0.0, time.perf_counter(), {}
    for _ in _gather(app, KEY, None, out):
        now = time.perf_counter()
        worst, t = max(worst, now - t), now
    return max(worst, time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    rounds = 5 if a.quick else 15
    cases = [(32, 32, 0), (32, 32, 1000), (32, 32, 10_000), (32, 1000, 0), (1000, 1000, 0), (1000, 1000, 10_000)]
    if a.quick:
        cases = cases[:2] + cases[3:5]
    print(f"{'timeline':>8} {'kept':>5} {'others':>6} {'gather ms':>10} {'build ms':>9} {'render ms':>10} "
          f"{'total ms':>9} {'page KB':>8} {'loop pause ms':>14}")
    for timeline, kept, others in cases:
        app = make(timeline, kept, others)
        g, facts = timed(lambda: gather(app, KEY), rounds)
        b, view = timed(lambda: build(facts), rounds)
        r, page = timed(lambda: render(view), rounds)
        assert view.bounds.kept == min(kept, max(timeline, app.decisions.recent.keep)), view.bounds
        pause = statistics.median(longest_pause(app) for _ in range(rounds))
        print(f"{timeline:>8} {view.bounds.kept:>5} {others:>6} {g:>10.2f} {b:>9.2f} {r:>10.2f} {g + b + r:>9.2f} "
              f"{len(page) / 1024:>8.0f} {pause:>14.2f}")


if __name__ == "__main__":
    main()
