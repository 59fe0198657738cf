"""An SDK server whose pydantic tool publishes an ECMA-262 `\\p{L}` pattern (international names),
as pydantic `Field(pattern=...)` and zod `.regex(/.../u)` servers do."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

NAME = r"^[\p{L} .'-]{1,80}$"


def build() -> MCPServer:
    mcp = MCPServer("intl-names")

    @mcp.tool()
    def greet(name: Annotated[str, Field(pattern=NAME)],
              ticket: Annotated[str, Field(pattern=r"^T-\d{4}\b")] = "T-0000") -> str:
        """Greet a customer by their name as written in their language."""
        return f"hello {name} ({ticket})"

    return mcp


if __name__ == "__main__":
    from sdk_servers import serve  # run as a script: its folder is on sys.path
    serve(build)
