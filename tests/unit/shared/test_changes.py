"""The change records (extauthz.shared.changes): the wire form is the op dicts the feed always
carried, every record round-trips, and what does not fit is refused whole."""

from __future__ import annotations

from typing import Any

import pytest

from extauthz.shared.changes import (
    RECORDS,
    Approved,
    InfoNoted,
    InventoryDelta,
    LinkGranted,
    Listed,
    Quarantined,
    RateCounts,
    RiskEvent,
    RiskScore,
    SessionBound,
    SessionEnded,
    SpecLearned,
    StreamExpected,
    StreamInjected,
    decode,
    emit,
)

# The messages as the stores and the supervisor wrote them before the records existed.
OLD_WIRE: list[dict[str, Any]] = [
    {"op": "spec", "server": "crm", "kind": "tools", "items": [{"name": "a"}], "on_drift": "quarantine",
     "source": "traffic", "viewer": "https://issuer|alice|agent"},
    {"op": "info", "server": "crm", "info": {"serverInfo": {"name": "crm"}}},
    {"op": "approve", "server": "crm", "kind": "tools", "name": "a", "digest": "d1"},
    {"op": "quarantine", "server": "crm", "kind": "tools", "name": "a", "why": "changed from x to y"},
    {"op": "session", "sid": "S1", "caller": "c", "server": "crm", "user_session": "u", "client_id": "i",
     "protocol_version": "2025-11-25", "path": "/mcp"},
    {"op": "end", "sid": "S1", "server": "crm", "caller": "c"},
    {"op": "end", "sid": "S1", "caller": "c"},                       # catch-up and corrections: no server
    {"op": "visible", "server": "crm", "sid": "S1", "caller": "c", "kind": "tools", "names": ["a", "b"]},
    {"op": "link", "server": "crm", "sid": "S1", "caller": "c", "uris": ["crm://x"], "tool": "t"},
    {"op": "risk", "caller": "c", "time": 12.5, "decisionId": "d", "sessionId": "S1", "server": "crm",
     "method": "tools/call", "name": "n", "reason": "not_allowed", "stage": "probe", "points": 8.0,
     "signature": 123},
    {"op": "risk", "caller": "c", "time": 12.5, "decisionId": "d", "sessionId": "", "server": "crm",
     "method": "tools/call", "name": "n", "reason": "allowed", "stage": None, "points": 0.0, "signature": None,
     "forgives": ["d0"], "volumeMinute": 7},
    {"op": "riskscore", "caller": "c", "score": 12.5},
    {"op": "rate", "minute": 29000000, "calls": {"c": 3}, "uses": {}},
    {"op": "rate", "minute": 29000000, "calls": {"c": 3}, "uses": {"c": 1}, "totals": True},
    {"op": "expect", "server": "crm", "sid": "S1", "entries": [[2, "tools/list", True]]},
    {"op": "inject", "server": "crm", "sid": "S1", "event": "ZXZlbnQ="},
]


@pytest.mark.parametrize("msg", OLD_WIRE, ids=lambda m: m["op"])
def test_the_old_wire_decodes_and_encodes_to_the_same_message(msg: dict[str, Any]) -> None:
    assert decode(msg).encode() == msg


def test_the_catch_up_op_approved_is_an_approval_with_its_digest() -> None:
    got = decode({"op": "approved", "server": "crm", "kind": "tools", "name": "a", "digest": "d1"})
    assert got == Approved("crm", "tools", "a", "d1") and got.encode()["op"] == "approve"


def test_every_record_round_trips() -> None:
    samples = [SpecLearned("crm", "tools", ({"name": "a"},)), InfoNoted("crm", {"k": 1}), Approved("crm", "tools", "a"),
               Quarantined("crm", "tools", "a", "why"), SessionBound("S", "c", "crm"), SessionEnded("S"),
               Listed("crm", "S", "", "tools", ()), LinkGranted("crm", "S", "c", ("u",)),
               RiskEvent("c", 1.0, "d", "S", "crm", "m", "n", "r", None, 0.0), RiskScore("c", 1.0),
               RateCounts(1, {}, {}), StreamExpected("crm", "S", ()), StreamInjected("crm", "S", ""),
               InventoryDelta({"x": 1})]
    assert {type(s) for s in samples} == set(RECORDS.values())
    for s in samples:
        assert decode(s.encode()) == s


@pytest.mark.parametrize("msg", [
    {"op": "nope"},
    {"server": "crm"},
    {"op": "visible", "server": "crm", "sid": "S1", "caller": "c", "kind": "tools"},             # names missing
    {"op": "visible", "server": "crm", "sid": "S1", "caller": "c", "kind": "tools", "names": "ab"},
    {"op": "visible", "server": "crm", "sid": "S1", "caller": "c", "kind": "tools", "names": [1]},
    {"op": "session", "sid": 5, "caller": "c", "server": "crm"},
    {"op": "rate", "minute": 1, "calls": ["c"], "uses": {}},
    {"op": "risk", "caller": "c", "time": "soon", "decisionId": "d", "sessionId": "", "server": "crm",
     "method": "m", "name": "n", "reason": "r", "stage": None, "points": 1},
    {"op": "riskscore", "caller": "c", "score": True},
])
def test_what_does_not_fit_is_refused_whole(msg: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        decode(msg)


def test_emit_hands_the_wire_form_to_the_sink_and_nothing_without_one() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    emit(lambda op, m: sent.append((op, m)), SessionEnded("S", "c", "crm"))
    emit(None, SessionEnded("S"))
    assert sent == [("end", {"sid": "S", "caller": "c", "server": "crm"})]
