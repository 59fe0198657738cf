"""An SDK server whose tool results carry planted personal data, for the response classification
test: the service must count what it saw (type and number) and keep no value."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

PLANTED_EMAIL = "jane.planted@example.org"
PLANTED_CARD = "4111 1111 1111 1111"            # Visa test number: passes Luhn
PLANTED_PHONE = "+44 20 7946 0958"


def build() -> MCPServer:
    mcp = MCPServer("pii-demo")

    @mcp.tool()
    def get_profile(user: str) -> str:
        """Return a user's profile."""
        return f"user {user}: email {PLANTED_EMAIL}, card {PLANTED_CARD}, phone {PLANTED_PHONE}"

    @mcp.tool()
    def get_weather(city: str) -> str:
        """Today's weather."""
        return f"{city}: sunny, 21 degrees"

    return mcp


if __name__ == "__main__":
    from sdk_servers import serve  # run as a script: its folder is on sys.path
    serve(build)
