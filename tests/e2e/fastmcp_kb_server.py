"""A FastMCP (PyPI `fastmcp` 2.14) knowledge-base server publishing templates the way FastMCP does:
`kb://articles/{path*}` (FastMCP's "one or more segments") and `kb://notes/{note_id}`.

Run by its own interpreter (fastmcp 2.14 pins `mcp` 1.x, the product uses `mcp` 2.x): the Makefile
installs it into `.cache/fastmcp`. Each article's text names the path FastMCP's own matcher bound,
so a test can see what the server understood.

    .cache/fastmcp/bin/python tests/e2e/fastmcp_kb_server.py --port 8000
"""

from __future__ import annotations

import argparse

from fastmcp import FastMCP

mcp = FastMCP("kb")


@mcp.resource("kb://articles/{path*}", name="article", mime_type="text/markdown")
def article(path: str) -> str:
    """An article of the knowledge base, at any depth."""
    return f"# article\npath={path}\n"


@mcp.resource("kb://notes/{note_id}", name="note", mime_type="text/plain")
def note(note_id: str) -> str:
    """A short note."""
    return f"note {note_id}"


@mcp.resource("kb://index", name="index", mime_type="text/plain")
def index() -> str:
    return "billing/refunds.md\nbilling/2024/q3/refunds.md\n"


@mcp.tool
def search(query: str) -> list[str]:
    """Search article paths."""
    return [p for p in ("billing/refunds.md", "billing/2024/q3/refunds.md") if query in p]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    mcp.run(transport="http", host="127.0.0.1", port=a.port, path="/mcp", show_banner=False, log_level="warning")


if __name__ == "__main__":
    main()
