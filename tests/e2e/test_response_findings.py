"""End to end: sensitive data in tool results, seen over ext_proc through real Envoy, is counted
by type in the inventory and never stored (issue 8: "classification finds planted PII in a
response without storing it"). Both response styles: SSE (the SDK default) and JSON."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from extauthz.demo.agent import attempt, connect

from .pii_server import PLANTED_CARD, PLANTED_EMAIL, PLANTED_PHONE
from .sdk_servers import stack_for

pytestmark = pytest.mark.e2e


def _run(tmp: Path, json_response: bool, observe: str = "all") -> tuple[dict, str, list, str, list]:
    with stack_for("pii_server.py", "pii", tmp / f"policy-{json_response}-{observe}.yaml",
                   extra=f"audit: {{observeResponses: {observe}}}\n",
                   args=("--json-response",) if json_response else ()) as stack:
        token = stack.tokens.mint("reader", groups=["staff"])

        async def calls() -> list[tuple[str, str, str]]:
            async with connect(stack.url, token, "legacy") as c:
                await c.list_tools()
                out = []
                for i in range(3):
                    out.append(await attempt(lambda: c.call_tool("get_profile", {"user": f"u{i}"})))
                out.append(await attempt(lambda: c.call_tool("get_weather", {"city": "Oslo"})))
                return out

        results = asyncio.run(asyncio.wait_for(calls(), 60))
        admin = stack.service_admin_url
        inv = httpx.get(admin + "/v1/inventory").json()
        page = httpx.get(admin + "/inventory").text
        decisions = httpx.get(admin + "/v1/decisions?limit=1000").json()["decisions"]
        timeline = httpx.get(admin + "/v1/callers/reader/timeline").json()
        logs = "\n".join(stack.logs().values())
    return inv, page + logs + repr(decisions) + repr(timeline) + repr(inv), results, logs, decisions


def _tool(inv: dict, name: str) -> dict:
    server = next(s for s in inv["servers"] if s["server"] == "pii")
    return next(t for t in server["tools"] if t["name"] == name)


@pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])
def test_planted_pii_in_a_response_is_counted_and_never_stored(tmp_path, json_response):
    inv, everything, results, _, _ = _run(tmp_path, json_response)
    assert [r[0] for r in results] == ["allowed"] * 4
    profile = _tool(inv, "get_profile")["usage"]["responses"]
    assert profile["count"] == 3 and profile["bytes"] > 0
    findings = profile["findings"]
    # each result carries the text twice (content and the SDK's structuredContent): 3 responses x 2
    assert findings.get("pii.email") == 6, findings
    assert findings.get("pii.payment_card") == 6, findings
    assert "pii" in profile["sensitivity"]
    weather = _tool(inv, "get_weather")["usage"]["responses"]
    assert weather["count"] == 1 and weather["findings"] == {}
    # never stored: not in the inventory, the page, the decision log, the timeline, or any process log
    # other than the upstream server's own (which printed nothing of them either)
    for planted in (PLANTED_EMAIL, PLANTED_CARD, PLANTED_CARD.replace(" ", ""), PLANTED_PHONE, "jane.planted"):
        assert planted not in everything


def test_with_observation_off_no_response_is_seen(tmp_path):
    inv, _, results, _, _ = _run(tmp_path, False, observe="off")
    assert [r[0] for r in results] == ["allowed"] * 4
    assert _tool(inv, "get_profile")["usage"]["responses"]["count"] == 0
