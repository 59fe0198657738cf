"""The live inventory: every MCP server, capability and sensitive-data exposure seen in traffic,
discovery and pinned specs, who used what, and what changed."""
