"""End to end (issue 18): investigate one actor.

A scripted recon -> probe -> extract run by one user over three MCP sessions and two user sessions
(tokens with different `sid` claims), with the real SDK client through real Envoy to the SDK demo
CRM server under the embedded default policy (blockAt 100). The actor page (`/callers/{id}`,
rendered by headless Chromium: DOM and a screenshot) and `extauthz investigate` must show the
sessions, the chain's steps in order with their decision ids, and the block; the decision id the
client read from a denial's `error.data.decisionId` must lead to the actor and the step. And under
`serve --workers 2` the supervisor's view holds the decisions of both workers.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from mcp.shared.exceptions import MCPError

from extauthz.demo.agent import connect
from extauthz.demo.stack import Stack, free_port, wait_for_http
from extauthz.demo.tokens import TokenIssuer

from ..unit.core.conftest import SUPPORT, call
from ..unit.envoy.test_check_transport import check_request
from .test_inventory import WINDOW, dump_dom, png_pixels, screenshot
from .test_workers import POLICY as WORKERS_POLICY
from .test_workers import learn_tools

pytestmark = pytest.mark.e2e
SUB = "ivan"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    policy = tmp_path_factory.mktemp("investigate") / "policy.yaml"
    policy.write_text(resources.files("extauthz.policy").joinpath("default.yaml").read_text())
    s = Stack(str(policy), tokens=TokenIssuer())
    s.start()
    yield s
    s.stop()


async def outcome(fn: Callable[[], Awaitable[Any]]) -> tuple[str, str]:
    """("allowed", "") or (reason, the decisionId the client got in error.data)."""
    try:
        await fn()
    except MCPError as e:
        data = e.data if isinstance(e.data, dict) else {}
        return str(data.get("reason")), str(data.get("decisionId"))
    return "allowed", ""


@pytest.fixture(scope="module")
def attack(stack: Stack) -> dict[str, Any]:
    """s1 (user session web-1): recon; s2 (web-1): probe; s3 (web-2): extract until blocked."""
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
            for _ in range(6):
                out["s3"].append(await outcome(lambda: c.read_resource("crm://customers/c-100")))

    asyncio.run(asyncio.wait_for(run(), 90))
    assert [r for r, _ in out["s1"]] == ["unknown_capability"] * 5
    assert [r for r, _ in out["s2"]] == ["schema_violation"] * 5
    assert out["s3"][0][0] == "allowed" and out["s3"][-1][0] == "risk_blocked", out["s3"]
    actor = httpx.get(stack.service_admin_url + "/v1/investigate", params={"q": SUB}, timeout=20).json()["actor"]
    return {"out": out, "actor": actor}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "extauthz.cli", *args], capture_output=True, text=True, timeout=60)


def chain_ids(actor: dict[str, Any]) -> list[str]:
    (alert,) = actor["alerts"]
    return [s["decision_id"] for s in alert["steps"]]


def test_the_view_holds_three_mcp_sessions_two_user_sessions_the_chain_and_the_block(attack):
    a, out = attack["actor"], attack["out"]
    assert a["subject"] == SUB and a["blocked"] is True and a["score"] >= a["block_at"] == 100
    mcp = {m["session_id"]: m for m in a["mcp_sessions"]}
    # The SDK client ends each session (DELETE) on leaving it: no longer registered, marked ended.
    assert len(mcp) == 3 and all(m["owner"] == "" and m["ended"] > 0 for m in mcp.values())
    assert all(m["servers"] == ["crm"] for m in mcp.values())
    # ("" in a user session's list: its requests outside any MCP session, like initialize)
    users = {u["user_session"]: [m for m in u["mcp_sessions"] if m] for u in a["user_sessions"]}
    assert set(users) == {"web-1", "web-2"} and len(users["web-1"]) == 2 and len(users["web-2"]) == 1
    assert set(users["web-1"]) | set(users["web-2"]) == set(mcp)
    (alert,) = a["alerts"]
    stages = [s["stage"] for s in alert["steps"]]
    assert stages == sorted(stages, key=("recon", "probe", "extract").index) and stages[-1] == "extract"
    assert {"recon", "probe"} <= set(stages)
    # the chain's steps are on the timeline in order, and each is marked
    order = [s["decision_id"] for s in a["steps"]]
    ids = chain_ids(a)
    assert all(i in order for i in ids) and [order.index(i) for i in ids] == sorted(order.index(i) for i in ids)
    marked = {s["decision_id"]: s["chain"] for s in a["steps"] if s["chain"]}
    assert all(marked[i] for i in ids)
    # the client's decision ids are the ones on the timeline, with the reasons it got
    got = {d: r for s in ("s1", "s2", "s3") for r, d in out[s] if d}
    steps = {s["decision_id"]: s for s in a["steps"]}
    assert got and all(steps[d]["reason"] == r for d, r in got.items() if d in steps)
    blocked = [s for s in a["steps"] if s["reason"] == "risk_blocked"]
    assert blocked and all(s["verdict"] == "deny" and s["user_session"] == "web-2" for s in blocked)
    assert a["bounds"]["timeline_length"] == 32 and a["bounds"]["allowed"] + a["bounds"]["denied"] >= 20


def test_the_page_in_headless_chromium(stack, attack, tmp_path):
    a = attack["actor"]
    url = stack.service_admin_url + "/callers/" + SUB            # by subject: redirected to the actor
    dom = dump_dom(url, tmp_path / "profile")
    assert f"<title>Actor {SUB}" in dom and "<script" not in dom
    for m in a["mcp_sessions"]:
        assert f'data-session="{m["session_id"]}"' in dom
    users = dom.split('id="user-sessions"', 1)[1].split("</section>", 1)[0]
    assert "web-1" in users and "web-2" in users
    rows = [m.group(1) for m in re.finditer(r'<tr id="d-([0-9a-f]{32})"', dom)]
    ids = chain_ids(a)
    assert [rows.index(i) for i in ids] == sorted(rows.index(i) for i in ids), "chain steps out of order"
    for i in ids:
        row = dom.split(f'<tr id="d-{i}"', 1)[1].split("</tr>", 1)[0]
        assert "chain" in row.split(">", 1)[0] and "alert 1:" in row
    blocked = [s["decision_id"] for s in a["steps"] if s["reason"] == "risk_blocked"]
    row = dom.split(f'<tr id="d-{blocked[0]}"', 1)[1].split("</tr>", 1)[0]
    assert "risk_blocked" in row and "DENY" in row
    assert "BLOCKED" in dom and "What is kept: the last <b>32</b>" in dom
    # filters are plain links: the probe stage only
    probe = dump_dom(stack.service_admin_url + "/callers/" + SUB + "?stage=probe", tmp_path / "profile3")
    probe_rows = re.findall(r'<tr id="d-[0-9a-f]{32}"[^>]*data-stage="([a-z]+)"', probe)
    assert probe_rows and set(probe_rows) == {"probe"}

    # Outside pytest's rotating tmp dirs, so the printed path stays there to look at.
    shots = Path(os.environ.get("EXTAUTHZ_SCREENSHOTS", Path(tempfile.gettempdir()) / "extauthz-screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "actor-page.png"
    png = screenshot(url, tmp_path / "profile2", shot)
    print(f"\nactor page screenshot: {shot}")
    w, h, px = png_pixels(png)
    assert (w, h) == WINDOW
    assert px[5][15:18] == bytes([0x18, 0x20, 0x2E]), "the page header's colour where the header is"
    sample = [row[i:i + 3] for row in px[::4] for i in range(0, len(row), 12)]
    commonest = max(set(sample), key=sample.count)
    assert len(set(sample)) > 50 and sample.count(commonest) < 0.9 * len(sample), "blank or uniform screenshot"


def test_extauthz_investigate_shows_the_same(stack, attack):
    a = attack["actor"]
    r = cli("investigate", "--admin", stack.service_admin_url, SUB)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "BLOCKED" in text and "USER SESSIONS" in text and "MCP SESSIONS" in text
    for m in a["mcp_sessions"]:
        assert m["session_id"] in text
    assert "web-1" in text and "web-2" in text
    positions = [text.index(i, text.index("TIMELINE")) for i in chain_ids(a)]
    assert positions == sorted(positions)
    timeline = text[text.index("TIMELINE"):]
    assert "risk_blocked" in timeline
    j = cli("investigate", "--admin", stack.service_admin_url, SUB, "--format", "json", "--since", "1h")
    assert j.returncode == 0 and json.loads(j.stdout)["actor"]["caller"] == a["caller"]
    assert cli("investigate", "--admin", stack.service_admin_url, "nobody-at-all").returncode == 1


def test_a_decision_id_from_a_denied_client_finds_the_actor_and_the_step(stack, attack, tmp_path):
    reason, did = attack["out"]["s2"][2]
    assert reason == "schema_violation" and re.fullmatch(r"[0-9a-f]{32}", did)
    dom = dump_dom(stack.service_admin_url + "/callers/" + did, tmp_path / "profile")
    assert f"<title>Actor {SUB}" in dom
    row = dom.split(f'<tr id="d-{did}"', 1)[1].split("</tr>", 1)[0]
    assert row.split(">", 1)[0].startswith(' class="hit') and "schema_violation" in row
    r = cli("investigate", "--admin", stack.service_admin_url, did)
    assert r.returncode == 0, r.stderr
    (line,) = [x for x in r.stdout.splitlines() if did in x and "<==" in x]
    assert "schema_violation" in line
    doc = httpx.get(stack.service_admin_url + "/v1/investigate", params={"q": did}, timeout=20).json()
    assert doc["matches"][0] == {"caller": attack["actor"]["caller"], "via": "decision", "decisionId": did}


def test_hostile_names_stay_inert_in_the_browser(stack, tmp_path):
    token = stack.tokens.mint("hostile-<b>bold</b>", groups=["support"], customer_ids=["c-100"], sid='"><i>x</i>')
    names = ['<img src=x onerror=alert(1)>', 'a"><script>alert(2)</script>', "rtl\u202etxt.exe", "bell\x07"]

    async def run() -> list[tuple[str, str]]:
        async with connect(stack.url, token, "legacy") as c:
            return [await outcome(lambda n=n: c.call_tool(n, {})) for n in names]
    got = asyncio.run(asyncio.wait_for(run(), 60))
    assert [r for r, _ in got[:2]] == ["unknown_capability"] * 2 and all(r != "allowed" for r, _ in got)
    dom = dump_dom(stack.service_admin_url + "/callers/" + got[0][1], tmp_path / "profile")
    assert "<title>Actor hostile-&lt;b&gt;bold&lt;/b&gt;" in dom
    assert "<img" not in dom and "<script" not in dom and "<i>x</i>" not in dom and "<b>bold</b>" not in dom
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom and "\u202e" not in dom and "\x07" not in dom


def test_supervisor_view_holds_the_decisions_of_both_workers(tmp_path):
    gp, ap = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "extauthz.cli", "serve", "--policy", str(WORKERS_POLICY),
                             "--workers", "2", "--grpc-port", str(gp), "--admin-port", str(ap),
                             "--host", "127.0.0.1", "--drain-seconds", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_http(f"http://127.0.0.1:{ap}/readyz", timeout=40), "supervisor never became ready"
        learn_tools(gp)
        time.sleep(0.3)
        req = check_request(json.dumps(call("lookup_customer", {"customer_id": "c-100"})).encode())
        for _ in range(24):     # each on a new connection: SO_REUSEPORT spreads them over the workers
            with grpc.insecure_channel(f"127.0.0.1:{gp}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                assert external_auth_pb2_grpc.AuthorizationStub(ch).Check(req, timeout=5).status.code == 0
        # no waiting for the workers' once-a-second report: the view asks them
        r = httpx.get(f"http://127.0.0.1:{ap}/v1/investigate", params={"q": SUPPORT["sub"]}, timeout=20)
        a = r.json()["actor"]
        assert a["bounds"]["processes"] == 3 and a["bounds"]["missing"] == []
        calls = [s for s in a["steps"] if s["method"] == "tools/call"]
        assert len(calls) == 24
        assert {s["worker"] for s in calls} == {0, 1}, "both workers must have decided some of the calls"
        page = httpx.get(f"http://127.0.0.1:{ap}/callers/{SUPPORT['sub']}", timeout=20, follow_redirects=True).text
        assert "3 processes" in page and len(re.findall(r'<tr id="d-', page)) == 24
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
