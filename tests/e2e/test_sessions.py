"""End to end (issue 7): one actor across MCP sessions, and each caller sees only what it may use.

The real SDK client -> real Envoy (jwt_authn, ext_authz, ext_proc) -> the SDK demo CRM server, with
the embedded default policy (risk on, blockAt 100, filterLists on, customer records and exports
marked sensitive)."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

import httpx
import pytest

from extauthz.demo.agent import attempt, connect
from extauthz.demo.stack import Stack
from extauthz.demo.tokens import TokenIssuer

pytestmark = pytest.mark.e2e

PROTOCOLS = ["legacy", "2026-07-28"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    policy = tmp_path_factory.mktemp("sessions") / "policy.yaml"
    policy.write_text(resources.files("extauthz.policy").joinpath("default.yaml").read_text())
    s = Stack(str(policy), tokens=TokenIssuer())
    s.start()
    yield s
    s.stop()


def _decisions(stack: Stack) -> list[dict[str, Any]]:
    return httpx.get(stack.service_admin_url + "/v1/decisions?limit=1000").json()["decisions"]


def _mine(stack: Stack, sub: str) -> list[dict[str, Any]]:
    return [d for d in _decisions(stack) if (d.get("caller") or {}).get("sub") == sub]


@pytest.mark.parametrize("mode", PROTOCOLS)
def test_lists_show_each_caller_only_what_it_may_call(stack, mode):
    support = stack.tokens.mint(f"sally-{mode}", groups=["support"], customer_ids=["c-100"])
    admin = stack.tokens.mint(f"root-{mode}", groups=["admin"], customer_ids=["c-100"])

    async def names(token: str) -> tuple[list[str], list[str], list[str]]:
        async with connect(stack.url, token, mode) as c:
            tools = [t.name for t in (await c.list_tools()).tools]          # parsed by the SDK client
            res = [str(r.uri) for r in (await c.list_resources()).resources]
            tpl = [t.uri_template for t in (await c.list_resource_templates()).resource_templates]
            return sorted(tools), sorted(res), sorted(tpl)

    s_tools, s_res, s_tpl = asyncio.run(names(support))
    a_tools, a_res, a_tpl = asyncio.run(names(admin))
    assert s_tools == ["lookup_customer", "search_customers"]
    assert a_tools == ["export_customers", "lookup_customer", "search_customers", "update_settings"]
    assert s_res == [] and a_res == ["crm://reports/summary"]          # reports/** is admin-only
    assert s_tpl == a_tpl == ["crm://customers/{customer_id}"]
    # The service still learned (and enforces) the whole list the server published.
    inv = httpx.get(stack.service_admin_url + "/v1/inventory").json()
    crm = next(s for s in inv["servers"] if s["server"] == "crm")
    assert {t["name"] for t in crm["tools"]} == set(a_tools)

    # A hidden tool stays not_allowed (never unknown): filtering is a view, not the enforcement.
    async def call_hidden() -> tuple[str, str, str]:
        async with connect(stack.url, support, mode) as c:
            await c.list_tools()
            return await attempt(lambda: c.call_tool("export_customers", {"format": "csv"}))
    assert asyncio.run(call_hidden())[:2] == ("DENIED", "not_allowed")


def test_three_session_attack_is_blocked_and_the_alert_names_every_session(stack):
    """recon (list everything, probe names that do not exist) in session 1, probe (schema
    violations) in session 2, extract (read customer records again and again) in session 3."""
    token = stack.tokens.mint("mallory", groups=["support"], customer_ids=["c-100", "c-300"])
    outcome: dict[str, list[tuple[str, str, str]]] = {"s1": [], "s2": [], "s3": []}

    async def run() -> None:
        async with connect(stack.url, token, "legacy") as c:
            await c.list_tools()
            await c.list_resources()
            await c.list_resource_templates()
            await c.list_prompts()
            for name in ("delete_customer", "drop_tables", "admin_shell", "debug_dump", "run_sql"):
                outcome["s1"].append(await attempt(lambda n=name: c.call_tool(n, {})))
        async with connect(stack.url, token, "legacy") as c:
            await c.list_tools()
            bad = [{"customer_id": 100}, {"customer_id": "c-100", "include_internal_notes": True},
                   {"customer_id": ["c-100"]}, {}, {"customer_id": {"$ne": ""}}]
            for args in bad:
                outcome["s2"].append(await attempt(lambda a=args: c.call_tool("lookup_customer", a)))
        async with connect(stack.url, token, "legacy") as c:
            await c.list_resource_templates()
            for _ in range(6):
                outcome["s3"].append(await attempt(lambda: c.read_resource("crm://customers/c-100")))

    asyncio.run(asyncio.wait_for(run(), 60))
    assert [r[1] for r in outcome["s1"]] == ["unknown_capability"] * 5
    assert [r[1] for r in outcome["s2"]] == ["schema_violation"] * 5
    s3 = [r[1] or r[0] for r in outcome["s3"]]
    assert s3[0] == "allowed", s3                       # the first read completes the chain ...
    assert "risk_blocked" in s3, s3                     # ... and the caller is blocked before it ends
    assert s3[-1] == "risk_blocked"

    mine = _mine(stack, "mallory")
    alerts = [d["alert"] for d in mine if "alert" in d]
    assert len(alerts) == 1
    alert = alerts[0]
    sessions = {d["mcp_session_id"] for d in mine if d["mcp_session_id"]}
    assert len(sessions) == 3 and set(alert["sessions"]) == sessions
    assert [s for s in ("recon", "probe", "extract") if alert["stages"][s]] == ["recon", "probe", "extract"]
    # each stage names the decisions that made it
    ids = {d["decision_id"] for d in mine}
    for stage in ("recon", "probe", "extract"):
        assert {e["decisionId"] for e in alert["stages"][stage]} <= ids
    assert alert["stages"]["probe"][0]["reason"] == "schema_violation"
    assert alert["stages"]["extract"][0]["name"] == "crm://customers/c-100"
    # metrics
    text = httpx.get(stack.service_admin_url + "/metrics").text
    assert "mcp_extauthz_risk_alerts_total 1.0" in text
    blocked = [d for d in mine if d["reason"] == "risk_blocked"]
    assert blocked and all(d["decision"] == "deny" for d in blocked)

    # The admin views: one timeline across the three sessions, the alert, the block.
    tl = httpx.get(stack.service_admin_url + "/v1/callers/mallory/timeline").json()
    (who,) = tl["callers"]
    assert who["blocked"] is True and who["score"] >= 100
    on_timeline = {e["sessionId"] for e in who["timeline"] if e["sessionId"]}   # a bounded ring (32)
    assert len(on_timeline) >= 2 and on_timeline <= sessions
    assert who["alerts"][0]["sessions"] == alert["sessions"]
    listing = httpx.get(stack.service_admin_url + "/v1/sessions").json()
    assert any(c["caller"] == who["caller"] and c["blocked"] for c in listing["callers"])
    assert httpx.get(stack.service_admin_url + "/v1/callers/nobody-at-all/timeline").status_code == 404
    page = httpx.get(stack.service_admin_url + "/inventory").text
    assert "Blocked caller: </b><code>mallory</code>" in page, re.findall(r"Blocked caller.{0,80}", page)
    assert html.escape(alert["summary"][:40]) in page

    # Another user is unaffected.
    other = stack.tokens.mint("olga", groups=["support"], customer_ids=["c-100"])
    async def fine() -> tuple[str, str, str]:
        async with connect(stack.url, other, "legacy") as c:
            return await attempt(lambda: c.read_resource("crm://customers/c-100"))
    assert asyncio.run(fine())[0] == "allowed"


def test_benign_heavy_workload_is_never_blocked(stack):
    """Hundreds of valid calls, sensitive ones included, over many sessions and both protocol
    styles: listing and use score nothing, so the caller is never blocked or alerted on."""
    token = stack.tokens.mint("busy", groups=["support"], customer_ids=["c-100", "c-300"])
    results: list[tuple[str, str, str]] = []

    async def session(mode: str) -> None:
        async with connect(stack.url, token, mode) as c:
            await c.list_tools()
            await c.list_resource_templates()
            for i in range(25):
                cid = "c-100" if i % 2 else "c-300"
                results.append(await attempt(lambda: c.call_tool("lookup_customer", {"customer_id": cid})))
                results.append(await attempt(lambda: c.read_resource(f"crm://customers/{cid}")))
                if i % 5 == 0:
                    results.append(await attempt(lambda: c.call_tool("search_customers", {"query": "a"})))

    async def run() -> None:
        for n in range(6):
            await session(PROTOCOLS[n % 2])

    asyncio.run(asyncio.wait_for(run(), 120))
    assert len(results) >= 300
    assert {r[0] for r in results} == {"allowed"}, [r for r in results if r[0] != "allowed"][:3]
    mine = _mine(stack, "busy")
    assert not any("alert" in d for d in mine)
    assert not any(d["reason"] == "risk_blocked" for d in mine)
