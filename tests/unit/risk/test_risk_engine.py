"""RiskEngine and stages: points per reason, decay, the recon -> probe -> extract chain, blocking,
volume, bounds and replication hooks. Time is a fake clock (never the wall clock)."""

from __future__ import annotations

from typing import Any

import pytest

from extauthz.core.reasons import Reason
from extauthz.risk.engine import CHAIN_WINDOW, EVIDENCE_PER_STAGE, MAX_ALERTS_PER_CALLER, MAX_SESSIONS_PER_CALLER, RiskEngine
from extauthz.risk.stages import (CHAIN_POINTS, DENIAL_STAGE, EXTRACT, LIST_METHODS, PROBE, RECON, USE_METHODS,
                                  VOLUME_POINTS, stage_of)

ALICE = "https://issuer|alice|agent"
BOB = "https://issuer|bob|agent"


from .conftest import Clock


@pytest.fixture
def eng(clock: Clock) -> RiskEngine:
    return RiskEngine(block_at=100, decay_per_minute=1, volume_per_minute=600, timeline=64, max_callers=100)


_n = 0


def rec(e: RiskEngine, stage: str | None, points: float = 0.0, *, caller: str = ALICE, session: str = "s1",
        reason: str = "x", name: str = "n", method: str = "tools/call", **kw: Any) -> dict[str, Any] | None:
    global _n
    _n += 1
    return e.record(caller, decision_id=f"d{_n}", session_id=session, server="crm", method=method, name=name,
                    reason=reason, stage=stage, points=points, **kw)


# -- stages: points per reason ---------------------------------------------------------------------------

@pytest.mark.parametrize("reason,expected", [
    (Reason.UNKNOWN_CAPABILITY, (RECON, 6.0)), (Reason.UNKNOWN_METHOD, (RECON, 6.0)),
    (Reason.UNKNOWN_SERVER, (RECON, 3.0)),
    (Reason.SCHEMA_VIOLATION, (PROBE, 8.0)), (Reason.CONSTRAINT_VIOLATED, (PROBE, 8.0)),
    (Reason.NOT_ALLOWED, (PROBE, 8.0)), (Reason.HEADER_MISMATCH, (PROBE, 8.0)),
    (Reason.PAYLOAD_TOO_LARGE, (PROBE, 8.0)), (Reason.MALFORMED_REQUEST, (PROBE, 4.0)),
    (Reason.SESSION_HIJACK, (PROBE, 25.0)),
    (Reason.RISK_BLOCKED, (None, 0.0)), (Reason.QUARANTINED, (None, 0.0)),
    (Reason.UNAUTHENTICATED, (None, 0.0)), (Reason.PARTIAL_BODY, (None, 0.0)), (Reason.RATE_LIMITED, (None, 0.0)),
])
def test_points_per_denial_reason(reason, expected):
    for method in ("tools/call", "tools/list", "resources/read"):
        for sensitive in (False, True):
            assert stage_of(reason, method, sensitive) == expected


def test_every_reason_is_classified():
    for r in Reason:
        stage, points = stage_of(r, "tools/call", False)
        assert stage in (None, RECON, PROBE, EXTRACT) and points >= 0
    assert set(DENIAL_STAGE) < set(Reason)


@pytest.mark.parametrize("method", sorted(LIST_METHODS))
def test_allowed_list_is_recon_without_points(method):
    assert stage_of(Reason.ALLOWED, method, False) == (RECON, 0.0)
    assert stage_of(Reason.ALLOWED, method, True) == (RECON, 0.0)


@pytest.mark.parametrize("method", sorted(USE_METHODS))
def test_allowed_sensitive_use_is_extract_without_points(method):
    assert stage_of(Reason.ALLOWED, method, True) == (EXTRACT, 0.0)
    assert stage_of(Reason.ALLOWED, method, False) == (None, 0.0)


@pytest.mark.parametrize("method", ["initialize", "ping", "notifications/initialized", "GET", "DELETE"])
def test_other_allowed_methods_are_nothing(method):
    assert stage_of(Reason.ALLOWED, method, True) == (None, 0.0)


# -- score and decay --------------------------------------------------------------------------------------

def test_points_accumulate(eng):
    rec(eng, RECON, 6)
    rec(eng, PROBE, 8)
    rec(eng, PROBE, 25)
    assert eng.score(ALICE) == pytest.approx(39)
    assert eng.score(BOB) == 0.0


def test_score_decays_linearly_and_never_below_zero(eng, clock):
    rec(eng, PROBE, 50)
    clock.advance(600)                       # 10 minutes at 1/min
    assert eng.score(ALICE) == pytest.approx(40)
    rec(eng, PROBE, 10)                      # decayed score + new points
    assert eng.score(ALICE) == pytest.approx(50)
    clock.advance(3600 * 24)
    assert eng.score(ALICE) == 0.0


def test_zero_decay_keeps_the_score(clock):
    e = RiskEngine(decay_per_minute=0)
    rec(e, PROBE, 30)
    clock.advance(10 ** 6)
    assert e.score(ALICE) == pytest.approx(30)


def test_unscored_events_are_timelined_but_score_nothing(eng):
    assert rec(eng, None, 0.0) is None
    st = eng.get(ALICE)
    assert st is not None and st.events == 1 and st.score == 0.0 and len(st.timeline) == 1


# -- blocking ---------------------------------------------------------------------------------------------

def test_blocked_at_and_above_block_at(eng):
    assert eng.blocked(ALICE) == ""
    rec(eng, PROBE, 99.5)
    assert eng.blocked(ALICE) == ""
    rec(eng, PROBE, 0.5)                     # exactly 100
    why = eng.blocked(ALICE)
    assert why.startswith("risk score 100 >= 100")
    assert "accumulated denials" in why


def test_blocked_ends_after_decay(eng, clock):
    rec(eng, PROBE, 110)
    assert eng.blocked(ALICE)
    clock.advance(600)                       # 100: still blocked
    assert eng.blocked(ALICE)
    clock.advance(1)
    assert eng.blocked(ALICE) == ""
    assert eng.get(ALICE).blocked_since is None


def test_blocks_are_counted_once_per_crossing(eng, clock):
    blocked: list[str] = []
    eng.on_block = blocked.append
    rec(eng, PROBE, 100)
    rec(eng, PROBE, 10)                      # already blocked: not a new block
    assert blocked == [ALICE] and eng.blocks_total == 1
    clock.advance(3600)
    assert eng.blocked(ALICE) == ""
    rec(eng, PROBE, 100)
    assert blocked == [ALICE, ALICE] and eng.blocks_total == 2


def test_disabled_engine_never_blocks(clock):
    e = RiskEngine(block_at=10, enabled=False)
    e.on_block = lambda c: pytest.fail("blocked while disabled")
    for _ in range(20):
        rec(e, PROBE, 25)
    assert e.score(ALICE) >= 10
    assert e.blocked(ALICE) == ""
    assert e.blocks_total == 0
    assert e.summary(e.get(ALICE))["blocked"] is False


def test_configure_can_disable_a_blocking_engine(eng):
    rec(eng, PROBE, 150)
    assert eng.blocked(ALICE)
    eng.configure(block_at=100, decay_per_minute=1, enabled=False, volume_per_minute=600, timeline=64,
                  max_callers=100)
    assert eng.blocked(ALICE) == ""


def test_block_reason_names_the_last_alert(eng):
    rec(eng, RECON, 6, reason="unknown_capability", name="admin_dump")
    rec(eng, PROBE, 60, reason="not_allowed", name="export_all")
    alert = rec(eng, EXTRACT, 0, reason="allowed", name="lookup")
    assert alert is not None
    why = eng.blocked(ALICE)
    assert why and "chain recon -> probe -> extract" in why


# -- the attack chain ---------------------------------------------------------------------------------------

def test_chain_in_order_raises_an_alert_with_its_evidence(eng):
    alerts: list[dict[str, Any]] = []
    eng.on_alert = alerts.append
    assert eng.record(ALICE, decision_id="d-recon", session_id="s1", server="crm", method="tools/list", name="",
                      reason="allowed", stage=RECON, points=0) is None
    assert eng.record(ALICE, decision_id="d-recon2", session_id="s1", server="crm", method="tools/call",
                      name="ghost", reason="unknown_capability", stage=RECON, points=6) is None
    assert eng.record(ALICE, decision_id="d-probe", session_id="s2", server="crm", method="tools/call",
                      name="lookup", reason="schema_violation", stage=PROBE, points=8) is None
    alert = eng.record(ALICE, decision_id="d-extract", session_id="s3", server="crm", method="tools/call",
                       name="export", reason="allowed", stage=EXTRACT, points=0)
    assert alert is not None
    assert alerts == [alert] and eng.alerts_total == 1
    assert alert["alert"] == "attack_chain" and alert["caller"] == ALICE
    assert alert["sessions"] == ["s1", "s2", "s3"]
    assert [e["decisionId"] for e in alert["stages"][RECON]] == ["d-recon", "d-recon2"]
    assert [e["decisionId"] for e in alert["stages"][PROBE]] == ["d-probe"]
    assert [e["decisionId"] for e in alert["stages"][EXTRACT]] == ["d-extract"]
    assert alert["points"] == CHAIN_POINTS
    assert "unknown_capability ghost" in alert["summary"] and "schema_violation lookup" in alert["summary"]
    assert eng.score(ALICE) == pytest.approx(6 + 8 + CHAIN_POINTS)
    assert eng.get(ALICE).alerts == [alert]


def test_probe_before_recon_does_not_count(eng):
    assert rec(eng, PROBE, 8, session="p0") is None
    assert rec(eng, RECON, 6) is None
    assert rec(eng, EXTRACT) is None             # no probe after the recon yet
    assert eng.get(ALICE).chain.keys() == {RECON}
    assert eng.alerts_total == 0
    assert eng.score(ALICE) == pytest.approx(14)


def test_extract_before_probe_does_not_count(eng):
    rec(eng, RECON, 6, session="r")
    assert rec(eng, EXTRACT, session="early") is None
    assert rec(eng, PROBE, 8, session="p") is None
    assert eng.alerts_total == 0
    alert = rec(eng, EXTRACT, session="late")       # now the order holds
    assert alert is not None
    assert alert["sessions"] == ["r", "p", "late"]
    assert "early" not in str(alert["stages"])


def test_extract_then_probe_then_recon_never_alerts(eng):
    for stage in (EXTRACT, PROBE, RECON, EXTRACT):
        assert rec(eng, stage, 5) is None
    assert eng.alerts_total == 0


def test_recon_after_probe_keeps_the_chain(eng):
    rec(eng, RECON, 6, session="a")
    rec(eng, PROBE, 8, session="b")
    rec(eng, RECON, 6, session="c")
    alert = rec(eng, EXTRACT, session="d")
    assert alert is not None and alert["sessions"] == ["a", "c", "b", "d"]     # listed in stage order


def test_chain_is_per_caller(eng):
    rec(eng, RECON, 6, caller=ALICE)
    rec(eng, PROBE, 8, caller=BOB)
    assert rec(eng, EXTRACT, caller=ALICE) is None
    assert rec(eng, EXTRACT, caller=BOB) is None
    assert eng.alerts_total == 0


def test_chain_expires_after_the_window(eng, clock):
    rec(eng, RECON, 6)
    clock.advance(CHAIN_WINDOW + 1)
    assert rec(eng, PROBE, 8) is None
    assert rec(eng, EXTRACT) is None
    assert eng.alerts_total == 0


def test_chain_within_the_window_alerts(eng, clock):
    rec(eng, RECON, 6)
    clock.advance(CHAIN_WINDOW - 10)
    rec(eng, PROBE, 8)
    clock.advance(9)
    assert rec(eng, EXTRACT) is not None


def test_chain_window_uses_the_events_own_time(eng):
    rec(eng, RECON, 6, at=1000.0)
    rec(eng, PROBE, 8, at=1000.0 + CHAIN_WINDOW + 5)
    assert rec(eng, EXTRACT, at=1000.0 + CHAIN_WINDOW + 6) is None


def test_chain_restarts_after_an_alert(eng):
    rec(eng, RECON, 6)
    rec(eng, PROBE, 8)
    assert rec(eng, EXTRACT) is not None
    assert eng.get(ALICE).chain == {}
    assert rec(eng, EXTRACT) is None
    assert rec(eng, PROBE, 8) is None
    rec(eng, RECON, 0)
    rec(eng, PROBE, 8)
    assert rec(eng, EXTRACT) is not None
    assert eng.alerts_total == 2


def test_evidence_per_stage_is_bounded_and_keeps_the_latest_scored(eng):
    rec(eng, RECON, 6)
    for i in range(EVIDENCE_PER_STAGE + 4):
        rec(eng, PROBE, 1, name=f"p{i}")
    probes = eng.get(ALICE).chain[PROBE]
    assert len(probes) == EVIDENCE_PER_STAGE
    assert probes[-1].name == f"p{EVIDENCE_PER_STAGE + 3}"
    assert probes[0].name == "p0"


def test_unscored_repeats_are_not_evidence(eng):
    rec(eng, RECON, 0, name="list1")
    rec(eng, RECON, 0, name="list2")
    assert [e.name for e in eng.get(ALICE).chain[RECON]] == ["list1"]


def test_alerts_kept_per_caller_are_bounded(eng):
    for i in range(MAX_ALERTS_PER_CALLER + 3):
        rec(eng, RECON, 0)
        rec(eng, PROBE, 0.1)
        assert rec(eng, EXTRACT, name=f"x{i}") is not None
    alerts = eng.get(ALICE).alerts
    assert len(alerts) == MAX_ALERTS_PER_CALLER
    assert "x" + str(MAX_ALERTS_PER_CALLER + 2) in alerts[-1]["summary"]
    assert eng.alerts_total == MAX_ALERTS_PER_CALLER + 3


# -- volume ------------------------------------------------------------------------------------------------

def test_volume_above_the_limit_adds_points_once_per_minute(clock):
    e = RiskEngine(volume_per_minute=3, decay_per_minute=0)
    for _ in range(3):
        rec(e, EXTRACT)
    assert e.score(ALICE) == 0.0
    rec(e, EXTRACT)
    assert e.score(ALICE) == VOLUME_POINTS
    ev = e.get(ALICE).timeline[-1]
    assert ev.points == VOLUME_POINTS and "volume above 3/min" in ev.reason
    for _ in range(10):
        rec(e, EXTRACT)
    assert e.score(ALICE) == VOLUME_POINTS            # once per minute
    clock.advance(60)
    for _ in range(3):
        rec(e, EXTRACT)
    assert e.score(ALICE) == VOLUME_POINTS
    rec(e, EXTRACT)
    assert e.score(ALICE) == 2 * VOLUME_POINTS


def test_volume_counts_only_extract_events(clock):
    e = RiskEngine(volume_per_minute=2, decay_per_minute=0)
    for _ in range(10):
        rec(e, RECON, 0)
        rec(e, None, 0)
    assert e.score(ALICE) == 0.0


# -- bounds ---------------------------------------------------------------------------------------------------

def test_callers_are_bounded_least_recent_evicted(clock):
    e = RiskEngine(max_callers=2)
    rec(e, PROBE, 1, caller="a")
    rec(e, PROBE, 1, caller="b")
    rec(e, PROBE, 1, caller="a")          # a is recent again
    rec(e, PROBE, 1, caller="c")
    assert len(e) == 2
    assert e.get("b") is None
    assert e.get("a") is not None and e.get("c") is not None


def test_timeline_is_a_bounded_ring(clock):
    e = RiskEngine(timeline=3)
    for i in range(5):
        rec(e, None, name=f"e{i}")
    st = e.get(ALICE)
    assert st.timeline.maxlen == 3
    assert [ev.name for ev in st.timeline] == ["e2", "e3", "e4"]
    assert st.events == 5


def test_sessions_per_caller_are_bounded(eng):
    for i in range(MAX_SESSIONS_PER_CALLER + 5):
        rec(eng, None, session=f"s{i}")
    rec(eng, None, session="")                    # stateless: no session recorded
    sessions = list(eng.get(ALICE).sessions)
    assert len(sessions) == MAX_SESSIONS_PER_CALLER
    assert sessions[-1] == f"s{MAX_SESSIONS_PER_CALLER + 4}"
    assert "s0" not in sessions


# -- replication hooks --------------------------------------------------------------------------------------

@pytest.fixture
def published(eng) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    eng.on_change = lambda op, payload: out.append((op, payload))
    return out


def test_plain_allowed_calls_are_not_published(eng, published):
    for _ in range(5):
        rec(eng, None, 0)
    assert published == []


def test_scored_events_are_published(eng, published):
    eng.record(ALICE, decision_id="d1", session_id="s1", server="crm", method="tools/call", name="x",
               reason="not_allowed", stage=PROBE, points=8)
    assert len(published) == 1
    op, payload = published[0]
    assert op == "risk"
    assert payload["caller"] == ALICE and payload["decisionId"] == "d1" and payload["points"] == 8
    assert payload["stage"] == PROBE and payload["sessionId"] == "s1" and payload["reason"] == "not_allowed"


def test_chain_moves_are_published_and_repeats_are_not(eng, published):
    rec(eng, RECON, 0)               # first recon evidence: the chain moved
    rec(eng, RECON, 0)               # nothing new
    rec(eng, EXTRACT, 0)             # out of order: nothing
    assert len(published) == 1
    rec(eng, PROBE, 0)               # moved
    rec(eng, EXTRACT, 0)             # completes the chain
    assert len(published) == 3


def test_replicated_records_score_but_are_not_published(eng, published):
    eng.record(ALICE, decision_id="d1", session_id="s1", server="crm", method="tools/call", name="x",
               reason="not_allowed", stage=PROBE, points=8, replicated=True, at=123.0)
    assert published == []
    assert eng.score(ALICE) == pytest.approx(8)
    assert eng.get(ALICE).timeline[-1].at == 123.0


def test_published_payload_replays_into_another_engine(eng, published, clock):
    other = RiskEngine()
    rec(eng, RECON, 6, session="s1")
    rec(eng, PROBE, 8, session="s2")
    rec(eng, EXTRACT, 0, session="s3")
    for op, m in published:
        other.record(m["caller"], decision_id=m["decisionId"], session_id=m["sessionId"], server=m["server"],
                     method=m["method"], name=m["name"], reason=m["reason"], stage=m["stage"],
                     points=float(m["points"]), replicated=True, at=m["time"])
    assert other.score(ALICE) == pytest.approx(eng.score(ALICE))
    assert other.alerts_total == 1


# -- views --------------------------------------------------------------------------------------------------

def test_find_by_key_or_subject(eng):
    rec(eng, None, caller=ALICE)
    rec(eng, None, caller="https://other|alice|cli")
    rec(eng, None, caller=BOB)
    assert [s.caller for s in eng.find(ALICE)] == [ALICE]
    assert sorted(s.caller for s in eng.find("alice")) == sorted([ALICE, "https://other|alice|cli"])
    assert eng.find("nobody") == []


def test_summary_and_timeline_shapes(eng):
    rec(eng, RECON, 6, session="s1")
    rec(eng, PROBE, 8, session="s2")
    st = eng.get(ALICE)
    s = eng.summary(st)
    assert s["caller"] == ALICE and s["score"] == 14 and s["blocked"] is False and s["blockAt"] == 100
    assert s["sessions"] == ["s1", "s2"] and s["chain"] == [RECON, PROBE] and s["events"] == 2
    t = eng.timeline(st)
    assert [e["stage"] for e in t["timeline"]] == [RECON, PROBE]
    assert [c.caller for c in eng.callers()] == [ALICE]
