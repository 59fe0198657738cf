"""mcp-extauthz: Envoy external authorization for MCP traffic."""

__version__ = "0.1.0"
