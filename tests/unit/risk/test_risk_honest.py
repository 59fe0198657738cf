"""Issue 15, item 5 through App.check: honest work is never blocked, the product's own false
denials score nothing, distinct probes are told from retries, and risk_blocked names what was asked."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from extauthz.core.reasons import Reason
from extauthz.replay import replay_main

from .conftest import Clock
from .test_risk_app import ALICE, ALICE_CLAIMS, BOB_CLAIMS, POLICY, SCHEMA, TOOLS, Harness

CRM_TOOLS = [*TOOLS,
             {"name": "search", "inputSchema": {"type": "object", "properties": {"limit": {"type": "integer"}}}},
             {"name": "broken", "inputSchema": {"type": "object", "properties": {"n": {"type": "string",
                                                                                     "pattern": "("}}}}]


@pytest.fixture
def h(clock: Clock, tmp_path: Path) -> Harness:
    text = POLICY.read_text().replace(
        '      - {name: "admin_*", allow: {groups: [admin]}}',
        '      - {name: "admin_*", allow: {groups: [admin]}}\n'
        '      - {name: search, allow: {authenticated: true}}\n'
        '      - {name: broken, allow: {authenticated: true}}\n'
        '      - {name: scoped, allow: {authenticated: true}, constraints: [{argument: /q, inClaim: customer_ids}]}\n'
        '    resources:\n'
        '      - {uri: "kb://**", allow: {authenticated: true}}')
    harness = Harness(text, tmp_path)
    harness.app.specs.apply_page("crm", "tools", [*CRM_TOOLS, {"name": "scoped", "inputSchema": SCHEMA}],
                                 first=True, last=True)
    # (a query-form template: no matcher produces kb://find/... from it, so the reads below stay
    # unknown however templates are matched; what counts is that the product may be the one wrong)
    harness.app.specs.apply_page("crm", "resourceTemplates", [{"uriTemplate": "kb://find{?q}", "name": "a"},
                                                             {"uriTemplate": "kb://users/{id}", "name": "u"}],
                                 first=True, last=True)
    return harness


def read(h: Harness, uri: str, **kw: Any) -> Any:
    return h.check({"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": uri}}, **kw)


def test_a_crm_session_with_one_corrected_mistake_is_never_blocked(h, clock):
    """The issue's session: lists, the string "5" for an integer then corrected, sensitive use all day
    (blockAt is 30 in this policy: the old scoring gave such a session 98 points)."""
    for n in range(8):
        sid = f"s{n}"
        for m in ("tools/list", "resources/templates/list", "prompts/list"):
            assert h.rpc(m, session=sid).allowed
        if n == 3:
            assert h.call("search", {"limit": "5"}, session=sid).reason is Reason.SCHEMA_VIOLATION
            clock.advance(4)
            assert h.call("search", {"limit": 5}, session=sid).allowed
        for _ in range(20):
            clock.advance(30)
            assert h.call("export_data", {"q": "customer"}, session=sid).allowed
    assert h.score() == 0.0
    assert h.app.risk.alerts_total == 0
    assert h.app.risk.summary(h.app.risk.get(ALICE))["chain"] == []


def test_a_schema_the_product_cannot_compile_scores_nothing(h):
    for i in range(5):
        d = h.call("broken", {"n": f"name {i}"})
        assert d.reason is Reason.SCHEMA_VIOLATION and "unusable input schema" in d.detail
    assert h.score() == 0.0


def test_a_read_below_a_template_the_product_may_not_expand_scores_nothing(h):
    for path in ("/billing/refunds.md", "/shipping/delays.md", "/a/b/c"):
        assert read(h, f"kb://find{path}").reason is Reason.UNKNOWN_CAPABILITY
    assert h.score() == 0.0
    assert read(h, "kb://secrets/keys").reason is Reason.UNKNOWN_CAPABILITY     # not under a template
    assert h.score() == pytest.approx(6.0)
    assert read(h, "kb://users/u-1/tokens").reason is Reason.UNKNOWN_CAPABILITY  # {id} is one segment:
    assert h.score() == pytest.approx(12.0)                                        # a real unknown


def test_an_internal_error_scores_nothing(h, monkeypatch):
    import extauthz.app as app_mod

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("bug")
    monkeypatch.setattr(app_mod, "decide", boom)
    for _ in range(5):
        d = h.call("open_tool", {"q": "x"})
        assert d.reason is Reason.MALFORMED_REQUEST and "internal error" in d.detail
    assert h.score() == 0.0


def test_each_customer_id_tried_is_a_distinct_probe_and_a_retry_is_not(h):
    assert h.call("scoped", {"q": "c-1"}).reason is Reason.CONSTRAINT_VIOLATED
    assert h.call("scoped", {"q": "c-1"}).reason is Reason.CONSTRAINT_VIOLATED        # the same: a retry
    assert h.score() == pytest.approx(8.0)
    h.call("scoped", {"q": "c-2"})
    assert h.score() == pytest.approx(16.0)


def test_each_stolen_session_id_is_a_distinct_probe(h):
    for sid in ("v1", "v2", "v3"):
        assert h.rpc("tools/list", session=sid).allowed
    d = h.rpc("tools/list", session="v1", claims=BOB_CLAIMS)
    assert d.reason is Reason.SESSION_HIJACK
    h.rpc("tools/list", session="v1", claims=BOB_CLAIMS)                               # the same again
    assert h.score("https://issuer|bob|agent") == pytest.approx(25.0)
    h.rpc("tools/list", session="v2", claims=BOB_CLAIMS)
    assert h.score("https://issuer|bob|agent") == pytest.approx(50.0)


@pytest.mark.parametrize("msg,name", [
    ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "open_tool", "arguments": {}}},
     "open_tool"),
    ({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "kb://articles/faq"}},
     "kb://articles/faq"),
    ({"jsonrpc": "2.0", "id": 1, "method": "prompts/get", "params": {"name": "draft_reply"}}, "draft_reply"),
    ({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}, ""),
    ([{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "open_tool"}},
      {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "admin_0"}}], ""),
])
def test_risk_blocked_log_lines_name_the_capability(h, msg, name):
    for i in range(4):
        h.call(f"admin_{i}")                                 # 32 >= 30
    d = h.check(msg)
    assert d.reason is Reason.RISK_BLOCKED
    line = h.log()[-1]
    assert line["reason"] == "risk_blocked" and line["name"] == name


def test_replay_moves_simulated_time_with_t(tmp_path):
    """Two hours between the denials: the first has decayed away when the second arrives."""
    calls = [{"t": t, "authority": "crm.example.com", "claims": ALICE_CLAIMS,
              "body": {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {}}}}
             for t, name in ((0, "admin_0"), (7200, "admin_1"), (7200, "admin_2"))]
    traffic = tmp_path / "t.jsonl"
    lines = [{"spec": {"server": "crm", "tools": TOOLS}}, *calls]
    traffic.write_text("\n".join(orjson.dumps(c).decode() for c in lines) + "\n")
    out = io.StringIO()
    assert replay_main(str(POLICY), str(traffic), out) == 0
    summary = orjson.loads(out.getvalue().splitlines()[-1])["summary"]
    (alice,) = summary["callers"]
    assert alice["score"] == pytest.approx(16.0)             # 8 decayed to 0, then 8 + 8
    assert alice["lastSeen"] - alice["firstSeen"] == pytest.approx(7200, abs=1)
