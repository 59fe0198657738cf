"""RiskEngine and stages: points per reason, decay, the recon -> probe -> extract chain, blocking,
volume, bounds and replication hooks. Time is a fake clock (never the wall clock)."""

from __future__ import annotations

from typing import Any

import pytest

from extauthz.core.reasons import Reason
from extauthz.risk.chain import CHAIN_MIN_POINTS, ESCALATE_AFTER, ESCALATE_MAX, ESCALATE_STEP, LONG_WINDOW
from extauthz.risk.engine import (
    CHAIN_WINDOW,
    EVIDENCE_PER_STAGE,
    MAX_ALERTS_PER_CALLER,
    MAX_SESSIONS_PER_CALLER,
    RiskEngine,
)
from extauthz.risk.stages import (
    CHAIN_POINTS,
    DENIAL_STAGE,
    EXTRACT,
    LIST_METHODS,
    PROBE,
    RECON,
    USE_METHODS,
    VOLUME_POINTS,
    stage_of,
)
from extauthz.shared.changes import RiskEvent, decode

from .conftest import Clock

ALICE = "https://issuer|alice|agent"
BOB = "https://issuer|bob|agent"


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
def test_allowed_list_is_not_recon(method):
    """Every client lists at every session start and reconnect (issue 15, item 5)."""
    assert stage_of(Reason.ALLOWED, method, False) == (None, 0.0)
    assert stage_of(Reason.ALLOWED, method, True) == (None, 0.0)


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
    probing(eng)
    rec(eng, PROBE, 60, reason="not_allowed", name="export_all")
    alert = rec(eng, EXTRACT, 0, reason="allowed", name="lookup")
    assert alert is not None
    why = eng.blocked(ALICE)
    assert why and "chain recon -> probe -> extract" in why


# -- the attack chain ---------------------------------------------------------------------------------------

def probing(e: RiskEngine, *, session: str = "s1", caller: str = ALICE, names: str = "abcde") -> None:
    """Just enough: 2 unknown names and 3 probes, 5 distinct denials worth 36."""
    for n in names[:2]:
        rec(e, RECON, 6, reason="unknown_capability", name=f"ghost_{n}", session=session, caller=caller)
    for n in names[2:5]:
        rec(e, PROBE, 8, reason="not_allowed", name=f"admin_{n}", session=session, caller=caller)


def test_chain_raises_an_alert_with_its_evidence(eng):
    alerts: list[dict[str, Any]] = []
    eng.on_alert = alerts.append
    assert eng.record(ALICE, decision_id="d-list", session_id="s1", server="crm", method="tools/list", name="",
                      reason="allowed", stage=None, points=0) is None
    for i, name in enumerate(("ghost", "phantom")):
        assert eng.record(ALICE, decision_id=f"d-recon{i}", session_id="s1", server="crm", method="tools/call",
                          name=name, reason="unknown_capability", stage=RECON, points=6) is None
    for i, name in enumerate(("lookup", "search", "export")):
        assert eng.record(ALICE, decision_id=f"d-probe{i}", session_id="s2", server="crm", method="tools/call",
                          name=name, reason="schema_violation", stage=PROBE, points=8) is None
    alert = eng.record(ALICE, decision_id="d-extract", session_id="s3", server="crm", method="resources/read",
                       name="crm://customers/c-1", reason="allowed", stage=EXTRACT, points=0)
    assert alert is not None
    assert alerts == [alert] and eng.alerts_total == 1
    assert alert["alert"] == "attack_chain" and alert["caller"] == ALICE
    assert alert["sessions"] == ["s1", "s2", "s3"]
    assert [e["decisionId"] for e in alert["stages"][RECON]] == ["d-recon0", "d-recon1"]      # not the listing
    assert [e["decisionId"] for e in alert["stages"][PROBE]] == ["d-probe0", "d-probe1", "d-probe2"]
    assert [e["decisionId"] for e in alert["stages"][EXTRACT]] == ["d-extract"]
    assert alert["points"] == CHAIN_POINTS
    assert "unknown_capability phantom" in alert["summary"] and "schema_violation export" in alert["summary"]
    assert eng.score(ALICE) == pytest.approx(12 + 24 + CHAIN_POINTS)
    assert eng.get(ALICE).alerts == [alert]


def test_listing_and_one_mistake_then_sensitive_use_is_no_chain(eng):
    """The issue's CRM session: lists, one schema mistake, customer lookups all day."""
    for m in sorted(LIST_METHODS):
        rec(eng, None, 0, method=m, reason="allowed")
    rec(eng, PROBE, 8, reason="schema_violation", name="search_customers")
    for _ in range(50):
        assert rec(eng, EXTRACT, 0, reason="allowed", name="lookup_customer") is None
    assert eng.alerts_total == 0 and eng.score(ALICE) == pytest.approx(8)


@pytest.mark.parametrize("recon,probe", [(1, 3), (2, 2), (0, 6), (6, 0)])
def test_a_chain_needs_enough_distinct_recon_and_probe(eng, recon, probe):
    """Below CHAIN_MIN_POINTS, or without both kinds, sensitive use is not a chain."""
    for i in range(recon):
        rec(eng, RECON, 6, name=f"ghost{i}")
    for i in range(probe):
        rec(eng, PROBE, 8, name=f"probe{i}")
    total = recon * 6 + probe * 8
    assert not (total >= CHAIN_MIN_POINTS and recon and probe)
    assert rec(eng, EXTRACT) is None


def test_a_chain_needs_several_denials_not_one_big_one(eng):
    rec(eng, RECON, 6)
    rec(eng, PROBE, 50)                      # points enough, but two denials are not probing
    assert rec(eng, EXTRACT) is None
    rec(eng, PROBE, 8, name="other")
    rec(eng, RECON, 6, name="ghost2")
    assert rec(eng, EXTRACT) is not None     # four distinct denials


def test_probe_then_recon_counts_too(eng):
    """An attacker who tries the gate first and guesses names afterwards is no less one."""
    for i in range(3):
        rec(eng, PROBE, 8, name=f"p{i}", session="p")
    for i in range(2):
        rec(eng, RECON, 6, name=f"r{i}", session="r")
    alert = rec(eng, EXTRACT, session="x")
    assert alert is not None and alert["sessions"] == ["r", "p", "x"]      # listed in stage order


def test_extract_before_the_evidence_does_not_count(eng):
    assert rec(eng, EXTRACT, session="early") is None
    probing(eng, session="p")
    assert eng.alerts_total == 0
    alert = rec(eng, EXTRACT, session="late")
    assert alert is not None
    assert "early" not in str(alert["stages"])


def test_chain_is_per_caller(eng):
    probing(eng, caller=ALICE, names="ab")
    probing(eng, caller=BOB, names="abcde"[2:] + "xy")
    assert rec(eng, EXTRACT, caller=ALICE) is None
    assert eng.alerts_total == 0


def test_evidence_older_than_the_window_does_not_count(eng, clock):
    probing(eng, names="ab")                 # the two unknown names only
    clock.advance(CHAIN_WINDOW + 1)
    for i in range(3):
        rec(eng, PROBE, 8, name=f"late{i}")
    assert rec(eng, EXTRACT) is None
    assert eng.alerts_total == 0


def test_the_window_slides(eng, clock):
    """Evidence spread over more than the window still chains if enough of it is recent."""
    rec(eng, RECON, 6, name="old")
    clock.advance(CHAIN_WINDOW - 10)
    rec(eng, RECON, 6, name="new")
    for i in range(3):
        rec(eng, PROBE, 8, name=f"p{i}")
    clock.advance(20)                        # "old" has left the window: 6 + 24 < 36
    assert rec(eng, EXTRACT) is None
    rec(eng, RECON, 6, name="newer")
    assert rec(eng, EXTRACT) is not None


def test_chain_window_uses_the_events_own_time(eng):
    for i in range(2):
        rec(eng, RECON, 6, name=f"r{i}", at=1000.0)
    for i in range(3):
        rec(eng, PROBE, 8, name=f"p{i}", at=1000.0 + CHAIN_WINDOW + 5)
    assert rec(eng, EXTRACT, at=1000.0 + CHAIN_WINDOW + 6) is None


def test_chain_restarts_after_an_alert(eng):
    probing(eng)
    assert rec(eng, EXTRACT) is not None
    assert eng.summary(eng.get(ALICE))["chain"] == []
    assert rec(eng, EXTRACT) is None         # the same evidence never makes a second alert
    probing(eng, names="fghij")
    assert rec(eng, EXTRACT) is not None
    assert eng.alerts_total == 2


def test_the_alert_reports_a_bounded_evidence_list_with_the_latest(eng):
    rec(eng, RECON, 6)
    for i in range(EVIDENCE_PER_STAGE + 4):
        rec(eng, PROBE, 8, name=f"p{i}")
    alert = rec(eng, EXTRACT)
    probes = alert["stages"][PROBE]
    assert len(probes) == EVIDENCE_PER_STAGE
    assert probes[-1]["name"] == f"p{EVIDENCE_PER_STAGE + 3}"
    assert probes[0]["name"] == "p0"


def test_unscored_events_are_not_evidence(eng):
    rec(eng, RECON, 0, name="list1")
    rec(eng, PROBE, 0, name="retry")
    assert list(eng.get(ALICE).evidence) == []


def test_alerts_kept_per_caller_are_bounded(eng):
    for i in range(MAX_ALERTS_PER_CALLER + 3):
        probing(eng, names=f"{i}a{i}b{i}c{i}d{i}e"[::2] + "xyzuv")
        assert rec(eng, EXTRACT, name=f"x{i}") is not None
    alerts = eng.get(ALICE).alerts
    assert len(alerts) == MAX_ALERTS_PER_CALLER
    assert "x" + str(MAX_ALERTS_PER_CALLER + 2) in alerts[-1]["summary"]
    assert eng.alerts_total == MAX_ALERTS_PER_CALLER + 3


# -- escalation: many distinct denials over hours -------------------------------------------------------------

def test_distinct_denials_past_the_usual_share_escalate(eng, clock):
    for i in range(ESCALATE_AFTER):
        rec(eng, PROBE, 8, name=f"p{i}")
        assert eng.get(ALICE).timeline[-1].points == 8
    rec(eng, PROBE, 8, name="next")
    assert eng.get(ALICE).timeline[-1].points == pytest.approx(8 * (1 + 1 / ESCALATE_STEP))
    for i in range(40):
        rec(eng, PROBE, 8, name=f"q{i}")
    assert eng.get(ALICE).timeline[-1].points == pytest.approx(8 * ESCALATE_MAX)


def test_escalation_forgets_after_the_long_window(eng, clock):
    for i in range(ESCALATE_AFTER + 4):
        rec(eng, PROBE, 8, name=f"p{i}")
    clock.advance(LONG_WINDOW + 1)
    rec(eng, PROBE, 8, name="later")
    assert eng.get(ALICE).timeline[-1].points == 8


def test_a_slow_probe_under_the_decay_is_blocked(eng, clock):
    """One new denial every 7 minutes (7 points of decay each) still reaches blockAt."""
    steps = 0
    while not eng.blocked(ALICE):
        clock.advance(7 * 60)
        rec(eng, PROBE, 8, name=f"p{steps}")
        steps += 1
        assert steps < 60
    assert steps > ESCALATE_AFTER


def test_replicated_points_are_not_escalated_again(eng):
    for i in range(ESCALATE_AFTER + 8):
        rec(eng, PROBE, 8, name=f"p{i}")
    eng.apply(RiskEvent(ALICE, eng.clock.time(), "relayed-1", "s1", "crm", "tools/call", "relayed", "x", PROBE, 8))
    assert eng.get(ALICE).timeline[-1].points == 8


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


def test_plain_extracts_are_published_only_when_they_complete_a_chain(eng, published):
    rec(eng, EXTRACT, 0)                     # nothing to chain: not relayed
    assert published == []
    probing(eng)
    assert len(published) == 5
    rec(eng, EXTRACT, 0)                     # completes the chain
    assert len(published) == 6


def test_replicated_records_score_but_are_not_published(eng, published):
    eng.apply(RiskEvent(ALICE, 123.0, "d1", "s1", "crm", "tools/call", "x", "not_allowed", PROBE, 8))
    assert published == []
    assert eng.score(ALICE) == pytest.approx(8)
    assert eng.get(ALICE).timeline[-1].at == 123.0


def test_published_payload_replays_into_another_engine(eng, published, clock):
    other = RiskEngine()
    probing(eng, session="s1")
    rec(eng, PROBE, 8, reason="schema_violation", name="lookup", session="s2")
    rec(eng, None, 0, reason="allowed", name="lookup", session="s2")       # corrects it
    rec(eng, EXTRACT, 0, session="s3")
    for op, m in published:
        other.apply(decode({"op": op, **m}))
    assert other.score(ALICE) == pytest.approx(eng.score(ALICE))
    assert other.score(ALICE) == pytest.approx(36 + CHAIN_POINTS)        # the mistake forgiven there too
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
