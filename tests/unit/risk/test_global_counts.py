"""Global rate and volume counts (extauthz.risk.report): what one engine counted joins another's
minute; the volume points of a minute are added once however many replicas cross the limit."""

from __future__ import annotations

from typing import Any

import pytest

from extauthz.risk.engine import RiskEngine
from extauthz.risk.stages import EXTRACT, VOLUME_POINTS
from extauthz.shared.changes import RiskEvent
from extauthz.workers.bus import apply_change

from .conftest import Clock

ALICE = "https://issuer|alice|agent"
_n = 0


def rec(e: RiskEngine, stage: str | None = None, caller: str = ALICE, **kw: Any) -> dict[str, Any] | None:
    global _n
    _n += 1
    return e.record(caller, decision_id=f"d{_n}", session_id="s1", server="crm", method="tools/call", name="n",
                    reason="allowed", stage=stage, points=0.0, **kw)


def engines(n: int, **kw: Any) -> list[RiskEngine]:
    out = []
    for _ in range(n):
        e = RiskEngine(decay_per_minute=0, **kw)
        e.calls_per_minute = 10
        out.append(e)
    return out


def exchange(*es: RiskEngine) -> None:
    """Every engine's report reaches every other (what the bus or Redis carries)."""
    reports = [(e, e.report_counts()) for e in es]
    for sender, records in reports:
        for r in records:
            for e in es:
                if e is not sender:
                    e.add_counts(r["minute"], r["calls"], r["uses"])


def test_reported_calls_join_the_callers_minute_elsewhere(clock: Clock) -> None:
    a, b = engines(2)
    for _ in range(6):
        rec(a)
    for _ in range(3):
        rec(b)
    assert not b.limited(ALICE)
    exchange(a, b)
    assert a.get(ALICE).rate_count == b.get(ALICE).rate_count == 9
    rec(b)
    assert b.limited(ALICE) and a.limited(ALICE) == ""       # b knows 10, a 9 until the next report
    exchange(a, b)
    assert a.limited(ALICE)
    assert a.report_counts() == [] and b.report_counts() == []   # drained: nothing new to say


def test_a_report_of_a_past_minute_is_ignored_and_a_new_minute_starts_fresh(clock: Clock) -> None:
    a, b = engines(2)
    for _ in range(10):
        rec(a)
    old = a.report_counts()
    clock.advance(60)
    rec(b)
    for r in old:
        b.add_counts(r["minute"], r["calls"], r["uses"])
    assert b.get(ALICE).rate_count == 1 and not b.limited(ALICE)
    clock.advance(60)
    b.add_counts(int(clock.wall // 60), {ALICE: 10}, {})        # a caller b has not seen this minute
    assert b.limited(ALICE)


def test_a_minute_that_ended_before_its_report_is_still_reported(clock: Clock) -> None:
    (a,) = engines(1)
    rec(a)
    clock.advance(60)
    rec(a)
    rec(a)
    got = a.report_counts()
    assert [(r["minute"], r["calls"]) for r in got] == [(int(clock.wall // 60) - 1, {ALICE: 1}),
                                                       (int(clock.wall // 60), {ALICE: 2})]


def test_a_replica_whose_clock_is_a_moment_ahead_keeps_its_count(clock: Clock) -> None:
    (a,) = engines(1)
    a.add_counts(int(clock.wall // 60) + 1, {ALICE: 10}, {})
    rec(a)                                   # this minute is the one before: not a reset
    assert a.get(ALICE).rate_count == 11 and a.limited(ALICE)


def test_nothing_is_reported_without_a_limit_and_bad_reports_are_skipped(clock: Clock) -> None:
    (a,) = engines(1)
    a.calls_per_minute = 0
    rec(a)
    assert a.report_counts() == []
    a.add_counts(int(clock.wall // 60), {ALICE: "many", 7: 3, "x": -4}, {})   # type: ignore[dict-item]
    assert a.get("x") is None and a.get(ALICE).rate_count == 1


def test_sensitive_uses_count_over_replicas_for_volume(clock: Clock) -> None:
    a, b = engines(2, volume_per_minute=4)
    published: list[tuple[str, dict[str, Any]]] = []
    b.on_change = lambda op, m: published.append((op, m))
    for _ in range(3):
        rec(a, EXTRACT)
    exchange(a, b)
    rec(b, EXTRACT)
    assert b.score(ALICE) == 0.0                    # 4 in the minute: at the limit
    rec(b, EXTRACT)                                 # the 5th, over both replicas
    assert b.score(ALICE) == VOLUME_POINTS
    op, m = published[-1]
    assert m["volumeMinute"] == int(clock.wall // 60)
    apply_change_to(a, m)
    assert a.score(ALICE) == VOLUME_POINTS
    exchange(a, b)
    rec(a, EXTRACT)                                 # a is over the limit too: that minute is scored
    assert a.score(ALICE) == VOLUME_POINTS


def test_two_replicas_crossing_the_limit_at_once_score_the_minute_once(clock: Clock) -> None:
    a, b = engines(2, volume_per_minute=2)
    out: dict[int, list[dict[str, Any]]] = {id(a): [], id(b): []}
    for e in (a, b):
        e.on_change = lambda op, m, e=e: out[id(e)].append(m)
    for _ in range(3):                              # each over the limit before hearing of the other
        rec(a, EXTRACT)
        rec(b, EXTRACT)
    assert a.score(ALICE) == b.score(ALICE) == VOLUME_POINTS
    for m in out[id(a)]:
        apply_change_to(b, m)
    for m in out[id(b)]:
        apply_change_to(a, m)
    assert a.score(ALICE) == b.score(ALICE) == VOLUME_POINTS


def test_a_relayed_use_is_not_counted_again(clock: Clock) -> None:
    a, b = engines(2, volume_per_minute=100)
    b.apply(RiskEvent(ALICE, clock.wall, "relayed-1", "s1", "crm", "tools/call", "n", "allowed", EXTRACT, 0.0))
    assert b.get(ALICE).volume_count == 0 and b.get(ALICE).rate_count == 0


def apply_change_to(e: RiskEngine, m: dict[str, Any]) -> None:
    class _App:
        risk = e
    apply_change(_App(), {"op": "risk", **m})  # type: ignore[arg-type]


def test_the_bus_applies_rate_records(clock: Clock) -> None:
    (a,) = engines(1)

    class _App:
        risk = a
    apply_change(_App(), {"op": "rate", "minute": int(clock.wall // 60), "calls": {ALICE: 10}, "uses": {}})  # type: ignore[arg-type]
    assert a.limited(ALICE)
    with pytest.raises(ValueError):
        apply_change(_App(), {"op": "rate", "minute": 1, "calls": [ALICE], "uses": {}})  # type: ignore[arg-type]


def test_a_restarted_worker_is_sent_the_minutes_counts(clock: Clock, tmp_path) -> None:
    from extauthz.app import App
    from extauthz.workers.supervisor import catch_up_messages

    from .test_risk_app import POLICY
    sup, fresh = App(str(POLICY)), App(str(POLICY))
    sup.risk.add_counts(int(clock.wall // 60), {ALICE: 7}, {ALICE: 2})   # what the workers reported
    rates = [m for m in catch_up_messages(sup) if m["op"] == "rate"]
    assert len(rates) == 1
    for m in rates * 2:                      # a total, not news: applying it twice counts it once
        apply_change(fresh, m)
    assert fresh.risk.get(ALICE).rate_count == 7 and fresh.risk.get(ALICE).volume_count == 2
