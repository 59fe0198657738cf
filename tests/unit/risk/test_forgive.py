"""Corrected mistakes are forgiven, listing bursts are recon, and time is injected (no wall clock)."""

from __future__ import annotations

from typing import Any

import pytest

from extauthz.risk import forgive
from extauthz.risk.engine import LIST_BURST_PAIRS, LIST_BURST_WINDOW, RiskEngine
from extauthz.risk.stages import LIST_BURST_POINTS, PROBE, RECON
from extauthz.shared.changes import RiskEvent, decode

ALICE = "https://issuer|alice|agent"


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def eng(clock: FakeClock) -> RiskEngine:
    return RiskEngine(block_at=100, decay_per_minute=1, clock=clock)


_n = 0


def rec(e: RiskEngine, reason: str, *, name: str = "search", points: float = 0.0, stage: str | None = None,
        method: str = "tools/call", server: str = "crm", session: str = "s1", **kw: Any) -> str:
    global _n
    _n += 1
    e.record(ALICE, decision_id=f"d{_n}", session_id=session, server=server, method=method, name=name,
             reason=reason, stage=stage, points=points, **kw)
    return f"d{_n}"


def mistake(e: RiskEngine, name: str = "search", reason: str = "schema_violation", **kw: Any) -> str:
    return rec(e, reason, name=name, points=8, stage=PROBE, **kw)


def test_a_corrected_mistake_is_forgiven(eng, clock):
    bad = mistake(eng)
    assert eng.score(ALICE) == 8
    clock.now += 5
    good = rec(eng, "allowed")
    assert eng.score(ALICE) == pytest.approx(0, abs=0.1)
    st = eng.get(ALICE)
    assert st.timeline[-1].forgives == (bad,)
    assert st.timeline[-2].forgiven_by == good and st.timeline[-2].points == 0
    assert st.timeline[-2].as_json()["forgivenBy"] == good and st.timeline[-1].as_json()["forgives"] == [bad]
    assert eng.summary(st)["chain"] == []                   # no longer evidence


def test_an_oversized_body_is_forgiven_by_the_next_use_on_that_server(eng, clock):
    """payload_too_large is decided before the body is parsed: no method or name to match."""
    mistake(eng, name="", reason="payload_too_large", method="")
    clock.now += 5
    rec(eng, "allowed", name="write_file")
    assert eng.score(ALICE) == pytest.approx(0, abs=0.1)


@pytest.mark.parametrize("how", ["other tool", "other server", "too late", "not correctable", "a denial"])
def test_what_is_not_a_correction(eng, clock, how):
    mistake(eng, reason="not_allowed" if how == "not correctable" else "schema_violation")
    clock.now += forgive.CORRECTION_WINDOW + 1 if how == "too late" else 5
    if how == "a denial":
        rec(eng, "schema_violation", points=0)
    else:
        rec(eng, "allowed", name="lookup" if how == "other tool" else "search",
            server="billing" if how == "other server" else "crm")
    assert eng.score(ALICE) > 2


def test_one_correction_forgives_at_most_the_two_latest(eng, clock):
    ids = [mistake(eng, reason="schema_violation", name="search", session=f"s{i}") for i in range(4)]
    clock.now += 5
    rec(eng, "allowed")
    forgiven = [e.decision_id for e in eng.get(ALICE).evidence if e.forgiven_by]
    assert forgiven == ids[-forgive.PER_CORRECTION:]
    assert eng.score(ALICE) == pytest.approx(16, abs=0.2)


def test_a_fuzzer_slipping_valid_calls_between_its_variants_runs_out_of_forgiveness(eng, clock):
    for i in range(20):
        rec(eng, "schema_violation", name="search", points=8, stage=PROBE, session=f"v{i}")
        clock.now += 1
        rec(eng, "allowed")
        clock.now += 1
    forgiven = sum(1 for e in eng.get(ALICE).evidence if e.forgiven_by)
    assert forgiven == forgive.FLOOR                       # 20 uses: 10% is 2, the floor is 3
    assert eng.score(ALICE) > 100                           # the other 17 variants count (escalated)


def test_honest_share_of_corrections_is_all_forgiven(eng, clock):
    """An agent making a mistake in 4% of its calls, each corrected: all forgiven, score stays 0."""
    for i in range(200):
        clock.now += 30
        if i % 25 == 0:
            rec(eng, "schema_violation", name=f"tool{i}", points=8, stage=PROBE)
            clock.now += 5
            rec(eng, "allowed", name=f"tool{i}")
        rec(eng, "allowed", name="lookup")
    assert eng.score(ALICE) == 0


def test_forgiveness_is_relayed_to_other_replicas(eng, clock):
    published: list[dict[str, Any]] = []
    eng.on_change = lambda op, m: published.append(m)
    other = RiskEngine(clock=clock)
    mistake(eng)
    clock.now += 3
    rec(eng, "allowed")
    assert [bool(m.get("forgives")) for m in published] == [False, True]
    for m in published:
        other.apply(decode({"op": "risk", **m}))
    assert other.score(ALICE) == pytest.approx(0, abs=0.1)


def test_a_correction_on_another_replica_forgives_a_relayed_mistake(eng, clock):
    eng.apply(RiskEvent(ALICE, clock.now, "m1", "s1", "crm", "tools/call", "search", "schema_violation", PROBE, 8))
    clock.now += 3
    rec(eng, "allowed")
    assert eng.score(ALICE) == pytest.approx(0, abs=0.1)


# -- listing ----------------------------------------------------------------------------------------------

def test_listing_at_session_starts_scores_nothing(eng, clock):
    for s in range(30):                                     # 30 reconnects over a day
        clock.now += 600
        for m in ("tools/list", "resources/list", "prompts/list"):
            rec(eng, "allowed", method=m, name="", session=f"s{s}")
    assert eng.score(ALICE) == 0 and list(eng.get(ALICE).evidence) == []


def test_an_ide_reconnecting_all_its_servers_twice_is_not_a_burst(eng, clock):
    for _ in range(2):
        for server in ("repo", "issues", "docs", "crm", "warehouse"):
            clock.now += 1
            rec(eng, "allowed", method="tools/list", name="", server=server, session=f"{server}-{clock.now}")
    assert eng.score(ALICE) == 0


def test_listing_on_many_servers_and_sessions_at_once_is_recon(eng, clock):
    for i in range(LIST_BURST_PAIRS * 2):
        clock.now += 1
        rec(eng, "allowed", method="tools/list", name="", server=f"srv{i % 6}", session=f"s{i}")
    st = eng.get(ALICE)
    bursts = [e for e in st.timeline if e.stage == RECON]
    assert len(bursts) == 1                                 # once per window
    assert bursts[0].points == LIST_BURST_POINTS and "listing on" in bursts[0].reason
    clock.now += LIST_BURST_WINDOW + 1
    for i in range(LIST_BURST_PAIRS):
        rec(eng, "allowed", method="tools/list", name="", server=f"srv{i % 6}", session=f"t{i}")
    assert len([e for e in st.timeline if e.stage == RECON]) == 2


def test_the_distinct_listing_pairs_are_counted_as_entries_come_and_go(eng, clock):
    """The running (server, session) counts always equal the pairs in the window (random walk:
    repeats, new pairs, pauses longer than the window, more entries than are kept)."""
    import random
    from collections import Counter

    rnd = random.Random(16)
    for _ in range(600):
        clock.now += rnd.choice((0.0, 0.5, 3.0, 20.0, LIST_BURST_WINDOW + 1))
        rec(eng, "allowed", method="tools/list", name="", server=f"srv{rnd.randrange(4)}",
            session=f"s{rnd.randrange(rnd.choice((2, 30)))}")
        st = eng.get(ALICE)
        assert st.list_pairs == Counter((server, sid) for _, server, sid in st.lists)
        assert 0 < len(st.lists) <= 4 * LIST_BURST_PAIRS


# -- time is injected ---------------------------------------------------------------------------------------

def test_the_engine_reads_only_its_clock(eng, clock):
    mistake(eng, reason="not_allowed")
    st = eng.get(ALICE)
    assert st.timeline[-1].at == clock.now and st.first_seen == clock.now
    clock.now += 3600 * 5                                   # five simulated hours: fully decayed
    assert eng.score(ALICE) == 0
