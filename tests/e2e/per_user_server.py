"""An SDK server that lists different tools to different users, as real servers do: `audit_log` is
published only to callers whose token says `groups: [auditor]`. Calls are not checked here (the
server trusts its own listing), which is exactly the gap visibility binding closes."""

from __future__ import annotations

import base64
import json
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.types import ListToolsResult


def _groups(headers: Any) -> list[str]:
    auth = str((headers or {}).get("authorization", ""))
    try:
        payload = auth.split(" ", 1)[1].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return [str(g) for g in claims.get("groups", [])]
    except (IndexError, ValueError):
        return []


class PerUserServer(MCPServer):
    async def _handle_list_tools(self, ctx: Any, params: Any) -> ListToolsResult:
        tools = await self.list_tools()
        request = getattr(ctx, "request", None)          # the Starlette request (HTTP transports)
        if "auditor" not in _groups(getattr(request, "headers", None)):
            tools = [t for t in tools if t.name != "audit_log"]
        return ListToolsResult(tools=tools)


def build() -> MCPServer:
    mcp = PerUserServer("per-user")

    @mcp.tool()
    def whoami() -> str:
        """Say hello."""
        return "hello"

    @mcp.tool()
    def audit_log(limit: int = 10) -> str:
        """Recent audit entries (listed to auditors only)."""
        return f"{limit} entries"

    return mcp


if __name__ == "__main__":
    from sdk_servers import serve  # run as a script: its folder is on sys.path
    serve(build)
