"""Per-caller risk: timelines, attack-chain detection and risk blocks across MCP sessions."""
