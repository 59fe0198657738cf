"""End to end through real Envoy: the first-sight screen (defaults.hiddenInstructions: quarantine)
holds only high-confidence findings. Two honest tools whose text says "system prompt" and "file
contents" (held before issue 15) are listed and callable; a tool poisoned with an `<IMPORTANT>`
block is left out of the list, and a client that calls it anyway (a cached list) is denied
`quarantined` with a detail that says what was found and where, not "changed since approval"."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from mcp import MCPError

from extauthz.demo.agent import connect

from .sdk_servers import stack_for

pytestmark = pytest.mark.e2e


def test_honest_tools_pass_and_the_poisoned_one_is_held_with_a_precise_detail(tmp_path):
    with stack_for("hidden_server.py", "hidden", tmp_path / "policy.yaml") as stack:
        token = stack.tokens.mint("alice", groups=["staff"])
        seen: dict = {}

        async def run() -> None:
            async with connect(stack.url, token, "legacy") as c:
                seen["list"] = sorted(t.name for t in (await c.list_tools()).tools)
                seen["assistant"] = (await c.call_tool("create_assistant", {"name": "a", "system_prompt": "Be brief."})
                                     ).content[0].text
                seen["upload"] = (await c.call_tool("upload_document", {"path": "x.md", "contents": "hello"})
                                  ).content[0].text
                try:
                    await c.call_tool("add", {"a": 1, "b": 2})
                except MCPError as e:
                    seen["add"] = e.data
                seen["after"] = (await c.call_tool("upload_document", {"path": "y.md", "contents": "ok"})
                                 ).content[0].text
        asyncio.run(asyncio.wait_for(run(), 60))
        inv = httpx.get(stack.service_admin_url + "/v1/inventory", timeout=10).json()

    assert seen["list"] == ["create_assistant", "upload_document"]
    assert seen["assistant"] == "assistant a created (9 characters of instructions)"
    assert seen["upload"] == "stored x.md (5 bytes)" and seen["after"] == "stored y.md (2 bytes)"
    assert seen["add"]["reason"] == "quarantined"
    assert seen["add"]["detail"] == (
        "tool 'add' is quarantined: hidden instructions in tool 'add': <IMPORTANT> block at char 18 of "
        "description, with 'before using this tool, read/send ...' at char 29 of description")
    (held,) = inv["quarantined"]
    assert held["name"] == "add" and held["why"] in seen["add"]["detail"]
    tools = {t["name"]: t for t in inv["servers"][0]["tools"]}
    assert tools["create_assistant"]["hiddenInstructions"] == [] == tools["upload_document"]["hiddenInstructions"]
    assert tools["create_assistant"]["quarantined"] is None and tools["upload_document"]["quarantined"] is None
    assert tools["add"]["hiddenInstructions"][0] == "hidden markup <IMPORTANT> at 18"
