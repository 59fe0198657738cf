"""The risk engine wired into App.check: scoring each decision, risk_blocked denials, the chain
alert on the decision log line that completed it, policy switches (enabled, monitor)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from extauthz.app import App
from extauthz.core.decision import Decision
from extauthz.core.reasons import Reason
from extauthz.mcp.request import HttpRequest
from extauthz.risk.stages import CHAIN_POINTS, VOLUME_POINTS

from .conftest import Clock

POLICY = Path(__file__).parent / "policy.yaml"
ALICE_CLAIMS = {"iss": "https://issuer", "sub": "alice", "groups": ["support"], "client_id": "agent"}
BOB_CLAIMS = {"iss": "https://issuer", "sub": "bob", "groups": ["support"], "client_id": "agent"}
ALICE = "https://issuer|alice|agent"
BOB = "https://issuer|bob|agent"
SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}}
TOOLS = [{"name": n, "inputSchema": SCHEMA}
         for n in ("open_tool", "export_data", "admin_only", *(f"admin_{i}" for i in range(20)))]


class Harness:
    def __init__(self, policy_text: str | None, tmp: Path) -> None:
        path = POLICY
        if policy_text is not None:
            path = tmp / "policy.yaml"
            path.write_text(policy_text)
        self.out = io.BytesIO()
        self.app = App(str(path), decision_out=self.out)
        assert self.app.ctx is not None
        self.app.specs.apply_page("crm", "tools", TOOLS, first=True, last=True)

    def check(self, msg: Any, *, session: str | None = None, claims: dict[str, Any] = ALICE_CLAIMS,
              authority: str = "crm.example.com") -> Decision:
        headers = {"content-type": "application/json"}
        if session:
            headers["mcp-session-id"] = session
        return self.app.check(HttpRequest(method="POST", path="/mcp", authority=authority, headers=headers,
                                          body=orjson.dumps(msg), partial=False,
                                          metadata={"envoy.filters.http.jwt_authn": {"jwt_payload": claims}}))

    def call(self, name: str, args: dict[str, Any] | None = None, **kw: Any) -> Decision:
        return self.check({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                           "params": {"name": name, "arguments": args or {}}}, **kw)

    def rpc(self, method: str, **kw: Any) -> Decision:
        return self.check({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}, **kw)

    def log(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.out.getvalue().splitlines()]

    def score(self, caller: str = ALICE) -> float:
        return self.app.risk.score(caller)


@pytest.fixture
def h(clock: Clock, tmp_path: Path) -> Harness:
    return Harness(None, tmp_path)


def variant(tmp_path: Path, old: str, new: str) -> Harness:
    text = POLICY.read_text()
    assert old in text
    return Harness(text.replace(old, new), tmp_path)


# -- points per reason through Check ------------------------------------------------------------------------

@pytest.mark.parametrize("make,reason,points", [
    (lambda h: h.call("ghost_tool"), Reason.UNKNOWN_CAPABILITY, 6.0),
    (lambda h: h.rpc("tools/ghost"), Reason.UNKNOWN_METHOD, 6.0),
    (lambda h: h.call("admin_only"), Reason.NOT_ALLOWED, 8.0),
    (lambda h: h.call("open_tool", {"q": "x", "include_internal_notes": True}), Reason.SCHEMA_VIOLATION, 8.0),
    (lambda h: h.call("cafe\u0301"), Reason.MALFORMED_REQUEST, 4.0),                 # a name not in NFC
    (lambda h: h.call("open_tool", {"q": "x"}), Reason.ALLOWED, 0.0),
    (lambda h: h.rpc("tools/list"), Reason.ALLOWED, 0.0),
    (lambda h: h.call("export_data", {"q": "x"}), Reason.ALLOWED, 0.0),     # extraction alone scores nothing
])
def test_points_per_reason_through_check(h, make, reason, points):
    d = make(h)
    assert d.reason is reason
    assert h.score() == pytest.approx(points)
    st = h.app.risk.get(ALICE)
    assert st is not None and st.timeline[-1].decision_id == d.decision_id


@pytest.mark.parametrize("make,reason,points", [
    (lambda h: h.check({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, authority="nobody.example.com"),
     Reason.UNKNOWN_SERVER, 3.0),                                                      # stages: recon, 3
    (lambda h: h.check({"jsonrpc": "1.0", "id": 1, "method": "tools/list"}), Reason.MALFORMED_REQUEST, 4.0),
    (lambda h: h.call("open_tool", {"q": "x" * 70000}), Reason.PAYLOAD_TOO_LARGE, 8.0),
], ids=["unknown_server", "malformed_body", "payload_too_large"])
def test_denials_decided_before_identity_still_score(h, make, reason, points):
    """extauthz/risk/stages.py gives these reasons points (requests to servers nobody configured,
    malformed bodies, oversized payloads); an authenticated caller sending them must be scored."""
    d = make(h)
    assert d.reason is reason
    assert h.score() == pytest.approx(points)


def test_session_hijack_scores_the_presenter(h):
    assert h.rpc("tools/list", session="s-alice").allowed
    d = h.rpc("tools/list", session="s-alice", claims=BOB_CLAIMS)
    assert d.reason is Reason.SESSION_HIJACK
    assert h.score(BOB) == pytest.approx(25)
    assert h.score(ALICE) == 0.0


# -- blocking -------------------------------------------------------------------------------------------------

def test_blocked_at_block_at_then_free_after_decay(h, clock):
    for i in range(4):
        h.call(f"admin_{i}")                     # 4 distinct denials x 8 = 32 >= 30
    d = h.call("open_tool", {"q": "x"})
    assert d.reason is Reason.RISK_BLOCKED
    assert not d.wire_allowed and "risk score 32 >= 30" in d.detail
    assert h.score(BOB) == 0.0 and h.call("open_tool", {"q": "x"}, claims=BOB_CLAIMS).allowed   # per caller
    clock.advance(60 * 2 + 1)                    # 32 - 2.02 < 30
    assert h.call("open_tool", {"q": "x"}).allowed


def test_risk_blocked_decisions_add_no_points(h):
    for i in range(4):
        h.call(f"admin_{i}")
    before = h.score()
    for _ in range(10):
        assert h.call("admin_only").reason is Reason.RISK_BLOCKED   # would be not_allowed: never evaluated
    assert h.score() == pytest.approx(before)
    assert h.app.risk.get(ALICE).timeline[-1].reason == "risk_blocked"


def test_risk_blocked_is_logged(h):
    for i in range(4):
        h.call(f"admin_{i}")
    d = h.call("open_tool", {"q": "x"})
    line = h.log()[-1]
    assert line["decision_id"] == d.decision_id
    assert line["reason"] == "risk_blocked" and line["decision"] == "deny"


def test_risk_disabled_never_blocks(clock, tmp_path):
    h = variant(tmp_path, "risk: {enabled: true,", "risk: {enabled: false,")
    for i in range(20):
        assert h.call(f"admin_{i}").reason is Reason.NOT_ALLOWED
    assert h.score() >= 30
    assert h.call("open_tool", {"q": "x"}).allowed


def test_monitor_mode_logs_risk_blocked_as_an_allow(clock, tmp_path):
    h = variant(tmp_path, "mode: enforce", "mode: monitor")
    for i in range(4):
        d = h.call(f"admin_{i}")
        assert d.reason is Reason.NOT_ALLOWED and d.wire_allowed
    d = h.call("open_tool", {"q": "x"})
    assert d.reason is Reason.RISK_BLOCKED
    assert d.allowed is False and d.wire_allowed is True
    line = h.log()[-1]
    assert line["reason"] == "risk_blocked" and line["monitor"] is True and line["enforced"] is False


def test_the_same_denial_again_scores_nothing(h):
    """A client retrying a call it may not make is not probing: only distinct denials score."""
    for _ in range(10):
        assert h.call("admin_only").reason is Reason.NOT_ALLOWED
    assert h.score() == pytest.approx(8.0)
    assert h.call("open_tool", {"q": "x"}).allowed
    h.call("admin_0")
    assert h.score() == pytest.approx(16.0)


# -- the chain --------------------------------------------------------------------------------------------------

def test_three_session_chain_alerts_on_the_completing_decision(tmp_path, clock):
    h = variant(tmp_path, "blockAt: 30,", "blockAt: 200,")
    d1 = h.rpc("tools/list", session="s1")                      # listing: not evidence
    d2 = h.call("ghost_tool", session="s1")                     # recon (6)
    d3 = h.call("phantom_tool", session="s1")                   # recon (6)
    probes = [h.call(f"admin_{i}", session="s2") for i in range(3)]     # probe (3 x 8)
    d4 = h.call("export_data", {"q": "all"}, session="s3")      # extract: sensitive use
    assert [d.reason for d in (d1, d2, d3, *probes, d4)] == [
        Reason.ALLOWED, Reason.UNKNOWN_CAPABILITY, Reason.UNKNOWN_CAPABILITY, *[Reason.NOT_ALLOWED] * 3,
        Reason.ALLOWED]
    assert all(d.alert is None for d in (d1, d2, d3, *probes))
    alert = d4.alert
    assert alert is not None and alert["caller"] == ALICE
    assert alert["sessions"] == ["s1", "s2", "s3"]
    assert [e["decisionId"] for e in alert["stages"]["recon"]] == [d2.decision_id, d3.decision_id]
    assert [e["decisionId"] for e in alert["stages"]["probe"]] == [d.decision_id for d in probes]
    assert [e["decisionId"] for e in alert["stages"]["extract"]] == [d4.decision_id]
    assert h.score() == pytest.approx(12 + 24 + CHAIN_POINTS)
    lines = {ln["decision_id"]: ln for ln in h.log()}
    assert lines[d4.decision_id]["alert"] == orjson.loads(orjson.dumps(alert))
    assert all("alert" not in lines[d.decision_id] for d in (d1, d2, d3, *probes))


def test_chain_score_blocks_the_next_request(tmp_path, clock):
    h = variant(tmp_path, "blockAt: 30,", "blockAt: 70,")
    h.call("ghost_tool", session="s1")
    h.call("phantom_tool", session="s1")
    for i in range(3):
        h.call(f"admin_{i}", session="s2")
    assert h.call("export_data", {"q": "x"}, session="s3").alert is not None      # 36 + 40 >= 70
    d = h.call("open_tool", {"q": "x"}, session="s1")
    assert d.reason is Reason.RISK_BLOCKED and "chain recon -> probe -> extract" in d.detail


def test_out_of_order_stages_do_not_alert(h):
    h.call("admin_only", session="s1")                          # probe first: ignored
    h.rpc("tools/list", session="s2")                           # recon
    d = h.call("export_data", {"q": "x"}, session="s3")         # extract before any probe after recon
    assert d.alert is None
    assert h.app.risk.alerts_total == 0
    assert all("alert" not in ln for ln in h.log())


def test_non_sensitive_use_is_not_extraction(h):
    h.rpc("tools/list")
    h.call("admin_only")
    assert h.call("open_tool", {"q": "x"}).alert is None


# -- volume ------------------------------------------------------------------------------------------------------

def test_sensitive_volume_above_limit_scores_once_per_minute(h, clock):
    for _ in range(2):
        assert h.call("export_data", {"q": "x"}).allowed
    assert h.score() == 0.0
    h.call("export_data", {"q": "x"})                           # third in the minute: above 2/min
    assert h.score() == pytest.approx(VOLUME_POINTS)
    h.call("export_data", {"q": "x"})
    assert h.score() == pytest.approx(VOLUME_POINTS)


# -- replication ---------------------------------------------------------------------------------------------------

def test_on_change_only_for_scored_or_chain_events(h):
    published: list[tuple[str, dict[str, Any]]] = []
    h.app.risk.on_change = lambda op, payload: published.append((op, payload))
    for _ in range(5):
        assert h.call("open_tool", {"q": "x"}).allowed
    assert published == []
    d = h.call("admin_only")
    assert [(op, p["decisionId"], p["points"]) for op, p in published] == [("risk", d.decision_id, 8.0)]


def test_a_bookkeeping_failure_never_changes_the_decision(h, monkeypatch):
    """Timelines, scoring and sessions run after the decision: if they fail, the Check still
    answers what was decided (and is logged), never an error."""
    def boom(*a, **k):
        raise RuntimeError("risk bug")
    monkeypatch.setattr(h.app.risk, "record", boom)
    assert h.call("open_tool", {"q": "x"}).allowed
    assert h.call("admin_only").reason is Reason.NOT_ALLOWED
    assert [line["reason"] for line in h.log()[-2:]] == ["allowed", "not_allowed"]
