"""sessions.visibilityBinding through App.check: a capability the server never listed to this MCP
session (stateless: to this caller) is `unknown_capability`; a listed but forbidden one stays
`not_allowed`; with no snapshot anywhere the server-wide spec decides."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from extauthz.app import App
from extauthz.core.decision import Decision
from extauthz.core.reasons import Reason
from extauthz.mcp.learnheader import encode_learn_header
from extauthz.mcp.request import HttpRequest

HERE = Path(__file__).parent
POLICY = HERE / "policy.yaml"

SUPPORT = {"iss": "https://issuer", "sub": "alice", "groups": ["support"], "client_id": "agent"}
ADMIN = {"iss": "https://issuer", "sub": "root", "groups": ["admin"], "client_id": "agent"}
ALICE = "https://issuer|alice|agent"
ROOT = "https://issuer|root|agent"

TOOLS = [{"name": n, "inputSchema": {"type": "object"}} for n in ("open_tool", "routed", "lookup", "export_customers")]
RESOURCES = [{"uri": "crm://reports/summary", "name": "summary"}, {"uri": "crm://reports/daily", "name": "daily"}]
TEMPLATES = [{"uriTemplate": "crm://customers/{customer_id}", "name": "customer"},
             {"uriTemplate": "crm://orders/{order_id}", "name": "order"}]
PROMPTS = [{"name": "draft_reply"}, {"name": "summarize"}]


def make_app(policy: Path = POLICY) -> App:
    a = App(str(policy), decision_out=io.BytesIO())
    a.specs.apply_page("crm", "tools", TOOLS, first=True, last=True)
    a.specs.apply_page("crm", "resources", RESOURCES, first=True, last=True)
    a.specs.apply_page("crm", "resourceTemplates", TEMPLATES, first=True, last=True)
    a.specs.apply_page("crm", "prompts", PROMPTS, first=True, last=True)
    return a


@pytest.fixture
def app() -> App:
    return make_app()


def rpc(method: str, params: dict[str, Any] | None = None, mid: Any = 1) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": mid, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def check(app: App, msg: Any, *, session: str | None = None, claims: dict[str, Any] = SUPPORT,
          method: str = "POST") -> Decision:
    headers = {"content-type": "application/json"} if method == "POST" else {}
    if session is not None:
        headers["mcp-session-id"] = session
    body = orjson.dumps(msg) if msg is not None else b""
    return app.check(HttpRequest(method=method, path="/mcp", authority="crm.example.com", headers=headers,
                                 body=body, partial=False,
                                 metadata={"envoy.filters.http.jwt_authn": {"jwt_payload": claims}}))


def tool(app: App, name: str, **kw: Any) -> Decision:
    return check(app, rpc("tools/call", {"name": name, "arguments": {}}), **kw)


def read(app: App, uri: str, **kw: Any) -> Decision:
    return check(app, rpc("resources/read", {"uri": uri}), **kw)


def prompt(app: App, name: str, **kw: Any) -> Decision:
    return check(app, rpc("prompts/get", {"name": name}), **kw)


# -- tools -----------------------------------------------------------------------------------------------

def test_no_snapshot_anywhere_uses_the_server_wide_spec(app):
    assert tool(app, "routed", session="s1").reason is Reason.ALLOWED
    assert tool(app, "routed").reason is Reason.ALLOWED          # stateless, nothing listed either


def test_published_but_not_listed_to_this_session_is_unknown(app):
    app.visibility.listed("crm", "s1", ALICE, "tools", ["open_tool"])
    d = tool(app, "routed", session="s1")
    assert d.reason is Reason.UNKNOWN_CAPABILITY
    assert "never listed" in d.detail
    assert not d.wire_allowed


def test_listed_to_this_session_is_allowed(app):
    app.visibility.listed("crm", "s1", ALICE, "tools", ["open_tool", "routed"])
    d = tool(app, "routed", session="s1")
    assert d.reason is Reason.ALLOWED and d.name == "routed"


def test_session_that_never_listed_tools_falls_back_to_caller_snapshot(app):
    app.visibility.listed("crm", "s1", ALICE, "tools", ["open_tool"])
    app.visibility.listed("crm", "s2", ALICE, "prompts", ["draft_reply"])      # s2 never listed tools
    assert tool(app, "routed", session="s2").reason is Reason.UNKNOWN_CAPABILITY
    assert tool(app, "open_tool", session="s2").reason is Reason.ALLOWED


def test_a_caller_without_any_snapshot_falls_back_to_server_wide(app):
    app.visibility.listed("crm", "s1", ALICE, "tools", ["open_tool"])          # alice's view only
    assert tool(app, "export_customers", session="s9", claims=ADMIN).reason is Reason.ALLOWED
    assert tool(app, "routed", claims=ADMIN).reason is Reason.ALLOWED


def test_session_snapshot_wins_over_caller_snapshot(app):
    app.visibility.listed("crm", "s1", ALICE, "tools", ["open_tool", "routed"])
    app.visibility.listed("crm", "s2", ALICE, "tools", ["open_tool"])          # caller's latest: no routed
    assert tool(app, "routed", session="s1").reason is Reason.ALLOWED
    assert tool(app, "routed", session="s2").reason is Reason.UNKNOWN_CAPABILITY
    assert tool(app, "routed", session="s3").reason is Reason.UNKNOWN_CAPABILITY   # s3: caller's snapshot


def test_stateless_request_uses_the_caller_snapshot(app):
    app.visibility.listed("crm", "", ALICE, "tools", ["open_tool"])
    assert tool(app, "routed").reason is Reason.UNKNOWN_CAPABILITY
    assert tool(app, "open_tool").reason is Reason.ALLOWED
    assert tool(app, "routed", claims=ADMIN).reason is Reason.ALLOWED          # another caller


def test_listed_but_forbidden_stays_not_allowed(app):
    app.visibility.listed("crm", "s1", ALICE, "tools", ["open_tool", "export_customers"])
    d = tool(app, "export_customers", session="s1")
    assert d.reason is Reason.NOT_ALLOWED


def test_not_published_at_all_is_unknown_whatever_was_listed(app):
    app.visibility.listed("crm", "s1", ALICE, "tools", ["ghost"])              # listed, but not in the spec
    d = tool(app, "ghost", session="s1")
    assert d.reason is Reason.UNKNOWN_CAPABILITY and "published spec" in d.detail


def test_a_confirmed_delete_ends_the_sessions_visibility(app):
    app.visibility.listed("crm", "s1", ALICE, "tools", ["open_tool", "routed"])
    app.visibility.listed("crm", "s2", ALICE, "tools", ["open_tool"])
    assert tool(app, "routed", session="s1").allowed
    assert check(app, None, session="s1", method="DELETE").allowed
    assert app.visibility.view("crm", "s1", ALICE)[0] is not None     # the server has not answered yet
    app.learner.on_session_end("crm", "s1", "refused")
    assert tool(app, "routed", session="s1").allowed                    # a refused DELETE: still the session's
    app.learner.on_session_end("crm", "s1", "ended")
    assert app.visibility.view("crm", "s1", ALICE)[0] is None
    assert tool(app, "routed", session="s1").reason is Reason.UNKNOWN_CAPABILITY   # the caller's view now


# -- resources and prompts ------------------------------------------------------------------------------

def test_concrete_resource_against_the_sessions_resources_snapshot(app):
    app.visibility.listed("crm", "s1", ALICE, "resources", ["crm://reports/summary"])
    assert read(app, "crm://reports/summary", session="s1").reason is Reason.ALLOWED
    d = read(app, "crm://reports/daily", session="s1")
    assert d.reason is Reason.UNKNOWN_CAPABILITY and "resource" in d.detail


def test_template_derived_uri_against_the_sessions_templates_snapshot(app):
    app.visibility.listed("crm", "s1", ALICE, "resourceTemplates", ["crm://customers/{customer_id}"])
    assert read(app, "crm://customers/c-100", session="s1").reason is Reason.ALLOWED
    d = read(app, "crm://orders/o-1", session="s1")
    assert d.reason is Reason.UNKNOWN_CAPABILITY and "template" in d.detail


def test_resources_snapshot_does_not_bind_templates(app):
    app.visibility.listed("crm", "s1", ALICE, "resources", ["crm://reports/summary"])
    assert read(app, "crm://orders/o-1", session="s1").reason is Reason.ALLOWED     # no templates snapshot


def test_templates_snapshot_does_not_bind_concrete_resources(app):
    app.visibility.listed("crm", "s1", ALICE, "resourceTemplates", ["crm://orders/{order_id}"])
    assert read(app, "crm://reports/daily", session="s1").reason is Reason.ALLOWED


def test_listed_template_forbidden_by_policy_is_not_allowed(app):
    app.visibility.listed("crm", "s1", ROOT, "resourceTemplates", ["crm://customers/{customer_id}"])
    nobody = {"iss": "https://issuer", "sub": "root", "groups": [], "client_id": "agent"}
    assert read(app, "crm://customers/c-1", session="s1", claims=nobody).reason is Reason.NOT_ALLOWED


def test_completion_of_an_unlisted_template_is_unknown(app):
    app.visibility.listed("crm", "s1", ALICE, "resourceTemplates", ["crm://customers/{customer_id}"])
    params = {"ref": {"type": "ref/resource", "uri": "crm://orders/{order_id}"},
              "argument": {"name": "order_id", "value": "o"}}
    assert check(app, rpc("completion/complete", params), session="s1").reason is Reason.UNKNOWN_CAPABILITY
    params["ref"]["uri"] = "crm://customers/{customer_id}"
    assert check(app, rpc("completion/complete", params), session="s1").reason is Reason.ALLOWED


def test_prompts_against_the_sessions_prompts_snapshot(app):
    app.visibility.listed("crm", "s1", ALICE, "prompts", ["draft_reply"])
    assert prompt(app, "draft_reply", session="s1").reason is Reason.ALLOWED
    assert prompt(app, "summarize", session="s1").reason is Reason.UNKNOWN_CAPABILITY
    assert prompt(app, "summarize", session="s2", claims=ADMIN).reason is Reason.ALLOWED


def test_kinds_bind_independently(app):
    app.visibility.listed("crm", "s1", ALICE, "prompts", ["draft_reply"])
    assert tool(app, "routed", session="s1").reason is Reason.ALLOWED      # tools never listed


# -- policy switch -----------------------------------------------------------------------------------------

def test_visibility_binding_false_turns_it_off(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY.read_text().replace("visibilityBinding: true", "visibilityBinding: false"))
    a = make_app(p)
    assert a.ctx is not None and a.ctx.policy.sessions.visibility_binding is False
    a.visibility.listed("crm", "s1", ALICE, "tools", ["open_tool"])
    a.visibility.listed("crm", "s1", ALICE, "resources", ["crm://reports/summary"])
    assert tool(a, "routed", session="s1").reason is Reason.ALLOWED
    assert read(a, "crm://reports/daily", session="s1").reason is Reason.ALLOWED
    assert tool(a, "routed").reason is Reason.ALLOWED


def test_visibility_binding_is_on_by_default(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY.read_text().replace("sessions: {bindToCaller: true, visibilityBinding: true}",
                                            "sessions: {bindToCaller: true}"))
    a = make_app(p)
    a.visibility.listed("crm", "s1", ALICE, "tools", ["open_tool"])
    assert tool(a, "routed", session="s1").reason is Reason.UNKNOWN_CAPABILITY


# -- fed the way ext_proc feeds it ------------------------------------------------------------------------

def _answer(app: App, d: Decision, body: bytes) -> bytes:
    """ext_proc's side: the learn header from the Check, then the response through the exchange."""
    assert d.plan.entries
    identity = ({}, {"envoy.filters.http.jwt_authn": {"jwt_payload": d.caller.claims}})   # what Envoy forwards
    ex = app.learner.exchange(d.server, d.caller.key, d.session_id, encode_learn_header(d.plan.entries, d.plan.view), identity)
    assert ex is not None
    ex.on_response_headers(200, {"content-type": "application/json"})
    ex.on_body(body, True)
    return ex.rewriter.feed(body, True) if ex.rewriter is not None else body


def test_a_list_seen_over_ext_proc_binds_the_session(app):
    d = check(app, rpc("tools/list", mid=5), session="s1")
    assert d.allowed
    shown_to_client = _answer(app, d, orjson.dumps({"jsonrpc": "2.0", "id": 5, "result": {"tools": TOOLS[:3]}}))
    # the client sees what the server listed minus what the policy forbids it (filterLists)
    assert [t["name"] for t in orjson.loads(shown_to_client)["result"]["tools"]] == ["open_tool", "routed", "lookup"]
    assert tool(app, "open_tool", session="s1").reason is Reason.ALLOWED
    # export_customers is in the server-wide spec but this session was not listed it
    assert tool(app, "export_customers", session="s1", claims=SUPPORT).reason is Reason.UNKNOWN_CAPABILITY


def test_a_filtered_out_tool_that_was_listed_stays_not_allowed(app):
    d = check(app, rpc("tools/list", mid=5), session="s1")
    out = _answer(app, d, orjson.dumps({"jsonrpc": "2.0", "id": 5, "result": {"tools": TOOLS}}))
    assert "export_customers" not in [t["name"] for t in orjson.loads(out)["result"]["tools"]]
    assert tool(app, "export_customers", session="s1").reason is Reason.NOT_ALLOWED
