"""An SDK server on 2026-07-28 that marks its lists public (`ttlMs: 60000, cacheScope: "public"`,
SEP-2549 cache hints): a shared cache may serve them to anyone, which is wrong once the gateway
filtered them for one caller (issue 14, part 3)."""

from __future__ import annotations

from mcp.server.caching import CacheHint
from mcp.server.mcpserver import MCPServer

PUBLIC = CacheHint(ttl_ms=60000, scope="public")


def build() -> MCPServer:
    mcp = MCPServer("public-lists", cache_hints={"tools/list": PUBLIC, "prompts/list": PUBLIC,
                                                  "resources/list": PUBLIC})

    @mcp.tool()
    def lookup_customer(customer_id: str) -> str:
        """Look up one customer by id."""
        return customer_id

    @mcp.tool()
    def search_customers(query: str) -> str:
        """Search customers by name."""
        return query

    @mcp.tool()
    def export_customers(fmt: str = "csv") -> str:
        """Export every customer record."""
        return fmt

    @mcp.tool()
    def update_settings(key: str, value: str) -> str:
        """Change a CRM setting."""
        return key

    @mcp.prompt()
    def draft_reply(topic: str) -> str:
        """Draft a reply to a customer."""
        return f"Reply about {topic}"

    return mcp


if __name__ == "__main__":
    from sdk_servers import serve  # run as a script: its folder is on sys.path
    serve(build)
