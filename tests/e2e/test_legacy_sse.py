"""MCP 2024-11-05 (HTTP+SSE: GET /sse stream, POST /messages/?session_id=...) through real Envoy
with the real SDK client and server: the spec is learned from results that arrive on the event
stream, calls are decided against it, and the session in the query is bound to its caller."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from importlib import resources

import httpx
import orjson
import pytest
from mcp import Client
from mcp.client.sse import sse_client

from extauthz.demo.agent import attempt
from extauthz.demo.stack import Stack
from extauthz.demo.tokens import TokenIssuer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    text = resources.files("extauthz.policy").joinpath("default.yaml").read_text()
    text = text.replace("pathPrefix: /mcp", "pathPrefix: /")     # /sse and /messages/
    assert "pathPrefix: / " in text
    policy = tmp_path_factory.mktemp("sse") / "policy.yaml"
    policy.write_text(text)
    s = Stack(str(policy), tokens=TokenIssuer(), upstream_args=["--sse"], upstream_path="/sse")
    s.start()
    yield s
    s.stop()


def test_spec_learned_from_the_event_stream_is_enforced(stack):
    token = stack.tokens.mint("alice", groups=["support"], customer_ids=["c-100"])

    async def run() -> dict[str, tuple[str, str, str]]:
        out = {}
        async with Client(sse_client(stack.url, headers={"Authorization": f"Bearer {token}"}), mode="legacy",
                          cache=None) as c:
            tools = await c.list_tools()
            out["list"] = ("allowed", "", ",".join(sorted(t.name for t in tools.tools)))
            out["lookup"] = await attempt(lambda: c.call_tool("lookup_customer", {"customer_id": "c-100"}))
            out["search"] = await attempt(lambda: c.call_tool("search_customers", {"query": "a"}))
        return out

    out = asyncio.run(run())
    # the list on the event stream is filtered for the stream's caller (defaults.filterLists) ...
    assert out["list"][2] == "lookup_customer,search_customers"
    assert out["lookup"][0] == "allowed" and out["search"][0] == "allowed"
    # ... while the service learned the whole list the server sent
    inv = httpx.get(stack.service_admin_url + "/v1/inventory").json()
    assert len(inv["servers"][0]["tools"]) == 4

    admin = stack.tokens.mint("root", groups=["admin"], customer_ids=["c-100"])

    async def admin_list() -> str:
        async with Client(sse_client(stack.url, headers={"Authorization": f"Bearer {admin}"}), mode="legacy",
                          cache=None) as c:
            return ",".join(sorted(t.name for t in (await c.list_tools()).tools))
    assert asyncio.run(admin_list()) == "export_customers,lookup_customer,search_customers,update_settings"


def test_denied_and_hijacked_posts_never_reach_the_server(stack):
    """Raw HTTP: the denial is the answer to the POST (the server never sees it)."""
    alice = stack.tokens.mint("alice", groups=["support"], customer_ids=["c-100"])
    bob = stack.tokens.mint("bob", groups=["support"], customer_ids=["c-100"])
    base = stack.url.rsplit("/", 1)[0]
    with httpx.Client(timeout=10) as h, h.stream("GET", stack.url, headers={"authorization": f"Bearer {alice}",
                                                                          "accept": "text/event-stream"}) as stream:
        lines = stream.iter_lines()
        endpoint = next(line for line in lines if line.startswith("data:"))[5:].strip()
        post = base + endpoint

        def send(token: str, body: dict) -> httpx.Response:
            return h.post(post, content=orjson.dumps(body), headers={"authorization": f"Bearer {token}",
                                                                      "content-type": "application/json"})
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
        assert send(alice, init).status_code == 202
        hijack = send(bob, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        assert hijack.headers["x-mcp-extauthz-reason"] == "session_hijack"
        export = send(alice, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                              "params": {"name": "export_customers", "arguments": {}}})
        assert export.headers["x-mcp-extauthz-reason"] in ("not_allowed", "unknown_capability")


def test_a_denied_call_is_answered_on_the_event_stream(stack):
    """A 2024-11-05 client reads answers only from its stream: the denial is written there (at the
    next event boundary, here carried by a concurrent allowed call), and the session goes on."""
    token = stack.tokens.mint("alice", groups=["support"], customer_ids=["c-100"])

    async def run():
        async with Client(sse_client(stack.url, headers={"Authorization": f"Bearer {token}"}), mode="legacy",
                          cache=None) as c:
            await c.list_tools()
            denied, allowed = await asyncio.wait_for(asyncio.gather(
                attempt(lambda: c.call_tool("export_customers", {"format": "csv"})),
                attempt(lambda: c.call_tool("lookup_customer", {"customer_id": "c-100"}))), timeout=30)
            after = await attempt(lambda: c.call_tool("search_customers", {"query": "a"}))
            return denied, allowed, after

    denied, allowed, after = asyncio.run(run())
    assert denied[:2] == ("DENIED", "not_allowed")
    assert allowed[0] == "allowed" and after[0] == "allowed"
