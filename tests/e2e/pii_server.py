"""An SDK server whose tool results carry planted personal data, for the response classification
test: the service must count what it saw (type and number) and keep no value."""

from __future__ import annotations

import argparse

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
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--json-response", action="store_true")
    a = p.parse_args()
    import uvicorn
    uvicorn.run(build().streamable_http_app(json_response=a.json_response, host="127.0.0.1"),
                host="127.0.0.1", port=a.port, log_level="warning")
