"""Issue 14, part 2, through real Envoy: a caller's lists are filtered whatever the size of its ids,
batches or claims, with both shipped Envoy configs (envoy.yaml: ext_proc reads the jwt_authn
claims forwarded in its metadata; istio-style.yaml: the `x-jwt-payload` header), over JSON and SSE
responses and across pages. The upstream is `list_server.py` (hand-written: it answers batches).

The support user may call lookup_customer and search_customers, read crm://customers/*, and use
every prompt; the admin may call everything (the embedded default policy). Each test checks that
the support user sees exactly that, and that the admin sees everything (so an empty list is not
mistaken for a filter)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from extauthz.demo import envoy_istio
from extauthz.demo.stack import Stack
from extauthz.demo.tokens import TokenIssuer
from extauthz.mcp.learnheader import MAX_ENTRIES

pytestmark = [pytest.mark.e2e]

HERE = Path(__file__).parent
ALL_TOOLS = {"lookup_customer", "export_customers", "search_customers", "export_invoices", "update_settings",
             "export_reports", "export_audit"}
SUPPORT_TOOLS = {"lookup_customer", "search_customers"}
SUPPORT_SEES = {"tools": SUPPORT_TOOLS, "resources": {"crm://customers/c-100"}, "prompts": {"draft_reply"}}
ADMIN_SEES = {"tools": ALL_TOOLS, "resources": {"crm://customers/c-100", "crm://reports/daily"},
              "prompts": {"draft_reply"}}
FIELDS = {"tools/list": ("tools", "name"), "resources/list": ("resources", "uri"), "prompts/list": ("prompts", "name")}
V2025_03 = {"mcp-protocol-version": "2025-03-26"}
# Entra ID sends up to 200 groups: support plus 199 directory-style names.
MANY_GROUPS = ["support"] + [f"CN=grp-{i:03d}-engineering-platform-team,OU=Security Groups,OU=Corp,DC=emea,DC=example,DC=com"
                            for i in range(199)]


class IstioStack(Stack):
    renderer = staticmethod(envoy_istio.render)


def _policy(path: Path, istio: bool) -> None:
    policy = yaml.safe_load(resources.files("extauthz.policy").joinpath("default.yaml").read_text())
    del policy["servers"][0]["upstream"]             # learned from traffic: no discovery
    if istio:
        policy["identity"]["sources"] = [{"header": {"name": "x-jwt-payload", "encoding": "base64url-json"}}]
    path.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")


@pytest.fixture(scope="module", params=["envoy.yaml", "istio-style.yaml"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    istio = request.param == "istio-style.yaml"
    path = tmp_path_factory.mktemp("list-filter") / "policy.yaml"
    _policy(path, istio)
    cls = IstioStack if istio else Stack
    s = cls(path, tokens=TokenIssuer(), upstream_cmd=[sys.executable, str(HERE / "list_server.py"), "--port", "{port}"])
    s.start()
    try:
        yield s
    finally:
        s.stop()


def post(stack: Stack, body: Any, token: str, response: str = "json", **headers: str) -> httpx.Response:
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream",
         "authorization": f"Bearer {token}", "x-test-response": response, **V2025_03, **headers}
    return httpx.post(stack.url, content=orjson.dumps(body), headers=h, timeout=60)


def messages(r: httpx.Response) -> list[Any]:
    """The JSON-RPC messages of a JSON or SSE response, batch arrays flattened."""
    assert r.status_code == 200, r.text[:500]
    if r.headers["content-type"].startswith("text/event-stream"):
        docs = [orjson.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:") and line[5:].strip()]
    else:
        docs = [orjson.loads(r.content)]
    out: list[Any] = []
    for d in docs:
        out.extend(d if isinstance(d, list) else [d])
    return out


def rpc(rid: Any, method: str = "tools/list", cursor: str | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": {"cursor": cursor} if cursor else {}}


def shown(msg: dict[str, Any], method: str = "tools/list") -> set[str]:
    field, key = FIELDS[method]
    assert "error" not in msg, msg
    return {it[key] for it in msg["result"][field]}


def every_page(stack: Stack, token: str, method: str, response: str, rid: str) -> set[str]:
    """Page through a list as a client does: ids of any length, until no nextCursor."""
    seen: set[str] = set()
    cursor = None
    for page in range(10):
        [msg] = messages(post(stack, rpc(f"{rid}-{page}", method, cursor), token, response))
        assert msg["id"] == f"{rid}-{page}"
        seen |= shown(msg, method)
        cursor = msg["result"].get("nextCursor")
        if not cursor:
            return seen
    raise AssertionError("no last page")


def no_filter_failures(stack: Stack) -> None:
    text = httpx.get(f"{stack.service_admin_url}/metrics", timeout=10).text
    assert not [ln for ln in text.splitlines() if ln.startswith("mcp_extauthz_list_filter_failures_total{")], text


@pytest.mark.parametrize("response", ["json", "sse"])
@pytest.mark.parametrize("method", list(FIELDS))
def test_a_long_id_list_shows_exactly_what_the_caller_may_call(stack: Stack, response: str, method: str) -> None:
    long_id = "req-" + "x" * 1200                            # far beyond the old 512-char bound
    support = stack.tokens.mint("alice", groups=["support"], customer_ids=["c-100"])
    admin = stack.tokens.mint("root", groups=["admin"])
    assert every_page(stack, support, method, response, long_id) == SUPPORT_SEES[method.split("/")[0]]
    assert every_page(stack, admin, method, response, long_id) == ADMIN_SEES[method.split("/")[0]]
    no_filter_failures(stack)


@pytest.mark.parametrize("response", ["json", "sse"])
def test_a_token_with_200_long_group_names_sees_only_its_tools(stack: Stack, response: str) -> None:
    token = stack.tokens.mint("alice", groups=MANY_GROUPS)
    assert len(token) > 22000                      # its view alone was over the old 16 KiB header bound
    assert every_page(stack, token, "tools/list", response, "g") == SUPPORT_TOOLS
    assert every_page(stack, token, "resources/list", response, "g") == SUPPORT_SEES["resources"]
    no_filter_failures(stack)


@pytest.mark.parametrize("response", ["json", "sse", "sse-array"])
def test_a_batch_at_the_limit_is_filtered_element_by_element(stack: Stack, response: str) -> None:
    support = stack.tokens.mint("alice", groups=MANY_GROUPS)
    methods = list(FIELDS)
    cursors = [None, "p3", "p6"]                             # tools/list pages, in one batch
    batch = [rpc(f"{i:03d}-" + "y" * 600, methods[i % 3], cursors[(i // 3) % 3] if i % 3 == 0 else None)
             for i in range(MAX_ENTRIES)]
    got = {m["id"]: m for m in messages(post(stack, batch, support, response))}
    assert set(got) == {b["id"] for b in batch}
    page = {None: {"lookup_customer", "search_customers"}, "p3": set(), "p6": set()}
    for b in batch:
        method = b["method"]
        expect = page[b["params"].get("cursor")] if method == "tools/list" else SUPPORT_SEES[method.split("/")[0]]
        assert shown(got[b["id"]], method) == expect, b["id"][:8]
    no_filter_failures(stack)


def test_a_batch_beyond_the_limit_is_denied_with_a_reason(stack: Stack) -> None:
    support = stack.tokens.mint("alice", groups=["support"])
    r = post(stack, [rpc(i) for i in range(MAX_ENTRIES + 1)], support)
    assert r.headers["x-mcp-extauthz-reason"] == "payload_too_large"
    answers = r.json()
    assert len(answers) == MAX_ENTRIES + 1
    assert all(a["error"]["data"]["reason"] == "payload_too_large" and "result" not in a for a in answers)


# -- part 3: a list filtered for one caller is private ------------------------------------------------------

def _public_stack(tmp: Path, filter_lists: bool) -> Stack:
    path = tmp / "policy.yaml"
    _policy(path, istio=False)
    if not filter_lists:
        path.write_text(path.read_text().replace("filterLists: true", "filterLists: false"))
    return Stack(path, tokens=TokenIssuer(),
                 upstream_cmd=[sys.executable, str(HERE / "public_lists_server.py"), "--port", "{port}"])


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with _public_stack(tmp_path_factory.mktemp("public"), True) as s:
        yield s


def raw_2026_list(stack: Stack, token: str, method: str = "tools/list") -> dict[str, Any]:
    """The wire result of a 2026-07-28 list through Envoy (what a shared cache would store)."""
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream",
         "authorization": f"Bearer {token}", "mcp-protocol-version": "2026-07-28", "mcp-method": method}
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}}}}
    r = httpx.post(stack.url, content=orjson.dumps(body), headers=h, timeout=30)
    [msg] = messages(r)
    assert "result" in msg, msg
    return msg["result"]


def test_a_public_2026_list_filtered_for_a_caller_goes_out_private(public: Stack) -> None:
    support = public.tokens.mint("alice", groups=["support"], customer_ids=["c-100"])
    admin = public.tokens.mint("root", groups=["admin"])
    res = raw_2026_list(public, support)
    assert {t["name"] for t in res["tools"]} == SUPPORT_TOOLS
    assert res["cacheScope"] == "private" and res["ttlMs"] == 60000
    res = raw_2026_list(public, admin)            # nothing hidden from the admin: still filtered, still private
    assert {t["name"] for t in res["tools"]} == {"lookup_customer", "search_customers", "export_customers",
                                                  "update_settings"}
    assert res["cacheScope"] == "private"
    assert raw_2026_list(public, support, "prompts/list")["cacheScope"] == "private"


async def test_the_sdk_client_sees_a_private_filtered_list(public: Stack) -> None:
    from extauthz.demo.agent import connect
    support = public.tokens.mint("alice", groups=["support"], customer_ids=["c-100"])
    async with connect(public.url, support, "2026-07-28") as client:
        res = await client.list_tools()
    assert {t.name for t in res.tools} == SUPPORT_TOOLS
    assert res.cache_scope == "private" and res.ttl_ms == 60000


def test_an_unfiltered_list_keeps_the_servers_cache_scope(tmp_path: Path) -> None:
    with _public_stack(tmp_path, filter_lists=False) as s:
        support = s.tokens.mint("alice", groups=["support"])
        res = raw_2026_list(s, support)
    assert res["cacheScope"] == "public" and len(res["tools"]) == 4      # as the server sent it


def test_a_resumed_stream_replaying_a_list_is_filtered(stack: Stack) -> None:
    """A GET with Last-Event-ID: the server replays an earlier tools/list answer on it."""
    def replay(token: str) -> set[str]:
        h = {"accept": "text/event-stream", "authorization": f"Bearer {token}", "mcp-session-id": f"s-{token[-12:]}",
             "last-event-id": "0", **V2025_03}
        msgs = messages(httpx.get(stack.url, headers=h, timeout=30))
        assert msgs[0]["method"] == "notifications/message"
        return shown(msgs[1])
    assert replay(stack.tokens.mint("alice", groups=["support"])) == {"lookup_customer", "export_customers",
                                                                      "search_customers"} & SUPPORT_TOOLS
    assert replay(stack.tokens.mint("root", groups=["admin"])) == {"lookup_customer", "export_customers",
                                                                   "search_customers"}


def test_with_workers_any_worker_filters_for_the_caller(tmp_path: Path) -> None:
    """No state shared between the Check and ext_proc: whichever worker serves either, the caller
    ext_proc resolves from the forwarded claims is the one filtered for."""
    path = tmp_path / "policy.yaml"
    _policy(path, istio=False)
    with Stack(path, tokens=TokenIssuer(), service_args=["--workers", "2"],
               upstream_cmd=[sys.executable, str(HERE / "list_server.py"), "--port", "{port}"]) as s:
        token = s.tokens.mint("alice", groups=MANY_GROUPS)
        for i in range(6):
            with httpx.Client(timeout=60) as fresh:          # Envoy's gRPC connections land on either worker
                h = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                     "authorization": f"Bearer {token}", **V2025_03}
                [msg] = messages(fresh.post(s.url, content=orjson.dumps(rpc(f"w{i}-" + "z" * 600)), headers=h))
            assert shown(msg) == {"lookup_customer", "search_customers"}, i


# -- what cannot be filtered is not shown, through real Envoy --------------------------------------------

def test_a_list_compressed_anyway_reaches_the_client_as_an_error(stack: Stack) -> None:
    r = post(stack, rpc("gz"), stack.tokens.mint("alice", groups=["support"]), "gzip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert "content-encoding" not in r.headers
    assert b"export" not in r.content and r.json()["error"]["code"] == -32603


class NoForwardingStack(Stack):
    """envoy.yaml with ext_proc's metadata_options removed: ext_proc is not given the claims."""

    def render_envoy(self) -> str:
        text = super().render_envoy()
        cut = "              metadata_options:\n                forwarding_namespaces:\n"
        start = text.index(cut)
        end = text.index("\n", start + len(cut)) + 1
        return text[:start] + text[end:]


def test_without_the_claims_ext_proc_shows_every_list_empty(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    _policy(path, istio=False)
    with NoForwardingStack(path, tokens=TokenIssuer(),
                           upstream_cmd=[sys.executable, str(HERE / "list_server.py"), "--port", "{port}"]) as s:
        assert "forwarding_namespaces" not in s.envoy_config_path.read_text()
        admin = s.tokens.mint("root", groups=["admin"])
        for response in ("json", "sse"):
            [msg] = messages(post(s, rpc(f"nf-{response}"), admin, response))
            assert msg["result"] == {"tools": [], "cacheScope": "private"}          # no nextCursor either
        metrics = httpx.get(f"{s.service_admin_url}/metrics", timeout=10).text
        assert 'mcp_extauthz_list_filter_failures_total{reason="view_unresolved"} 2.0' in metrics
        assert "ext_proc sees no caller identity" in s.logs()["service"]
