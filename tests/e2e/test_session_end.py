"""End to end (issue 14.1): a session binding ends only when the session really ends.

Real Envoy (the shipped route pair: the owner's DELETE carries the learn header, so ext_proc sees
the server's answer; and the Istio-style bootstrap, ext_proc on every request) in front of the real SDK demo CRM server (stateful 2025-11-25 sessions). A
DELETE the server refuses (405 for an MCP-Protocol-Version it does not route to the session, 307
from Starlette for `/mcp/`) leaves the session alive, and its owner still its owner: another
caller presenting the id is `session_hijack` and never reaches the server. A DELETE the server
honours (its 2xx) ends the binding: the id is dead at the server and never bound again; it stays
reserved to its former owner, whose stale reuse the server answers itself (404 "Session not
found"), while anybody else's is still `session_hijack` (so even a wrong confirmation could not
hand a live session to another caller)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

import httpx
import orjson
import pytest

from extauthz.demo.agent import attempt, connect
from extauthz.demo.stack import Stack
from extauthz.demo.tokens import TokenIssuer

from .test_istio_style import IstioStack, header_only_policy

pytestmark = pytest.mark.e2e

ACCEPT = "application/json, text/event-stream"
LOOKUP = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
          "params": {"name": "lookup_customer", "arguments": {"customer_id": "c-100"}}}


@pytest.fixture(scope="module", params=["envoy.yaml", "istio-style"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shipped bootstrap (the learn route selects ext_proc) and the Istio-style one (ext_proc
    on every request, the service picks what to watch)."""
    policy = tmp_path_factory.mktemp("session-end") / "policy.yaml"
    if request.param == "istio-style":
        s: Stack = IstioStack(str(policy), tokens=TokenIssuer())
        header_only_policy(policy, s.upstream_url)
    else:
        policy.write_text(resources.files("extauthz.policy").joinpath("default.yaml").read_text())
        s = Stack(str(policy), tokens=TokenIssuer())
    s.start()
    yield s
    s.stop()


def upstream_requests(stack: Stack) -> int:
    """Requests Envoy sent to the MCP server so far (its own counter)."""
    cluster = f"inbound|{stack.upstream_port}||" if isinstance(stack, IstioStack) else "upstream"
    stat = f"cluster.{cluster}.upstream_rq_total"
    text = httpx.get(stack.envoy_admin_url + "/stats", params={"filter": f"^{re.escape(stat)}$"}, timeout=10).text
    (line,) = text.strip().splitlines()
    assert line.startswith(stat + ":"), text
    return int(line.split(":")[-1])


def metric(stack: Stack, line_prefix: str) -> float:
    text = httpx.get(stack.service_admin_url + "/metrics", timeout=10).text
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line_prefix))


def bound_to(stack: Stack, sid: str) -> str | None:
    sessions = httpx.get(stack.service_admin_url + "/v1/sessions", timeout=10).json()["sessions"]
    return next((s["caller"].split("|")[1] for s in sessions if s["sessionId"] == sid), None)


def headers(token: str, sid: str | None = None, version: str | None = "2025-11-25") -> dict[str, str]:
    h = {"authorization": f"Bearer {token}", "accept": ACCEPT, "content-type": "application/json"}
    if sid is not None:
        h["mcp-session-id"] = sid
    if version is not None:
        h["mcp-protocol-version"] = version
    return h


def messages(r: httpx.Response) -> list[dict[str, Any]]:
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        return [orjson.loads(x[5:]) for x in r.text.splitlines() if x.startswith("data:") and x[5:].strip()]
    return [r.json()]


def open_session(http: httpx.Client, stack: Stack, token: str) -> str:
    """initialize + notifications/initialized + tools/list, as an SDK client does; bound to the owner."""
    r = http.post(stack.url, headers=headers(token, version=None), json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    assert http.post(stack.url, headers=headers(token, sid),
                     json={"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202
    r = http.post(stack.url, headers=headers(token, sid), json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert r.status_code == 200 and "lookup_customer" in r.text, r.text
    return sid


def lookup(http: httpx.Client, stack: Stack, token: str, sid: str) -> httpx.Response:
    return http.post(stack.url, headers=headers(token, sid), json=LOOKUP)


@pytest.mark.parametrize("path,version,status", [
    ("", "2026-07-28", 405),          # the SDK routes an unknown-era version away from the session: 405
    ("", "2099-01-01", 405),
    ("/", "2025-11-25", 307),         # Starlette redirects /mcp/ to /mcp; the DELETE never reached the session
], ids=["version-2026-07-28", "version-2099-01-01", "trailing-slash"])
def test_a_refused_delete_keeps_the_owner_and_the_session(stack, path, version, status):
    owner = stack.tokens.mint(f"olivia-{status}-{version}", groups=["support"], customer_ids=["c-100"])
    other = stack.tokens.mint(f"mallory-{status}-{version}", groups=["support"], customer_ids=["c-100"])
    refused_before = metric(stack, 'mcp_extauthz_session_ends_total{outcome="refused"}')
    with httpx.Client(timeout=30) as http:
        sid = open_session(http, stack, owner)
        owner_name = bound_to(stack, sid)
        assert owner_name is not None and owner_name.startswith("olivia-")

        r = http.delete(stack.url + path, headers=headers(owner, sid, version))
        assert r.status_code == status, (r.status_code, r.text)       # the server's own answer
        assert "x-mcp-extauthz-reason" not in r.headers
        assert bound_to(stack, sid) == owner_name

        # Another caller with that id: denied by the Check, so Envoy never sends it upstream.
        for attempt_ in (lambda: lookup(http, stack, other, sid),
                         lambda: http.delete(stack.url, headers=headers(other, sid))):
            before = upstream_requests(stack)
            r = attempt_()
            assert r.headers.get("x-mcp-extauthz-reason") == "session_hijack", (r.status_code, r.text)
            if r.request.method == "POST":
                (err,) = messages(r)
                assert err["id"] == 7 and err["error"]["data"]["reason"] == "session_hijack"
            else:
                assert r.status_code == 403
            assert upstream_requests(stack) == before
        assert bound_to(stack, sid) == owner_name

        # The owner's next call: allowed, and executed by the server in the same, still-live session.
        before = upstream_requests(stack)
        r = lookup(http, stack, owner, sid)
        assert r.status_code == 200 and "x-mcp-extauthz-reason" not in r.headers, r.text
        (res,) = [m for m in messages(r) if m.get("id") == 7]
        assert "result" in res and "c-100" in str(res["result"]), res
        assert upstream_requests(stack) == before + 1

        # And its DELETE the server honours ends it (see the next test for what follows).
        assert http.delete(stack.url, headers=headers(owner, sid)).status_code == 200
        assert bound_to(stack, sid) is None
    # only the DELETE that reached the session's endpoint was watched (and counted) as refused
    watched = 1 if path == "" else 0
    assert metric(stack, 'mcp_extauthz_session_ends_total{outcome="refused"}') == refused_before + watched


@pytest.mark.parametrize("version", ["2025-11-25", None], ids=["with-version", "no-version-header"])
def test_an_honoured_delete_ends_the_binding_and_only_the_former_owner_reaches_the_dead_id(stack, version):
    owner = stack.tokens.mint(f"hugo-{version}", groups=["support"], customer_ids=["c-100"])
    other = stack.tokens.mint(f"ivan-{version}", groups=["support"], customer_ids=["c-100"])
    ended_before = metric(stack, 'mcp_extauthz_session_ends_total{outcome="ended"}')
    with httpx.Client(timeout=30) as http:
        sid = open_session(http, stack, owner)
        assert bound_to(stack, sid) is not None
        r = http.delete(stack.url, headers=headers(owner, sid, version))
        assert r.status_code == 200, r.text
        # ext_proc saw the 200 before Envoy passed it on: the binding is already gone
        assert bound_to(stack, sid) is None
        assert metric(stack, 'mcp_extauthz_session_ends_total{outcome="ended"}') == ended_before + 1
        # The id is dead at the server and never bound again here. Its former owner's stale reuse
        # is the server's to answer (404, nothing executes); anybody else's never reaches it.
        for who in (other, owner, other, owner):
            before = upstream_requests(stack)
            r = lookup(http, stack, who, sid)
            if who is owner:
                assert r.status_code == 404 and "x-mcp-extauthz-reason" not in r.headers, (r.status_code, r.text)
                assert r.json()["error"]["message"] == "Session not found"
                assert upstream_requests(stack) == before + 1
            else:
                assert r.headers.get("x-mcp-extauthz-reason") == "session_hijack", (r.status_code, r.text)
                assert upstream_requests(stack) == before
            assert bound_to(stack, sid) is None


def test_the_sdk_clients_own_close_ends_its_session(stack):
    """The real SDK client DELETEs its session when it closes; the SDK server honours it."""
    token = stack.tokens.mint("sdk-closer", groups=["support"], customer_ids=["c-100"])
    seen: dict[str, Any] = {}

    async def run() -> None:
        async with connect(stack.url, token, "legacy") as c:
            await c.list_tools()
            seen["call"] = await attempt(lambda: c.call_tool("lookup_customer", {"customer_id": "c-100"}))
            sessions = httpx.get(stack.service_admin_url + "/v1/sessions", timeout=10).json()["sessions"]
            seen["sid"] = next(s["sessionId"] for s in sessions if s["caller"].split("|")[1] == "sdk-closer")

    ended_before = metric(stack, 'mcp_extauthz_session_ends_total{outcome="ended"}')
    asyncio.run(asyncio.wait_for(run(), 60))
    assert seen["call"][0] == "allowed"
    assert metric(stack, 'mcp_extauthz_session_ends_total{outcome="ended"}') == ended_before + 1
    assert bound_to(stack, seen["sid"]) is None
