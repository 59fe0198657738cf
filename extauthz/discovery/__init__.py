"""Active discovery: fetch an MCP server's whole published spec as a client would.

`client.discover` (the official SDK, any protocol era) is used by `extauthz discover` (`cli.py`,
`report.py`, `findings.py`) and by `serve`, where `service.Discoverer` discovers each policy
server's `upstream` at start-up, periodically and on a spec miss.
"""
