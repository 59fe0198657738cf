"""End to end with the official TypeScript SDK client (npm ``@modelcontextprotocol/sdk``, pinned in
the Makefile, installed into ``.cache/npm``) through real Envoy and ``extauthz serve``, in front of
a TypeScript SDK server that pages every list (tests/e2e/ts_paging_server.mjs).

The client (tests/e2e/ts_client.mjs) is ``Client`` + ``StreamableHTTPClientTransport`` with the
Bearer token in ``requestInit.headers``: it runs a plan of steps in one MCP session and prints every
result (or error: class, ``McpError`` code/message/data) as JSON. The same client run directly
against the server, without Envoy, gives the reference lists.

Policy (tests/e2e/ts_paging_policy.yaml): the defaults, ``name: "*"`` for authenticated callers,
``admin_*`` / ``docs://admin/**`` for the admin group only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extauthz.demo.stack import Stack
from extauthz.demo.tokens import TokenIssuer

from .schema_instances import instance

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
REPO = HERE.parents[1]
SDK_DIR = REPO / ".cache" / "npm" / "node_modules" / "@modelcontextprotocol" / "sdk"
KINDS = ("tools", "resources", "resourceTemplates", "prompts")
CLIENT_TIMEOUT = 120.0
# Concrete URIs for the server's templates (docs://items/{id}, docs://users/{name}/profile, ...).
TEMPLATE_URIS = {"docs://items/{id}": "docs://items/7", "docs://admin/audit/{day}": "docs://admin/audit/monday",
                 "docs://users/{name}/profile": "docs://users/alice/profile"}


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("Node.js is required: `node` is not on PATH (`make deps` installs it)", pytrace=False)
    if not (SDK_DIR / "package.json").is_file():
        pytest.fail(f"@modelcontextprotocol/sdk is not installed at {SDK_DIR}: run `make deps`", pytrace=False)
    return found


def run_client(url: str, token: str | None, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Run tests/e2e/ts_client.mjs with a plan; its JSON output."""
    plan = json.dumps({"url": url, "token": token, "steps": steps})
    proc = subprocess.run([node(), str(HERE / "ts_client.mjs")], input=plan, capture_output=True, text=True,
                          timeout=CLIENT_TIMEOUT)
    assert proc.returncode == 0, f"ts_client.mjs exited {proc.returncode}\nstderr:\n{proc.stderr}\nstdout:\n{proc.stdout}"
    return json.loads(proc.stdout)


def is_admin(kind: str, item: dict[str, Any]) -> bool:
    key = {"tools": "name", "prompts": "name", "resources": "uri", "resourceTemplates": "uriTemplate"}[kind]
    return item[key].startswith("admin_") or item[key].startswith("docs://admin/")


@pytest.fixture(scope="module")
def stack(tokens: TokenIssuer) -> Iterator[Stack]:
    s = Stack(HERE / "ts_paging_policy.yaml", tokens=tokens,
              upstream_cmd=[node(), str(HERE / "ts_paging_server.mjs"), "--port", "{port}"])
    with s:
        yield s


@pytest.fixture(scope="module")
def direct(stack: Stack) -> dict[str, dict[str, Any]]:
    """Every list as the server pages it, straight from the server (no Envoy, no extauthz)."""
    out = run_client(stack.upstream_url, None, [{"op": "list", "kind": k} for k in KINDS])
    lists = {s["step"]["kind"]: s["result"] for s in out["steps"]}
    for kind in KINDS:  # the server really pages every list, and some pages are admin-only
        assert len(lists[kind]["pages"]) > 1, (kind, lists[kind]["pages"])
    return lists


def test_admin_sees_every_paged_list_exactly_as_the_server_publishes_it(stack: Stack, direct: dict) -> None:
    token = stack.tokens.mint("ada", groups=["admin"])
    out = run_client(stack.url, token, [{"op": "list", "kind": k} for k in KINDS])
    assert out["server"]["name"] == "ts-paging"
    for s in out["steps"]:
        kind = s["step"]["kind"]
        assert s["ok"], s
        assert s["result"]["pages"] == direct[kind]["pages"], kind
        assert s["result"]["items"] == direct[kind]["items"], kind  # intact: every field, in order


def test_user_gets_lists_filtered_per_page_calls_reads_prompts_and_denials_keep_the_session(
        stack: Stack, direct: dict) -> None:
    token = stack.tokens.mint("uma", groups=["staff"])
    visible = {k: [i for i in direct[k]["items"] if not is_admin(k, i)] for k in KINDS}
    assert all(len(visible[k]) < len(direct[k]["items"]) for k in KINDS)

    steps: list[dict[str, Any]] = [{"op": "list", "kind": k} for k in KINDS]
    steps += [{"op": "call", "name": t["name"], "arguments": instance(t["inputSchema"], include_optional=True)}
              for t in visible["tools"]]
    steps += [{"op": "read", "uri": r["uri"]} for r in visible["resources"]]
    steps += [{"op": "read", "uri": TEMPLATE_URIS[t["uriTemplate"]]} for t in visible["resourceTemplates"]]
    steps += [{"op": "prompt", "name": p["name"], "arguments": {a["name"]: "hello" for a in p.get("arguments", [])}}
              for p in visible["prompts"]]
    denials = [
        ({"op": "call", "name": "admin_purge", "arguments": {"confirm": True}}, "not_allowed"),
        ({"op": "call", "name": "add", "arguments": {"a": "1", "b": 2}}, "schema_violation"),
        ({"op": "read", "uri": "docs://admin/keys"}, "not_allowed"),
    ]
    for step, _ in denials:  # each denial is followed by a call that must still work
        steps += [step, {"op": "call", "name": "echo", "arguments": {"message": f"after {step['op']}"}}]
    out = run_client(stack.url, token, steps)
    results = out["steps"]
    assert len(results) == len(steps)

    # Paged lists: the pages the server made (cursors intact), each filtered to what this caller may use.
    for s in results[:len(KINDS)]:
        kind = s["step"]["kind"]
        assert s["ok"], s
        assert s["result"]["items"] == visible[kind], kind
        per_page, start = [], 0
        for n in direct[kind]["pages"]:
            per_page.append(sum(not is_admin(kind, i) for i in direct[kind]["items"][start:start + n]))
            start += n
        assert s["result"]["pages"] == per_page, (kind, s["result"]["pages"], per_page)
        if kind != "prompts":  # these have an all-admin page: it arrives empty, its cursor kept
            assert 0 in per_page, (kind, per_page)

    # Every visible tool, resource, template and prompt works.
    n_ok = len(steps) - 2 * len(denials)
    for s in results[len(KINDS):n_ok]:
        assert s["ok"], s
        res = s["result"]
        assert not res.get("isError"), s
        assert res.get("content") or res.get("contents") or res.get("messages"), s
    echo = next(s for s in results if s["step"].get("name") == "echo")
    assert echo["result"]["content"][0]["text"].startswith("Echo: ")

    # Each denial is an McpError carrying extauthz's reason; the very next call in the session works.
    session = out["sessionId"]
    assert session
    tail = results[n_ok:]
    for (step, reason), (denied, after) in zip(denials, zip(tail[::2], tail[1::2])):
        assert not denied["ok"], denied
        err = denied["error"]
        assert err["isMcpError"] and err["class"] == "McpError", err
        assert isinstance(err["code"], int) and err["code"] < 0, err
        assert isinstance(err["data"], dict) and err["data"]["reason"] == reason, err
        assert err["data"].get("decisionId"), err
        assert after["ok"], after
        assert after["result"]["content"][0]["text"] == f"Echo: after {step['op']}", after
        assert denied["sessionId"] == after["sessionId"] == session
    print(f"\nTS SDK client through Envoy: {n_ok - len(KINDS)} calls/reads/prompts allowed, "
          f"{len(denials)} denials as McpError, session {session[:8]}... kept")


def test_admin_may_call_what_the_user_may_not(stack: Stack) -> None:
    token = stack.tokens.mint("ada2", groups=["admin"])
    out = run_client(stack.url, token, [
        {"op": "list", "kind": "tools"},
        {"op": "call", "name": "admin_purge", "arguments": {"confirm": True}},
        {"op": "read", "uri": "docs://admin/keys"},
        {"op": "read", "uri": "docs://admin/audit/monday"},
        {"op": "prompt", "name": "admin_report", "arguments": {}},
    ])
    for s in out["steps"]:
        assert s["ok"], s
    assert out["steps"][1]["result"]["content"][0]["text"] == "admin_purge done"


async def test_python_sdk_client_gets_the_same_filtered_pages(stack: Stack, direct: dict) -> None:
    """The official Python SDK client, through Envoy, against the same TypeScript server."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    token = stack.tokens.mint("ulf", groups=["staff"])
    fetch = {"tools": "list_tools", "resources": "list_resources",
             "resourceTemplates": "list_resource_templates", "prompts": "list_prompts"}
    attr = {"tools": "tools", "resources": "resources", "resourceTemplates": "resource_templates", "prompts": "prompts"}
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http:
        async with Client(streamable_http_client(stack.url, http_client=http), mode="legacy", cache=None) as c:  # type: ignore[arg-type]
            for kind in KINDS:
                items, pages, cursor = [], 0, None
                while True:
                    page = await getattr(c, fetch[kind])(cursor=cursor)
                    items += [i.model_dump(by_alias=True, exclude_none=True, mode="json") for i in getattr(page, attr[kind])]
                    pages, cursor = pages + 1, page.next_cursor
                    if not cursor:
                        break
                assert pages == len(direct[kind]["pages"]), kind
                assert items == [i for i in direct[kind]["items"] if not is_admin(kind, i)], kind
            res = await c.call_tool("echo", {"message": "py"})
            assert not res.is_error and res.content[0].text == "Echo: py"
