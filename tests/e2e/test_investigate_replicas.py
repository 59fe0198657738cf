"""End to end (issue 18, --redis): the actor view is the same whichever replica serves it.

Two replicas on one real `redis-server` behind one real Envoy that round-robins every Check
between them (replica A: one process; replica B: `--workers 2`), the real SDK client and demo CRM
server. A recon -> probe -> extract run over three MCP sessions and two user sessions is spread
over both replicas; replica B's `/callers/{id}` page, `extauthz investigate --admin B` and B's
`/v1/callers/{id}/timeline` hold every decision of it, whichever replica made it; a decision id
made on A, an MCP session id and a user session id find the actor on B; with Redis stopped, B still
serves the page, marked partial.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc

from extauthz.demo.agent import connect
from extauthz.shared.testing import RedisProcess

from ..unit.envoy.test_check_transport import check_request
from .replicas import behind_envoy, demo_policy, shared_args
from .test_inventory import WINDOW, png_pixels, screenshot
from .test_investigate import cli, outcome

pytestmark = pytest.mark.e2e
SUB = "ivan-spread"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    policy = demo_policy(tmp_path_factory.mktemp("replicas"))
    redis = RedisProcess().start()
    try:
        with behind_envoy(policy, shared_args(redis, "e2e-actors"), "--workers", "2") as pair:
            yield {"stack": pair.stack, "a_admin": pair.a_admin, "b_admin": pair.b.admin, "redis": redis}
    finally:
        redis.close()


def ring(admin: str) -> dict[str, dict[str, Any]]:
    """This replica's decision log records of SUB, by decision id."""
    recs = httpx.get(admin + "/v1/decisions?limit=1000", timeout=10).json()["decisions"]
    return {r["decision_id"]: r for r in recs if (r.get("caller") or {}).get("sub") == SUB}


@pytest.fixture(scope="module")
def attack(replicas: dict[str, Any]) -> dict[str, Any]:
    """s1 (user session web-1): recon; s2 (web-1): probe; s3 (web-2): extract until blocked."""
    stack = replicas["stack"]
    web1 = stack.tokens.mint(SUB, groups=["support"], customer_ids=["c-100"], sid="web-1")
    web2 = stack.tokens.mint(SUB, groups=["support"], customer_ids=["c-100"], sid="web-2")
    out: dict[str, list[tuple[str, str]]] = {"s1": [], "s2": [], "s3": []}

    async def run() -> None:
        async with connect(stack.url, web1, "legacy") as c:
            await c.list_tools()
            await c.list_resource_templates()
            for name in ("delete_customer", "drop_tables", "admin_shell", "debug_dump", "run_sql"):
                out["s1"].append(await outcome(lambda n=name: c.call_tool(n, {})))
        async with connect(stack.url, web1, "legacy") as c:
            await c.list_tools()
            for args in ({"customer_id": 100}, {"customer_id": "c-100", "include_internal_notes": True},
                         {"customer_id": ["c-100"]}, {}, {"customer_id": {"$ne": ""}}):
                out["s2"].append(await outcome(lambda a=args: c.call_tool("lookup_customer", a)))
        async with connect(stack.url, web2, "legacy") as c:
            await c.list_resource_templates()
            for _ in range(12):      # past the block: round robin, so some blocked reads are on A
                out["s3"].append(await outcome(lambda: c.read_resource("crm://customers/c-100")))

    asyncio.run(asyncio.wait_for(run(), 120))
    assert [r for r, _ in out["s1"]] == ["unknown_capability"] * 5
    assert [r for r, _ in out["s2"]] == ["schema_violation"] * 5
    assert out["s3"][0][0] == "allowed" and out["s3"][-1][0] == "risk_blocked", out["s3"]
    a = ring(replicas["a_admin"])
    deadline = time.monotonic() + 15        # B's workers report their decisions to B's supervisor each second
    while True:
        b = ring(replicas["b_admin"])
        if (len(a) + len(b) >= 25 and set(b) - set(a)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert a and b and not set(a) & set(b), "the round robin must have spread the run over both replicas"
    time.sleep(0.5)                         # the actor log is written behind (every 0.1 s)
    return {"out": out, "a": a, "all": {**a, **b}}


def test_replica_b_actor_page_holds_every_decision_of_the_run(replicas, attack, tmp_path):
    b = replicas["b_admin"]
    page = httpx.get(f"{b}/callers/{SUB}", timeout=20, follow_redirects=True)
    assert page.status_code == 200 and f"<title>Actor {SUB}" in page.text
    rows = re.findall(r'<tr id="d-([0-9a-f]{32})"', page.text)
    assert set(attack["all"]) <= set(rows), f"missing on B: {sorted(set(attack['all']) - set(rows))[:5]}"
    assert len(rows) == len(set(rows)), "a decision shown twice"
    doc = httpx.get(f"{b}/v1/investigate", params={"q": SUB}, timeout=20).json()["actor"]
    steps = doc["steps"]
    times = [s["time"] for s in steps]
    assert times == sorted(times) and doc["bounds"]["shared"] == 256 and doc["bounds"]["partial"] == ""
    from_a = [s for s in steps if s["decision_id"] in attack["a"]]
    assert from_a and all(s["replica"] for s in from_a), "A's decisions are marked with the replica that made them"
    # the chain's steps, in order, marked, on B; the block on B's page
    # (a chain split over replicas completes on each: one alert, or one per replica that completed it)
    assert doc["alerts"]
    order = [s["decision_id"] for s in steps]
    for alert in doc["alerts"]:
        ids = [s["decision_id"] for s in alert["steps"]]
        assert all(i in order for i in ids) and [order.index(i) for i in ids] == sorted(order.index(i) for i in ids)
        assert all(next(s for s in steps if s["decision_id"] == i)["chain"] for i in ids)
    assert any(s["reason"] == "risk_blocked" for s in steps)
    users = {u["user_session"] for u in doc["user_sessions"]}
    assert {"web-1", "web-2"} <= users and len([m for m in doc["mcp_sessions"] if m["session_id"]]) == 3

    shots = Path(os.environ.get("EXTAUTHZ_SCREENSHOTS", Path(tempfile.gettempdir()) / "extauthz-screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "actor-page-replicas.png"
    png = screenshot(page.url.__str__(), tmp_path / "profile", shot)
    print(f"\nactor page (replica B) screenshot: {shot}")
    assert png_pixels(png)[:2] == WINDOW


def test_extauthz_investigate_against_replica_b(replicas, attack):
    r = cli("investigate", "--admin", replicas["b_admin"], SUB)
    assert r.returncode == 0, r.stderr
    timeline = r.stdout[r.stdout.index("TIMELINE"):]
    missing = [d for d in attack["all"] if d not in timeline]
    assert not missing, f"missing from `investigate --admin B`: {missing[:5]}"
    assert "over every replica (Redis): last 256" in r.stdout and "PARTIAL" not in r.stdout
    log = httpx.get(replicas["a_admin"] + "/healthz", timeout=10).json()["actorLog"]
    assert log["written"] >= len(attack["a"]) and log["dropped"] == 0


def test_replica_b_timeline_endpoint_holds_every_decision(replicas, attack):
    got = httpx.get(f"{replicas['b_admin']}/v1/callers/{SUB}/timeline", timeout=20).json()
    ids = [e["decisionId"] for e in got["events"]]
    assert set(attack["all"]) <= set(ids) and len(ids) == len(set(ids)) and got["partial"] == ""
    times = [e["time"] for e in got["events"]]
    assert times == sorted(times)


def test_identifiers_from_replica_a_find_the_actor_on_replica_b(replicas, attack):
    b = replicas["b_admin"]
    # A risk_blocked denial scores nothing, so nothing relays it to B: only the shared actor log
    seen = {d for s in attack["out"].values() for _, d in s if d}
    did, rec = next((d, r) for d, r in attack["a"].items() if r["reason"] == "risk_blocked" and d in seen)
    doc = httpx.get(f"{b}/v1/investigate", params={"q": did}, timeout=20).json()
    caller = doc["actor"]["caller"]
    assert doc["matches"][0] == {"caller": caller, "via": "decision", "decisionId": did}
    step = next(s for s in doc["actor"]["steps"] if s["decision_id"] == did)
    assert step["reason"] == rec["reason"]
    r = httpx.get(f"{b}/callers/{did}", timeout=20)
    assert r.status_code == 303 and r.headers["location"].endswith(f"#d-{did}")
    for q in (rec["mcp_session_id"] or next(x["mcp_session_id"] for x in attack["a"].values() if x["mcp_session_id"]),
              "web-1", "web-2"):
        m = httpx.get(f"{b}/v1/investigate", params={"q": q}, timeout=20).json()["matches"]
        assert [x["caller"] for x in m] == [caller], q


def test_a_caller_only_replica_a_ever_saw_is_found_and_shown_on_replica_b(replicas, attack):
    """One allowed tools/list straight to A's gRPC port (no Envoy, so no round robin): nothing
    about it is relayed (benign), only written to the shared actor log."""
    sid = f"quiet-{time.monotonic_ns()}"
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    claims = {"iss": "https://issuer.example", "sub": "quiet-one", "groups": ["support"], "client_id": "quiet-agent",
              "sid": "quiet-web"}
    req = check_request(body, headers={"mcp-session-id": sid}, claims=claims, host="127.0.0.1")
    with grpc.insecure_channel(f"127.0.0.1:{replicas['stack'].authz_port}") as ch:
        resp = external_auth_pb2_grpc.AuthorizationStub(ch).Check(req, timeout=10)
    assert resp.status.code == 0
    key = "https://issuer.example|quiet-one|quiet-agent"
    b = replicas["b_admin"]
    deadline = time.monotonic() + 10
    while True:
        m = httpx.get(f"{b}/v1/investigate", params={"q": "quiet-one"}, timeout=20).json()
        if m["matches"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert m["matches"] == [{"caller": key, "via": "subject", "decisionId": ""}]
    (step,) = m["actor"]["steps"]
    assert step["method"] == "tools/list" and step["session_id"] == sid and step["user_session"] == "quiet-web"
    did = step["decision_id"]          # allowed: only the upstream saw it (x-mcp-decision-id)
    got = httpx.get(f"{b}/v1/investigate", params={"q": did}, timeout=20).json()["matches"]
    assert got == [{"caller": key, "via": "decision", "decisionId": did}]
    for q, via in ((sid, "session"), ("quiet-web", "userSession"), ("quiet-agent", "client"), (key, "caller")):
        got = httpx.get(f"{b}/v1/investigate", params={"q": q}, timeout=20).json()["matches"]
        assert got == [{"caller": key, "via": via, "decisionId": ""}], q


def test_redis_down_replica_b_still_serves_the_page_marked_partial(replicas, attack):
    """Last in this module: it stops Redis."""
    b = replicas["b_admin"]
    replicas["redis"].stop()
    page = httpx.get(f"{b}/callers/{SUB}", timeout=20, follow_redirects=True)
    assert page.status_code == 200 and f"<title>Actor {SUB}" in page.text
    assert "<b>Partial: </b>the shared decision log (Redis) did not answer" in page.text
    got = httpx.get(f"{b}/v1/callers/{SUB}/timeline", timeout=20).json()
    assert "did not answer" in got["partial"] and got["events"], "B's own view, said to be partial"
    r = cli("investigate", "--admin", b, SUB)
    assert r.returncode == 0 and "PARTIAL: the shared decision log (Redis) did not answer" in r.stdout
