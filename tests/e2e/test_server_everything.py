"""End to end against a real third-party MCP server: npm ``@modelcontextprotocol/server-everything``
(the TypeScript SDK's reference server, ``streamableHttp`` mode, stateful sessions, draft-07 input
schemas) behind real Envoy and ``extauthz serve`` with tests/e2e/everything_policy.yaml.

The server is found deterministically, in this order:

1. ``$MCP_EVERYTHING_BIN`` (a path to the ``mcp-server-everything`` executable);
2. ``<repo>/.cache/npm/node_modules/.bin/mcp-server-everything``, installed once with
   ``npm install --prefix .cache/npm @modelcontextprotocol/server-everything``;
3. ``npx -y @modelcontextprotocol/server-everything`` (downloads it on first use).

It needs Node.js: without ``node`` (or without both an installed copy and ``npx``) the tests FAIL,
they do not skip; CI installs Node.js and npm.

The server listens on ``$PORT`` on all interfaces (port chosen free on loopback by the Stack), serves
``/mcp``, and does not check ``Host``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import jsonschema
import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from extauthz.demo.stack import Stack
from extauthz.demo.tokens import TokenIssuer

from .schema_instances import instance

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
POLICY = Path(__file__).with_name("everything_policy.yaml")
PACKAGE = "@modelcontextprotocol/server-everything"
LOCAL_BIN = REPO / ".cache" / "npm" / "node_modules" / ".bin" / "mcp-server-everything"
ACCEPT = "application/json, text/event-stream"
# Values for required prompt arguments that the server constrains (everything else gets "1").
PROMPT_ARGUMENT_VALUES = {"resourceType": "Text", "department": "Engineering", "name": "Alice"}
CALL_TIMEOUT = 60.0

# Valid arguments beyond the required-only minimum, where the minimum would be slow or reach the
# internet: both are checked against the tool's inputSchema like every generated argument set.
ARGUMENT_OVERRIDES: dict[str, dict[str, Any]] = {
    # Defaults: 10 s in 5 steps.
    "trigger-long-running-operation": {"duration": 0.2, "steps": 2},
    # Default `data` is a github.com URL; a data: URI keeps the test offline.
    "gzip-file-as-resource": {"name": "hello.txt.gz", "data": "data:text/plain;base64,aGVsbG8gd29ybGQK"},
}


# --------------------------------------------------------------------------------------------------
# Locating and starting the server
# --------------------------------------------------------------------------------------------------
def everything_command() -> tuple[list[str], str]:
    """argv (with ``{port}``) that starts server-everything in streamableHttp mode, and where it came from."""
    if shutil.which("node") is None:
        pytest.fail(
            "Node.js is required for this test: `node` is not on PATH. Install Node.js (>= 18) and npm "
            f"(CI does), then optionally `npm install --prefix {REPO / '.cache/npm'} {PACKAGE}`.",
            pytrace=False,
        )
    explicit = os.environ.get("MCP_EVERYTHING_BIN")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            pytest.fail(f"MCP_EVERYTHING_BIN={explicit!r} is not an executable file", pytrace=False)
        binary = [explicit]
        source = f"$MCP_EVERYTHING_BIN ({explicit})"
    elif LOCAL_BIN.is_file():
        binary = [str(LOCAL_BIN)]
        source = f"installed copy {LOCAL_BIN}"
    else:
        npx = shutil.which("npx")
        if npx is None:
            pytest.fail(
                f"{PACKAGE} is not installed at {LOCAL_BIN} and `npx` is not on PATH: install npm, or run "
                f"`npm install --prefix {REPO / '.cache/npm'} {PACKAGE}`, or set MCP_EVERYTHING_BIN.",
                pytrace=False,
            )
        binary = [npx, "-y", PACKAGE]
        source = f"npx ({npx})"
    # The server reads its port from $PORT only; `env` puts the Stack's chosen port there.
    return [shutil.which("env") or "/usr/bin/env", "PORT={port}", *binary, "streamableHttp"], source


@pytest.fixture(scope="module")
def stack(tokens: TokenIssuer) -> Iterator[Stack]:
    cmd, source = everything_command()
    s = Stack(
        POLICY,
        tokens=tokens,
        upstream_cmd=cmd,
        # gzip-file-as-resource may fetch http(s) URLs: allow none (the test uses data: URIs).
        upstream_env={"GZIP_ALLOWED_DOMAINS": "example.invalid"},
        upstream_path="/mcp",
        upstream_timeout=180.0,  # npx may download the package first
    )
    s.everything_source = source  # type: ignore[attr-defined]
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def tester(stack: Stack) -> str:
    return stack.tokens.mint("tess", groups=["tester"], sid="everything-web-1")


@pytest.fixture(scope="module")
def outsider(stack: Stack) -> str:
    return stack.tokens.mint("otto", groups=["staff"])


# --------------------------------------------------------------------------------------------------
# The real SDK client, with canned answers for server-initiated requests
# --------------------------------------------------------------------------------------------------
@dataclass
class ClientLog:
    sampling: list[types.CreateMessageRequestParams] = field(default_factory=list)
    elicitation: list[types.ElicitRequestParams] = field(default_factory=list)
    roots: int = 0


def callbacks(log: ClientLog) -> dict[str, Any]:
    async def sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        log.sampling.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="a canned answer from the test client"),
            model="canned-model",
            stop_reason="endTurn",
        )

    async def elicitation(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        log.elicitation.append(params)
        if isinstance(params, types.ElicitRequestFormParams):
            # Answer the form with a valid instance of the schema it asked for, every field filled.
            schema = params.requested_schema
            if not isinstance(schema, dict):
                schema = schema.model_dump(by_alias=True, exclude_none=True)
            return types.ElicitResult(action="accept", content=instance(schema, include_optional=True))
        return types.ElicitResult(action="accept")  # URL mode: "the user opened it"

    async def list_roots(context: Any) -> types.ListRootsResult:
        log.roots += 1
        return types.ListRootsResult(roots=[types.Root(uri="file:///tmp/everything-e2e", name="e2e")])

    return {"sampling_callback": sampling, "elicitation_callback": elicitation, "list_roots_callback": list_roots}


@asynccontextmanager
async def connect(url: str, token: str, log: ClientLog | None = None) -> AsyncIterator[Client]:
    """Like extauthz.demo.agent.connect (legacy mode: this server is stateful), plus callbacks."""
    extra = callbacks(log) if log is not None else {}
    h = {"Authorization": f"Bearer {token}"}
    async with create_mcp_http_client(headers=h, timeout=httpx2.Timeout(30, read=CALL_TIMEOUT)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="legacy", cache=None, **extra) as client:  # type: ignore[arg-type]
            yield client


def denial(exc: BaseException) -> dict[str, Any] | None:
    """The extauthz denial carried by an SDK error (``data.reason``), else None."""
    if isinstance(exc, MCPError) and isinstance(exc.data, dict) and "reason" in exc.data:
        return exc.data
    return None


async def outcome(coro: Any) -> tuple[str, Any]:
    """("ok", result) | ("tool_error", result) | ("server_error", MCPError) | ("DENIED", data)."""
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            res = await coro
    except MCPError as e:
        d = denial(e)
        return ("DENIED", d) if d is not None else ("server_error", e)
    if getattr(res, "is_error", False):
        return "tool_error", res
    return "ok", res


async def all_pages(fetch: Any, attr: str) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        page = await fetch(cursor=cursor)
        items.extend(getattr(page, attr))
        cursor = page.next_cursor
        if not cursor:
            return items


def check_valid(schema: dict[str, Any], value: Any, what: str) -> None:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    errors = [e.message for e in cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(value)]
    assert not errors, f"generated arguments for {what} are not valid: {errors} ({value!r})"


def fill_template(uri_template: str) -> str:
    """A concrete URI for an RFC 6570 template: every variable 1 (this server's ids are integers)."""
    return re.sub(r"\{[+#./;?&]?([^}]*)\}", lambda m: ",".join("1" for _ in m.group(1).split(",")), uri_template)


# --------------------------------------------------------------------------------------------------
# 1. An allowed user uses everything the server publishes
# --------------------------------------------------------------------------------------------------
async def test_tester_calls_every_listed_tool_and_uses_resources_and_prompts(stack: Stack, tester: str) -> None:
    log = ClientLog()
    report: dict[str, tuple[str, str]] = {}
    async with connect(stack.url, tester, log) as c:
        assert c.server_info is not None and c.server_info.name == "mcp-servers/everything"
        tools = await all_pages(c.list_tools, "tools")
        names = [t.name for t in tools]
        assert len(names) > 5, names
        assert len(set(names)) == len(names), names

        called = 0
        for tool in tools:
            args = ARGUMENT_OVERRIDES.get(tool.name) or instance(tool.input_schema)
            check_valid(tool.input_schema, args, tool.name)
            kind, res = await outcome(c.call_tool(tool.name, args))
            called += 1
            report[tool.name] = (kind, _summary(res))
        denied = {n: r for n, r in report.items() if r[0] == "DENIED"}
        assert not denied, f"extauthz denied valid calls: {denied}\nall outcomes: {report}"
        assert called == len(tools) > 5
        # The server's own tools work through Envoy (the client-feature ones depend on callbacks).
        ok = [n for n, (kind, _) in report.items() if kind == "ok"]
        for must in ("echo", "get-sum", "get-tiny-image", "get-structured-content", "trigger-long-running-operation"):
            if must in names:
                assert must in ok, f"{must}: {report[must]}"
        assert "Echo:" in report["echo"][1]
        if "trigger-sampling-request" in names:
            assert report["trigger-sampling-request"][0] == "ok" and log.sampling, report["trigger-sampling-request"]
        if "trigger-elicitation-request" in names:
            assert report["trigger-elicitation-request"][0] == "ok" and log.elicitation, report["trigger-elicitation-request"]
        if "get-roots-list" in names:
            assert report["get-roots-list"][0] == "ok" and log.roots, report["get-roots-list"]
        print(f"\nserver-everything from {stack.everything_source}: {called} tools called")  # type: ignore[attr-defined]
        for n, (kind, summary) in report.items():
            print(f"  {n:34} {kind:12} {summary[:80]}")

        # Resources (listed again after the tools: gzip-file-as-resource adds a session resource).
        resources = await all_pages(c.list_resources, "resources")
        assert resources, "server-everything lists static documents"
        if "gzip-file-as-resource" in names:  # learned from this second list, then readable
            assert any(str(r.uri).endswith("/hello.txt.gz") for r in resources), [str(r.uri) for r in resources]
        for r in resources:
            kind, res = await outcome(c.read_resource(str(r.uri)))
            assert kind == "ok", (str(r.uri), kind, _summary(res))
            assert res.contents
        templates = await all_pages(c.list_resource_templates, "resource_templates")
        assert templates
        for t in templates:
            uri = fill_template(t.uri_template)
            kind, res = await outcome(c.read_resource(uri))
            assert kind == "ok", (uri, kind, _summary(res))

        # Completion of a template variable (the server offers completions for these).
        for t in templates:
            for var in re.findall(r"\{[+#./;?&]?([^}]*)\}", t.uri_template):
                ref = types.ResourceTemplateReference(type="ref/resource", uri=t.uri_template)
                kind, res = await outcome(c.complete(ref, {"name": var.split(",")[0], "value": ""}))
                assert kind == "ok", (t.uri_template, var, kind, _summary(res))

        # Prompts: every required argument gets a value (the server checks some of them).
        prompts = await all_pages(c.list_prompts, "prompts")
        assert prompts
        for p in prompts:
            args = {a.name: PROMPT_ARGUMENT_VALUES.get(a.name, "1") for a in p.arguments or [] if a.required}
            kind, res = await outcome(c.get_prompt(p.name, args))
            assert kind == "ok", (p.name, args, kind, _summary(res))
            assert res.messages

        # Still the same healthy session after all of that.
        kind, res = await outcome(c.call_tool("echo", {"message": "still here"}))
        assert kind == "ok" and "still here" in _summary(res)


async def test_completion_of_required_prompt_arguments_is_not_denied(stack: Stack, tester: str) -> None:
    async with connect(stack.url, tester) as c:
        prompts = await all_pages(c.list_prompts, "prompts")
        asked = 0
        for p in prompts:
            for a in p.arguments or []:
                if not a.required:
                    continue
                ref = types.PromptReference(type="ref/prompt", name=p.name)
                kind, res = await outcome(c.complete(ref, {"name": a.name, "value": ""}))
                asked += 1
                assert kind != "DENIED", (p.name, a.name, res)
        assert asked >= 3


def _summary(res: Any) -> str:
    if isinstance(res, dict):
        return json.dumps(res)
    if isinstance(res, MCPError):
        return f"MCPError {res.code}: {res.message}"
    for attr in ("content", "contents", "messages"):
        items = getattr(res, attr, None)
        if items:
            first = items[0]
            text = getattr(first, "text", None) or getattr(getattr(first, "content", None), "text", None)
            return f"{len(items)} {attr}: {text if text is not None else type(first).__name__}".replace("\n", " ")
    return type(res).__name__


# --------------------------------------------------------------------------------------------------
# 2./3. Denials, provoked once per module (test 4 reads them back from the decision log)
# --------------------------------------------------------------------------------------------------
@dataclass
class Provoked:
    undeclared: dict[str, Any]
    undeclared_code: int
    after_undeclared: tuple[str, str]
    outsider_tools: list[str]
    outsider_call: dict[str, Any] | None
    unknown_tool: dict[str, Any] | None
    expected: list[tuple[str, str, str]]  # (decisionId, reason, tool name)


async def _provoke(stack: Stack, tester: str, outsider: str) -> Provoked:
    expected: list[tuple[str, str, str]] = []
    async with connect(stack.url, tester, ClientLog()) as c:
        tools = {t.name: t for t in await all_pages(c.list_tools, "tools")}
        assert "echo" in tools and "include_internal_notes" not in json.dumps(tools["echo"].input_schema)
        with pytest.raises(MCPError) as err:
            await c.call_tool("echo", {"message": "hi", "include_internal_notes": True})
        undeclared = denial(err.value)
        assert undeclared is not None, f"not an extauthz denial: {err.value!r} data={err.value.data!r}"
        expected.append((undeclared.get("decisionId", ""), "schema_violation", "echo"))
        kind, res = await outcome(c.call_tool("echo", {"message": "hi"}))
        after = (kind, _summary(res))

        with pytest.raises(MCPError) as err2:
            await c.call_tool("delete-everything", {"confirm": True})
        unknown = denial(err2.value)
        if unknown:
            expected.append((unknown.get("decisionId", ""), "unknown_capability", "delete-everything"))

    async with connect(stack.url, outsider, ClientLog()) as c:
        outsider_tools = [t.name for t in await all_pages(c.list_tools, "tools")]
        with pytest.raises(MCPError) as err3:
            await c.call_tool("echo", {"message": "hi"})
        forbidden = denial(err3.value)
        if forbidden:
            expected.append((forbidden.get("decisionId", ""), "not_allowed", "echo"))
    return Provoked(undeclared, err.value.code, after, outsider_tools, forbidden, unknown, expected)


@pytest.fixture(scope="module")
def provoked(stack: Stack, tester: str, outsider: str) -> Provoked:
    return asyncio.run(_provoke(stack, tester, outsider))


def test_undeclared_argument_is_schema_violation_and_the_session_keeps_working(provoked: Provoked) -> None:
    assert provoked.undeclared["reason"] == "schema_violation", provoked.undeclared
    assert provoked.undeclared.get("decisionId")
    assert provoked.undeclared_code < 0  # a JSON-RPC error code, surfaced by the SDK as MCPError
    assert provoked.after_undeclared[0] == "ok", provoked.after_undeclared
    assert "Echo: hi" in provoked.after_undeclared[1]


def test_undeclared_argument_denial_is_a_clean_jsonrpc_error_on_the_wire(stack: Stack, tester: str) -> None:
    """The same denial at the HTTP level: 200, application/json, the request's id, the reason header;
    then the next valid call in that MCP session reaches the server."""
    base = {"accept": ACCEPT, "content-type": "application/json", "authorization": f"Bearer {tester}"}
    with httpx.Client(timeout=30) as http:
        r = http.post(stack.url, headers=base, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw-e2e", "version": "0"}},
        })
        assert r.status_code == 200, r.text
        session = r.headers["mcp-session-id"]
        h = {**base, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
        r = http.post(stack.url, headers=h, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert r.status_code == 202, r.text
        r = http.post(stack.url, headers=h, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}})
        assert r.status_code == 200 and "echo" in r.text, r.text

        call_id = f"call-{uuid.uuid4().hex[:8]}"
        r = http.post(stack.url, headers=h, json={
            "jsonrpc": "2.0", "id": call_id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": "hi", "include_internal_notes": True}},
        })
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.headers.get_list("x-mcp-extauthz-reason") == ["schema_violation"]
        body = r.json()
        assert body["jsonrpc"] == "2.0" and body["id"] == call_id and "result" not in body
        assert isinstance(body["error"]["code"], int) and body["error"]["message"]
        assert body["error"]["data"]["reason"] == "schema_violation" and body["error"]["data"]["decisionId"]

        r = http.post(stack.url, headers=h, json={
            "jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "after"}},
        })
        assert r.status_code == 200, r.text
        msgs = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:") and line[5:].strip()] \
            if r.headers["content-type"].startswith("text/event-stream") else [r.json()]
        (result,) = [m for m in msgs if m.get("id") == 4]
        assert result["result"]["content"][0]["text"] == "Echo: after", result
        http.delete(stack.url, headers=h)


def test_caller_without_the_group_is_not_allowed(provoked: Provoked) -> None:
    assert provoked.outsider_call is not None, "the outsider's call was not denied by extauthz"
    assert provoked.outsider_call["reason"] == "not_allowed", provoked.outsider_call
    assert "echo" in provoked.outsider_tools or provoked.outsider_tools == []  # listing itself is not denied


def test_tool_the_server_never_listed_is_unknown_capability(provoked: Provoked) -> None:
    assert provoked.unknown_tool is not None, "the unlisted tool was not denied by extauthz"
    assert provoked.unknown_tool["reason"] == "unknown_capability", provoked.unknown_tool


# --------------------------------------------------------------------------------------------------
# 4. The decision log shows the denials with their reasons
# --------------------------------------------------------------------------------------------------
def test_decision_log_shows_each_denial_with_its_reason(stack: Stack, provoked: Provoked) -> None:
    assert len(provoked.expected) == 3, provoked.expected
    r = httpx.get(stack.service_admin_url + "/v1/decisions?limit=1000", timeout=10)
    assert r.status_code == 200, r.text
    decisions = r.json()["decisions"]
    by_id = {d["decision_id"]: d for d in decisions}
    for decision_id, reason, name in provoked.expected:
        assert decision_id in by_id, f"decision {decision_id} ({reason}) is not in /v1/decisions"
        d = by_id[decision_id]
        assert (d["decision"], d["reason"], d["method"], d["name"], d["server"]) == (
            "deny", reason, "tools/call", name, "everything"), d
    # Allowed calls are logged too, with the caller.
    allowed = [d for d in decisions if d["decision"] == "allow" and d["method"] == "tools/call"]
    assert allowed and all(d["caller"]["sub"] in ("tess",) for d in allowed)
    denied_outsider = [d for d in decisions if d["decision"] == "deny" and (d.get("caller") or {}).get("sub") == "otto"]
    assert {d["reason"] for d in denied_outsider} == {"not_allowed"}


# --------------------------------------------------------------------------------------------------
# 5. A resource link a tool returns is readable in that session, and nowhere else
# --------------------------------------------------------------------------------------------------
async def test_resource_link_from_gzip_tool_is_readable_in_that_session_only(stack: Stack, tester: str) -> None:
    """gzip-file-as-resource returns a `resource_link` to a session resource that `resources/list`
    never showed us (a name no other test lists): the link is readable in the session it was
    returned to (the result was read on the learn route before the client got it), not in another
    session of the same caller, nor by another caller with the same rights."""
    name = f"link-{uuid.uuid4().hex[:8]}.txt.gz"
    other = stack.tokens.mint("tina", groups=["tester"])
    async with connect(stack.url, tester) as c:
        assert "gzip-file-as-resource" in {t.name for t in await all_pages(c.list_tools, "tools")}
        kind, res = await outcome(c.call_tool("gzip-file-as-resource", {
            "name": name, "data": "data:text/plain;base64,aGVsbG8gd29ybGQK", "outputType": "resourceLink"}))
        assert kind == "ok", (kind, _summary(res))
        (linked,) = [item for item in res.content if item.type == "resource_link"]
        uri = str(linked.uri)
        assert uri.endswith("/" + name), uri
        kind, res = await outcome(c.read_resource(uri))       # at once: no waiting, no re-listing
        assert kind == "ok", (uri, kind, _summary(res))
        (content,) = res.contents
        assert str(content.uri) == uri and content.mime_type == "application/gzip" and content.blob

        async with connect(stack.url, tester) as again:          # the same caller, another session
            kind, data = await outcome(again.read_resource(uri))
            assert (kind, data["reason"]) == ("DENIED", "unknown_capability"), (kind, data)
        async with connect(stack.url, other) as theirs:          # another caller's session
            await all_pages(theirs.list_resources, "resources")
            kind, data = await outcome(theirs.read_resource(uri))
            assert (kind, data["reason"]) == ("DENIED", "unknown_capability"), (kind, data)

        kind, res = await outcome(c.read_resource(uri))       # still readable where it was returned
        assert kind == "ok", (uri, kind, _summary(res))
