"""In the service, Checks are recorded (metrics, inventory, decision log) in batches just after they
are answered, and the inventory aggregates a batch by shape; the result must equal recording each
decision on its own (what happens without an event loop)."""

from __future__ import annotations

import asyncio
import io
import random
from pathlib import Path

from extauthz.app import App

from ..core.conftest import ADMIN, SUPPORT, call, http, learn

POLICY = Path(__file__).parents[1] / "core" / "policy.yaml"


def _traffic(seed: int) -> list:
    rng = random.Random(seed)
    out = []
    for i in range(400):
        claims = rng.choice([SUPPORT, ADMIN, dict(SUPPORT, sub="carol"), None])
        body = rng.choice([
            call("lookup_customer", {"customer_id": "c-100"}), call("lookup_customer", {"customer_id": 7}),
            call("export_customers", {}), call("ghost", {}), {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            {"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": f"crm://customers/c-{i % 5}"}},
        ])
        headers = {"mcp-protocol-version": rng.choice(["2025-11-25", "2026-07-28"])}
        out.append(http(body, claims=claims, headers=headers))
    return out


def _app() -> App:
    a = App(str(POLICY), decision_out=io.BytesIO())
    learn(a)
    return a


def _counts(app: App) -> dict:
    inv = app.inventory
    inv.flush()
    return {"servers": {k: (v.requests, v.allowed, v.denied, dict(v.reasons), dict(v.methods)) for k, v in inv.servers.items()},
            "usage": {k: (u.allowed, u.denied, dict(u.reasons), dict(u.group_sets), dict(u.subjects)) for k, u in inv.usage.items()},
            "probes": {k: (u.allowed, u.denied) for k, u in inv.probes.items()},
            "callers": {k: (c.allowed, c.denied) for k, c in inv.callers.items()}}


def _log_shape(app: App) -> list:
    return [(r["server"], r["method"], r["name"], r["decision"], r["reason"], (r["caller"] or {}).get("sub"))
            for r in app.decisions.recent]


def test_batched_recording_equals_one_by_one():
    inline = _app()
    for req in _traffic(7):
        inline.check(req)                       # no running loop: recorded at once

    batched = _app()
    sizes: list[int] = []
    flush = batched.inventory.flush

    def spy() -> None:
        sizes.append(len(batched.inventory._pending))
        flush()
    batched.inventory.flush = spy               # type: ignore[method-assign]

    async def run() -> tuple[int, int]:
        for req in _traffic(7):
            batched.check(req)
        answered_unrecorded = len(batched.recorder.unrecorded), len(batched.decisions.recent)
        await asyncio.sleep(0.1)                # the loop records the batch
        return answered_unrecorded
    unrecorded, logged_before = asyncio.run(run())
    assert (unrecorded, logged_before) == (400, 0)   # nothing recorded inside the Checks
    assert batched.recorder.unrecorded == []
    assert sizes and 0 < max(sizes) < 400       # the inventory really aggregated: fewer shapes than decisions
    assert _counts(batched) == _counts(inline)
    assert sum(s[0] for s in _counts(inline)["servers"].values()) == 400
    assert _log_shape(batched) == _log_shape(inline) and len(_log_shape(inline)) == 400
    assert batched.metrics.checks.decisions == inline.metrics.checks.decisions


def test_a_batch_is_recorded_a_slice_per_loop_turn_and_a_view_takes_the_rest_in_order():
    from extauthz.recorder import RECORD_SLICE
    app = _app()
    seen_by_check: list[int] = []

    async def run() -> None:
        reqs = _traffic(3)[:RECORD_SLICE * 3 + 2]
        for req in reqs[:-1]:
            app.check(req)
        app.recorder.record_in_slices()                 # the batch timer fires
        assert len(app.decisions.recent) == RECORD_SLICE          # one slice, then back to the loop
        await asyncio.sleep(0)                  # a Check answered between two slices
        seen_by_check.append(len(app.decisions.recent))
        app.check(reqs[-1])
        app.record_pending()                    # an admin view: everything, now, in answer order
        assert app.recorder.unrecorded == [] and not app.recorder.recording
    asyncio.run(run())
    assert seen_by_check == [2 * RECORD_SLICE]
    inline = _app()
    for req in _traffic(3)[:RECORD_SLICE * 3 + 2]:
        inline.check(req)
    assert _log_shape(app) == _log_shape(inline) and _counts(app) == _counts(inline)
