"""End to end: a real FastMCP 2.14 server (tests/e2e/fastmcp_kb_server.py, its own interpreter)
publishing `kb://articles/{path*}`, behind real Envoy and `extauthz serve`, read with the official
Python SDK client. Articles at any depth are readable and FastMCP binds the path we allowed;
traversal and encoded forms are refused before they reach the server.

The FastMCP interpreter: `$FASTMCP_PYTHON`, else `<repo>/.cache/fastmcp/bin/python` (`make deps`
installs it: fastmcp 2.14 needs `mcp` 1.x, the product `mcp` 2.x). Without it the test FAILS.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from extauthz.demo.stack import Stack
from extauthz.demo.tokens import TokenIssuer

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SERVER = Path(__file__).with_name("fastmcp_kb_server.py")
POLICY = """
apiVersion: mcp-extauthz/v1
kind: Policy
mode: enforce
defaults: {unknownServer: deny, unknownCapability: deny, unauthenticated: deny, filterLists: true}
identity:
  sources: [{jwtMetadata: {filter: envoy.filters.http.jwt_authn, key: jwt_payload}}]
  subject: sub
  groupsClaim: groups
servers:
  - name: kb
    match: {authority: 127.0.0.1, pathPrefix: /mcp}
    tools: [{name: "*", allow: {groups: [staff]}}]
    resources:
      - {uri: "kb://articles/**", allow: {groups: [staff]}}
      - {uri: "kb://notes/*", allow: {groups: [staff]}}
      - {uri: "kb://index", allow: {groups: [staff]}}
"""


def fastmcp_python() -> str:
    explicit = os.environ.get("FASTMCP_PYTHON")
    path = Path(explicit) if explicit else REPO / ".cache" / "fastmcp" / "bin" / "python"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"no FastMCP interpreter at {path}: run `make deps` (a venv with fastmcp 2.14 in "
                    ".cache/fastmcp) or set FASTMCP_PYTHON", pytrace=False)
    return str(path)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    policy = tmp_path_factory.mktemp("fastmcp") / "policy.yaml"
    policy.write_text(POLICY)
    s = Stack(policy, tokens=TokenIssuer(), upstream_cmd=[fastmcp_python(), str(SERVER), "--port", "{port}"],
              upstream_timeout=60.0)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@asynccontextmanager
async def connect(stack: Stack) -> AsyncIterator[Client]:
    token = stack.tokens.mint("sam", groups=["staff"])
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"},
                                      timeout=httpx2.Timeout(30, read=60)) as http:
        async with Client(streamable_http_client(stack.url, http_client=http), mode="legacy", cache=None) as c:  # type: ignore[arg-type]
            yield c


async def reason_of(c: Client, uri: str) -> str:
    try:
        await c.read_resource(uri)
    except MCPError as e:
        assert isinstance(e.data, dict) and "reason" in e.data, f"not an extauthz denial: {e!r}"
        return str(e.data["reason"])
    return "allowed"


DEPTHS = ["kb://articles/top.md", "kb://articles/billing/refunds.md", "kb://articles/billing/2024/refunds.md",
          "kb://articles/billing/2024/q3/refunds.md"]


async def test_fastmcp_path_templates_read_at_any_depth_and_traversal_refused(stack: Stack) -> None:
    async with connect(stack) as c:
        templates = [t.uri_template for t in (await c.list_resource_templates()).resource_templates]
        assert "kb://articles/{path*}" in templates, templates
        for uri in DEPTHS:
            res = await c.read_resource(uri)
            (content,) = res.contents
            # what FastMCP's own matcher bound: exactly the path below kb://articles/
            assert content.text == f"# article\npath={uri.removeprefix('kb://articles/')}\n", (uri, content)
        res = await c.read_resource("kb://notes/n-1")
        assert res.contents[0].text == "note n-1"

        for uri in ["kb://articles/billing/../../secrets.md", "kb://articles/../index", "kb://articles/./x.md"]:
            assert await reason_of(c, uri) == "malformed_request", uri
        for uri in ["kb://articles/billing%2Frefunds.md", "kb://articles/%2e%2e/secrets.md",
                    "kb://articles/%252e%252e/secrets.md"]:
            assert await reason_of(c, uri) == "malformed_request", uri
        assert await reason_of(c, "kb://articles/") == "unknown_capability"
        assert await reason_of(c, "kb://notes/a/b") == "unknown_capability"     # {note_id}: one segment

        # the session is still healthy after the denials
        res = await c.read_resource("kb://articles/billing/refunds.md")
        assert "path=billing/refunds.md" in res.contents[0].text
