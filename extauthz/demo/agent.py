"""A scripted agent that drives the real MCP SDK client through Envoy, as a support user and an
admin, over both protocol styles. The demo prints its rows; the end-to-end tests reuse `connect`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError


@asynccontextmanager
async def connect(url: str, token: str | None, mode: str = "legacy",
                  headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    """A real SDK client session with a bearer token; mode "legacy" (initialize, 2025-11-25
    sessions) or "2026-07-28" (stateless)."""
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    async with (
        create_mcp_http_client(headers=h, timeout=httpx2.Timeout(30, read=60)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode, cache=None) as client,
    ):
        yield client


@dataclass
class Row:
    who: str
    protocol: str
    action: str
    verdict: str
    reason: str
    detail: str = ""


async def attempt(fn: Callable[[], Awaitable[Any]]) -> tuple[str, str, str]:
    """Run one SDK call: ("allowed", "", summary) or ("DENIED", reason, detail)."""
    try:
        res = await fn()
    except MCPError as e:
        data = e.data if isinstance(e.data, dict) else {}
        return "DENIED", str(data.get("reason", e.code)), str(data.get("detail", e.message))[:70]
    summary = ""
    if getattr(res, "is_error", False):
        return "tool error", "", str(res.content[0].text if res.content else "")[:70]
    for attr in ("tools", "resources", "prompts", "contents", "content", "messages"):
        v = getattr(res, attr, None)
        if isinstance(v, list):
            summary = f"{len(v)} {attr}"
            if attr == "tools":
                summary += ": " + ", ".join(t.name for t in v)
            break
    return "allowed", "", summary[:70]


async def script(url: str, support_token: str | Sequence[str], admin_token: str) -> list[Row]:
    """Both protocol passes; `support_token` may give one support user per pass (each pass probes
    seven attacks, which the risk engine rightly counts against whoever makes them: two of them it
    forgives as corrected by the valid lookup after them, the rest make a chain)."""
    rows: list[Row] = []
    supports = [support_token] * 2 if isinstance(support_token, str) else list(support_token)

    async def step(who: str, proto: str, action: str, fn: Callable[[], Awaitable[Any]]) -> None:
        verdict, reason, detail = await attempt(fn)
        rows.append(Row(who, proto, action, verdict, reason, detail))

    for n, (mode, proto) in enumerate((("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28"))):
        async with connect(url, supports[n], mode) as c:
            await step("support", proto, "tools/list", c.list_tools)
            await step("support", proto, "lookup_customer(c-100)",
                       lambda: c.call_tool("lookup_customer", {"customer_id": "c-100"}))
            await step("support", proto, "search_customers(options.limit=2)",
                       lambda: c.call_tool("search_customers", {"query": "a", "options": {"limit": 2}}))
            if proto == "2025-11-25":
                await c.list_resources()
                await c.list_resource_templates()
                await c.list_prompts()
                await step("support", proto, "read crm://customers/c-100",
                           lambda: c.read_resource("crm://customers/c-100"))
                await step("support", proto, "prompt draft_reply",
                           lambda: c.get_prompt("draft_reply", {"customer_id": "c-100"}))
            await step("support", proto, "export_customers (admin tool)",
                       lambda: c.call_tool("export_customers", {"format": "csv"}))
            await step("support", proto, "update_settings (admin tool)",
                       lambda: c.call_tool("update_settings", {"key": "banner", "value": "hi"}))
            await step("support", proto, "lookup_customer + include_internal_notes",
                       lambda: c.call_tool("lookup_customer", {"customer_id": "c-100", "include_internal_notes": True}))
            await step("support", proto, "search_customers(options.limit='all')",
                       lambda: c.call_tool("search_customers", {"query": "a", "options": {"limit": "all"}}))
            await step("support", proto, "lookup_customer(100 KB id)",
                       lambda: c.call_tool("lookup_customer", {"customer_id": "x" * 100_000}))
            await step("support", proto, "delete_customer (never listed)",
                       lambda: c.call_tool("delete_customer", {"customer_id": "c-100"}))
            await step("support", proto, "lookup_customer(c-200) (not theirs)",
                       lambda: c.call_tool("lookup_customer", {"customer_id": "c-200"}))
            await step("support", proto, "lookup_customer(c-100) again",
                       lambda: c.call_tool("lookup_customer", {"customer_id": "c-100"}))
        async with connect(url, admin_token, mode) as c:
            await c.list_tools()
            await step("admin", proto, "export_customers",
                       lambda: c.call_tool("export_customers", {"format": "csv"}))
            await step("admin", proto, "update_settings",
                       lambda: c.call_tool("update_settings", {"key": "banner", "value": "hello"}))
    return rows


def table(rows: list[Row]) -> str:
    head = ("WHO", "PROTOCOL", "CALL", "VERDICT", "REASON", "DETAIL")
    data = [head] + [(r.who, r.protocol, r.action, r.verdict, r.reason, r.detail) for r in rows]
    widths = [min(48, max(len(x[i]) for x in data)) for i in range(len(head))]
    lines = []
    for i, r in enumerate(data):
        lines.append("  ".join(str(v)[:w].ljust(w) for v, w in zip(r, widths, strict=False)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
