"""End to end: a ``resource_link`` that an allowed tool call returns is readable in that session,
through real Envoy, although the server never listed it before the call (the specification says
links need not be listed). The server is npm ``@modelcontextprotocol/server-everything``:
``gzip-file-as-resource`` registers a session resource and answers with a link to it;
``get-resource-links`` links to resources of its templates.

The client does not list resources again after the call (it does not subscribe to list changes),
so the gateway can only know the URI from the tool result it let through.
"""

from __future__ import annotations

import base64
import gzip
import uuid
from collections.abc import Iterator

import pytest

from extauthz.demo.stack import Stack
from extauthz.demo.tokens import TokenIssuer

from .test_server_everything import POLICY, ClientLog, all_pages, connect, everything_command, outcome

pytestmark = pytest.mark.e2e

TEXT = b"hello from a resource link\n"
DATA_URI = "data:text/plain;base64," + base64.b64encode(TEXT).decode()


@pytest.fixture(scope="module")
def stack(tokens: TokenIssuer) -> Iterator[Stack]:
    cmd, _ = everything_command()
    s = Stack(POLICY, tokens=tokens, upstream_cmd=cmd, upstream_env={"GZIP_ALLOWED_DOMAINS": "example.invalid"},
              upstream_path="/mcp", upstream_timeout=180.0)
    with s:
        yield s


@pytest.fixture
def tester(stack: Stack, request: pytest.FixtureRequest) -> str:
    return stack.tokens.mint(f"tess-{request.node.name[5:30]}", groups=["tester"])


async def _listed(c) -> set[str]:  # noqa: ANN001 - mcp.Client
    await all_pages(c.list_tools, "tools")
    await all_pages(c.list_resource_templates, "resource_templates")
    return {str(r.uri) for r in await all_pages(c.list_resources, "resources")}


async def test_gzip_resource_link_is_readable_in_the_session_that_received_it(stack: Stack, tester: str) -> None:
    name = f"link-{uuid.uuid4().hex[:8]}.txt.gz"
    async with connect(stack.url, tester, ClientLog()) as c:
        listed = await _listed(c)
        kind, res = await outcome(c.call_tool("gzip-file-as-resource",
                                              {"name": name, "data": DATA_URI, "outputType": "resourceLink"}))
        assert kind == "ok", res
        links = [b for b in res.content if b.type == "resource_link"]
        assert len(links) == 1, res.content
        uri = str(links[0].uri)
        assert uri.endswith("/" + name) and uri not in listed, (uri, sorted(listed))

        kind, read = await outcome(c.read_resource(uri))
        assert kind == "ok", (uri, read)
        (content,) = read.contents
        assert gzip.decompress(base64.b64decode(content.blob)) == TEXT
        # Read again, and the session is still healthy.
        assert (await outcome(c.read_resource(uri)))[0] == "ok"
        kind, res = await outcome(c.call_tool("echo", {"message": "after the link"}))
        assert kind == "ok", res


async def test_links_to_template_resources_are_readable(stack: Stack, tester: str) -> None:
    async with connect(stack.url, tester, ClientLog()) as c:
        await _listed(c)
        kind, res = await outcome(c.call_tool("get-resource-links", {"count": 4}))
        assert kind == "ok", res
        uris = [str(b.uri) for b in res.content if b.type == "resource_link"]
        assert len(uris) == 4, res.content
        for uri in uris:
            kind, read = await outcome(c.read_resource(uri))
            assert kind == "ok", (uri, read)
            assert read.contents
