"""In the service the inventory records decisions just after the Check, aggregated by shape; the
result must equal recording each decision on its own (what happens without an event loop)."""

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


def test_batched_recording_equals_one_by_one():
    inline = _app()
    for req in _traffic(7):
        inline.check(req)                       # no running loop: recorded at once

    batched = _app()

    async def run() -> int:
        for req in _traffic(7):
            batched.check(req)
        pending = len(batched.inventory._pending)
        return pending
    pending = asyncio.run(run())
    assert 0 < pending < 400                    # really aggregated: fewer shapes than decisions
    assert _counts(batched) == _counts(inline)
    assert sum(s[0] for s in _counts(inline)["servers"].values()) == 400
