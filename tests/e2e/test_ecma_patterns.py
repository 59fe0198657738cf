"""Through real Envoy: a real SDK server publishes a tool whose argument has an ECMA-262 `\\p{L}`
pattern. International names are allowed; names outside the pattern are denied schema_violation
with the pattern in the detail (before, every call was denied: "unusable input schema")."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from extauthz.demo.agent import connect
from extauthz.demo.stack import Stack

from .sdk_servers import stack_for

pytestmark = pytest.mark.e2e

ALLOWED = ["Zoë O'Neil", "李小龙", "José-María Nuñez", "Σωκράτης", "Ægir Ødegård", "Nguyễn Văn An"]
DENIED = ["x1", "Robert'); DROP TABLE students;--", "Zoë\n", "a" * 81]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack_for("intl_names_server.py", "intl", tmp_path_factory.mktemp("ecma") / "policy.yaml") as s:
        yield s


async def _call(c: Any, args: dict[str, Any]) -> tuple[str, str, str]:
    try:
        res = await c.call_tool("greet", args)
    except MCPError as e:
        data = e.data if isinstance(e.data, dict) else {}
        return "DENIED", str(data.get("reason", e.code)), str(data.get("detail", e.message))
    return "allowed", "", str(res.content[0].text if res.content else "")


async def _scenario(stack: Stack, mode: str) -> dict[str, tuple[str, str, str]]:
    token = stack.tokens.mint(f"ecma-{mode}", groups=["staff"])
    out: dict[str, tuple[str, str, str]] = {}
    async with connect(stack.url, token, mode) as c:
        tools = (await c.list_tools()).tools
        out["published"] = ("", "", str(tools[0].input_schema["properties"]["name"].get("pattern")))
        for name in ALLOWED + DENIED:
            out[name] = await _call(c, {"name": name})
        out["ticket ok"] = await _call(c, {"name": "Zoë", "ticket": "T-1234"})
        out["ticket bad"] = await _call(c, {"name": "Zoë", "ticket": "T-12345"})   # \b: no boundary in 12345
        out["after denials"] = await _call(c, {"name": "Zoë"})                  # the session still works
    return out


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_p_l_pattern_allows_international_names_and_denies_the_rest(stack: Stack, mode: str) -> None:
    out = asyncio.run(asyncio.wait_for(_scenario(stack, mode), 90))
    assert out["published"][2] == r"^[\p{L} .'-]{1,80}$"
    for name in ALLOWED:
        assert out[name] == ("allowed", "", f"hello {name} (T-0000)"), name
    for name in DENIED:
        verdict, reason, detail = out[name]
        assert (verdict, reason) == ("DENIED", "schema_violation"), name
        assert detail.startswith("/name: ") and "does not match" in detail and "\\p{L}" in detail, detail
        assert "unusable" not in detail
    assert out["ticket ok"] == ("allowed", "", "hello Zoë (T-1234)")
    assert out["ticket bad"][:2] == ("DENIED", "schema_violation") and "/ticket: " in out["ticket bad"][2]
    assert out["after denials"][0] == "allowed"
