"""End to end with a FastMCP 2.14 server (PyPI ``fastmcp``; tests/e2e/fastmcp_server.py, pydantic
tools with nested models, optional fields, enums, unions, formats, a ``\\p{L}`` pattern and
``{path*}`` templates) behind real Envoy and ``extauthz serve`` at its defaults, driven by the
official Python SDK client.

Every tool is called with arguments generated from its published inputSchema
(tests/e2e/schema_examples.py: hypothesis-jsonschema, derandomized, ``PER_TOOL`` each, every one
valid per Ajv), once straight to the server and once through Envoy: a legitimate call must never be
denied, and through Envoy it must end exactly as it does without it.

FastMCP 2.14 requires ``mcp<2``, so the server runs under ``.cache/fastmcp`` (``make deps``;
``$FASTMCP_PYTHON`` overrides, as in test_fastmcp_templates.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from extauthz.demo.stack import Stack
from extauthz.demo.tokens import TokenIssuer

from .schema_examples import ajv_verdicts, examples

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
FASTMCP_PYTHON = Path(os.environ.get("FASTMCP_PYTHON") or HERE.parents[1] / ".cache" / "fastmcp" / "bin" / "python")
PER_TOOL = 20
CALL_TIMEOUT = 60.0
# {path*} at depth 1-3, for both templates (kb://articles/{path*}, docs://{version}/{path*}).
TEMPLATE_READS = [
    "kb://articles/refunds.md",
    "kb://articles/billing/refunds.md",
    "kb://articles/billing/eu/refunds.md",
    "docs://v2/intro.md",
    "docs://v2/guide/setup.md",
    "docs://v2/guide/admin/keys.md",
]


@pytest.fixture(scope="module")
def stack(tokens: TokenIssuer) -> Iterator[Stack]:
    if not FASTMCP_PYTHON.is_file():
        pytest.fail(f"FastMCP's interpreter {FASTMCP_PYTHON} is missing: run `make deps`", pytrace=False)
    s = Stack(HERE / "fastmcp_policy.yaml", tokens=tokens,
              upstream_cmd=[str(FASTMCP_PYTHON), str(HERE / "fastmcp_server.py"), "--port", "{port}"],
              upstream_timeout=120.0)  # fastmcp imports slowly on a busy machine
    with s:
        yield s


@pytest.fixture
def user(stack: Stack, request: pytest.FixtureRequest) -> str:
    """A caller of its own per test (risk is scored per caller)."""
    return stack.tokens.mint(f"staff-{request.node.name[5:30]}", groups=["staff"])


@asynccontextmanager
async def connect(url: str, token: str | None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with create_mcp_http_client(headers=headers, timeout=httpx2.Timeout(30, read=CALL_TIMEOUT)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="legacy", cache=None) as c:  # type: ignore[arg-type]
            yield c


async def outcome(coro: Any) -> tuple[str, Any]:
    """("ok", result) | ("tool_error", text) | ("server_error", message) | ("DENIED", error data)."""
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            res = await coro
    except MCPError as e:
        if isinstance(e.data, dict) and "reason" in e.data:
            return "DENIED", e.data
        return "server_error", e.message
    if getattr(res, "is_error", False):
        return "tool_error", getattr(res.content[0], "text", "") if res.content else ""
    return "ok", res


async def all_pages(fetch: Any, attr: str) -> list[Any]:
    items, cursor = [], None
    while True:
        page = await fetch(cursor=cursor)
        items.extend(getattr(page, attr))
        cursor = page.next_cursor
        if not cursor:
            return items


async def list_everything(c: Client) -> dict[str, list[Any]]:
    """What a client does first: every list (the gateway learns the spec from these answers)."""
    return {"tools": await all_pages(c.list_tools, "tools"),
            "resources": await all_pages(c.list_resources, "resources"),
            "resource_templates": await all_pages(c.list_resource_templates, "resource_templates"),
            "prompts": await all_pages(c.list_prompts, "prompts")}


def dump(items: list[Any]) -> list[dict[str, Any]]:
    return [i.model_dump(by_alias=True, exclude_none=True) for i in items]


async def test_schema_generated_calls_are_never_denied_and_end_as_they_do_without_envoy(stack: Stack, user: str) -> None:
    async with connect(stack.upstream_url, None) as direct, connect(stack.url, user) as gw:
        published = await all_pages(direct.list_tools, "tools")
        assert len(published) >= 12
        # At the defaults nothing is filtered or held: the caller sees exactly what the server publishes.
        assert dump((await list_everything(gw))["tools"]) == dump(published)

        batches = [(t.input_schema, examples(t.input_schema, PER_TOOL)) for t in published]
        invalid = [(t.name, x, v["errors"]) for t, (_, xs), vs in zip(published, batches, ajv_verdicts(batches))
                   for x, v in zip(xs, vs) if not v["valid"]]
        assert not invalid, f"the generator made arguments Ajv rejects (a test bug): {invalid[:5]}"

        denied: list[tuple[str, Any, dict[str, Any]]] = []
        differ: list[tuple[str, Any, str, str]] = []
        kinds: Counter[str] = Counter()
        per_tool: dict[str, int] = {}
        for tool, (_, xs) in zip(published, batches):
            per_tool[tool.name] = len(xs)
            for args in xs:
                d_kind, _ = await outcome(direct.call_tool(tool.name, args))
                g_kind, g_res = await outcome(gw.call_tool(tool.name, args))
                kinds[g_kind] += 1
                if g_kind == "DENIED":
                    denied.append((tool.name, args, g_res))
                elif g_kind != d_kind:
                    differ.append((tool.name, args, d_kind, g_kind))
        calls = sum(per_tool.values())
        by_tool = Counter(name for name, _, _ in denied)
        print(f"\nFastMCP {len(published)} tools, {calls} schema-generated calls through Envoy: "
              f"{dict(kinds)}; denied per tool: {dict(by_tool) or 'none'}")
        print("  examples per tool: " + ", ".join(f"{n} {c}" for n, c in per_tool.items()))
        assert calls >= 10 * len(published) - 20  # ping takes no arguments: one example
        sample = [(n, json.dumps(a, ensure_ascii=False)[:120], r.get("reason"), str(r.get("detail"))[:160])
                  for n, a, r in denied[:8]]
        assert not denied, (f"{len(denied)} of {calls} legitimate calls denied "
                            f"({dict(Counter(r.get('reason') for _, _, r in denied))}, per tool {dict(by_tool)}): {sample}")
        assert not differ, f"calls that ended differently through Envoy: {differ[:8]}"


async def test_path_star_templates_read_at_depth_one_to_three(stack: Stack, user: str) -> None:
    async with connect(stack.upstream_url, None) as direct, connect(stack.url, user) as gw:
        lists = await list_everything(gw)
        assert [str(r.uri) for r in lists["resources"]] == ["kb://index"]
        assert {t.uri_template for t in lists["resource_templates"]} == {"kb://articles/{path*}", "docs://{version}/{path*}"}
        results = {}
        for uri in ["kb://index", *TEMPLATE_READS]:
            d_kind, d_res = await outcome(direct.read_resource(uri))
            assert d_kind == "ok", (uri, d_kind, d_res)
            g_kind, g_res = await outcome(gw.read_resource(uri))
            results[uri] = (g_kind, g_res.get("reason") if g_kind == "DENIED" else "")
            if g_kind == "ok":
                assert dump(g_res.contents) == dump(d_res.contents), uri
        print("\n" + "\n".join(f"  {u:40} {k} {r}" for u, (k, r) in results.items()))
        assert all(k == "ok" for k, _ in results.values()), results

        kind, res = await outcome(gw.get_prompt("reply_to_ticket", {"ticket_title": "Refund for ORD-000123"}))
        assert kind == "ok" and res.messages, (kind, res)


async def test_traversal_below_a_path_star_template_stays_refused(stack: Stack, user: str) -> None:
    """FastMCP's `{path*}` is `.+`: the server itself would serve these; the gateway must not."""
    async with connect(stack.upstream_url, None) as direct, connect(stack.url, user) as gw:
        await list_everything(gw)
        for uri in ("kb://articles/../../etc/passwd", "kb://articles/billing/%2e%2e/%2e%2e/secrets",
                    "docs://v2/guide/../../../root"):
            d_kind, _ = await outcome(direct.read_resource(uri))
            assert d_kind == "ok", uri  # the server matches it
            g_kind, g_res = await outcome(gw.read_resource(uri))
            assert g_kind == "DENIED", (uri, g_kind, g_res)
        kind, res = await outcome(gw.call_tool("ping", {}))
        assert kind == "ok", res
