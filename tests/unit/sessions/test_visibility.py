"""Visibility: what the server listed to each MCP session (and, for stateless traffic, each caller)."""

from __future__ import annotations

from typing import Any

import pytest

import extauthz.sessions.visibility as vis_mod
from extauthz.sessions.visibility import Visibility, shown
from extauthz.shared.changes import Listed, decode

ALICE = "https://issuer|alice|agent"
BOB = "https://issuer|bob|agent"


@pytest.fixture
def vis() -> Visibility:
    return Visibility()


# -- pages ------------------------------------------------------------------------------------------

def test_single_page_completes_a_snapshot(vis):
    vis.listed_page("crm", "s1", ALICE, "tools", ["a", "b"], first=True, last=True)
    assert vis.view("crm", "s1", ALICE) == ({"tools": frozenset({"a", "b"})}, {"tools": frozenset({"a", "b"})})


def test_pages_accumulate_until_the_last(vis):
    vis.listed_page("crm", "s1", ALICE, "tools", ["a"], first=True, last=False)
    vis.listed_page("crm", "s1", ALICE, "tools", ["b"], first=False, last=False)
    assert vis.view("crm", "s1", ALICE) == (None, None)           # incomplete: nothing yet
    vis.listed_page("crm", "s1", ALICE, "tools", ["c", "a"], first=False, last=True)
    assert vis.view("crm", "s1", ALICE)[0] == {"tools": frozenset({"a", "b", "c"})}


def test_continuation_without_a_start_is_ignored(vis):
    vis.listed_page("crm", "s1", ALICE, "tools", ["x"], first=False, last=False)
    vis.listed_page("crm", "s1", ALICE, "tools", ["y"], first=False, last=True)
    assert vis.view("crm", "s1", ALICE) == (None, None)
    assert len(vis) == 0


def test_a_new_first_page_restarts_the_snapshot(vis):
    vis.listed_page("crm", "s1", ALICE, "tools", ["old"], first=True, last=False)
    vis.listed_page("crm", "s1", ALICE, "tools", ["new"], first=True, last=True)
    assert vis.view("crm", "s1", ALICE)[0] == {"tools": frozenset({"new"})}


def test_a_newer_snapshot_replaces_the_older(vis):
    vis.listed_page("crm", "s1", ALICE, "tools", ["a", "b"], first=True, last=True)
    vis.listed_page("crm", "s1", ALICE, "tools", ["b"], first=True, last=True)
    assert shown(vis.view("crm", "s1", ALICE), "tools", "a") is False


def test_pages_of_different_kinds_and_sessions_do_not_mix(vis):
    vis.listed_page("crm", "s1", ALICE, "tools", ["t1"], first=True, last=False)
    vis.listed_page("crm", "s1", ALICE, "prompts", ["p1"], first=True, last=False)
    vis.listed_page("crm", "s2", ALICE, "tools", ["t2"], first=True, last=False)
    vis.listed_page("crm", "s1", ALICE, "tools", ["t3"], first=False, last=True)
    vis.listed_page("crm", "s1", ALICE, "prompts", [], first=False, last=True)
    s1, _ = vis.view("crm", "s1", ALICE)
    assert s1 == {"tools": frozenset({"t1", "t3"}), "prompts": frozenset({"p1"})}
    assert vis.view("crm", "s2", "")[0] is None


def test_stateless_pages_accumulate_per_caller(vis):
    vis.listed_page("crm", "", ALICE, "tools", ["a"], first=True, last=False)
    vis.listed_page("crm", "", BOB, "tools", ["z"], first=True, last=True)
    vis.listed_page("crm", "", ALICE, "tools", ["b"], first=False, last=True)
    assert vis.view("crm", "", ALICE) == (None, {"tools": frozenset({"a", "b"})})
    assert vis.view("crm", "", BOB) == (None, {"tools": frozenset({"z"})})


def test_snapshot_names_are_bounded(vis, monkeypatch):
    monkeypatch.setattr(vis_mod, "MAX_NAMES", 3)
    vis.listed_page("crm", "s1", ALICE, "tools", ["a", "b"], first=True, last=False)
    vis.listed_page("crm", "s1", ALICE, "tools", ["c", "d", "e"], first=False, last=True)
    assert vis.view("crm", "s1", ALICE)[0]["tools"] == frozenset({"a", "b", "c"})


def test_pending_snapshots_are_bounded(vis, monkeypatch):
    monkeypatch.setattr(vis_mod, "MAX_PENDING", 2)
    for s in ("s1", "s2", "s3"):
        vis.listed_page("crm", s, ALICE, "tools", [s], first=True, last=False)
    vis.listed_page("crm", "s1", ALICE, "tools", ["more"], first=False, last=True)   # s1's start was evicted
    vis.listed_page("crm", "s3", ALICE, "tools", ["more"], first=False, last=True)
    assert vis.view("crm", "s1", "")[0] is None
    assert vis.view("crm", "s3", "")[0] == {"tools": frozenset({"s3", "more"})}


# -- lookup: session first, then caller -----------------------------------------------------------------

def test_session_snapshot_wins_over_caller_snapshot(vis):
    vis.listed("crm", "s1", ALICE, "tools", ["a", "b"])
    vis.listed("crm", "s2", ALICE, "tools", ["a"])             # the caller's latest view: {a}
    assert shown(vis.view("crm", "s1", ALICE), "tools", "b") is True
    assert shown(vis.view("crm", "s2", ALICE), "tools", "b") is False


def test_session_without_that_kind_falls_back_to_caller(vis):
    vis.listed("crm", "s1", ALICE, "tools", ["a"])
    vis.listed("crm", "s2", ALICE, "prompts", ["p"])
    view = vis.view("crm", "s2", ALICE)
    assert shown(view, "tools", "a") is True                  # from the caller snapshot
    assert shown(view, "tools", "b") is False
    assert shown(view, "prompts", "p") is True


def test_nothing_listed_is_none(vis):
    assert shown(vis.view("crm", "s1", ALICE), "tools", "a") is None
    vis.listed("crm", "s1", ALICE, "tools", ["a"])
    assert shown(vis.view("crm", "s1", ALICE), "resources", "crm://x") is None
    assert shown(vis.view("other", "s1", ALICE), "tools", "a") is None   # per server
    assert shown(None, "tools", "a") is None


def test_stateless_uses_caller_snapshot_only(vis):
    vis.listed("crm", "", ALICE, "tools", ["a"])
    assert vis.view("crm", "", ALICE) == (None, {"tools": frozenset({"a"})})
    assert shown(vis.view("crm", "", ALICE), "tools", "a") is True
    assert shown(vis.view("crm", "", BOB), "tools", "a") is None
    assert len(vis) == 1


def test_listing_with_no_caller_records_only_the_session(vis):
    vis.listed("crm", "s1", "", "tools", ["a"])
    assert vis.view("crm", "s1", "") == ({"tools": frozenset({"a"})}, None)
    assert len(vis) == 1


def test_empty_list_is_a_snapshot_that_shows_nothing(vis):
    vis.listed("crm", "s1", ALICE, "tools", [])
    assert shown(vis.view("crm", "s1", ALICE), "tools", "a") is False


def test_end_session_forgets_session_not_caller(vis):
    vis.listed("crm", "s1", ALICE, "tools", ["a", "b"])
    vis.listed("crm", "s2", ALICE, "tools", ["a"])
    vis.end_session("crm", "s1")
    view = vis.view("crm", "s1", ALICE)
    assert view[0] is None
    assert shown(view, "tools", "b") is False                 # the caller's snapshot now answers
    vis.end_session("crm", "never-existed")                   # harmless


def test_end_session_is_per_server(vis):
    vis.listed("crm", "s1", "", "tools", ["a"])
    vis.listed("hr", "s1", "", "tools", ["h"])
    vis.end_session("hr", "s1")
    assert vis.view("crm", "s1", "")[0] == {"tools": frozenset({"a"})}
    assert vis.view("hr", "s1", "")[0] is None


# -- bounds and interning ----------------------------------------------------------------------------------

def test_partitions_are_bounded_oldest_first():
    v = Visibility(max_partitions=3)
    for s in ("s1", "s2", "s3", "s4"):
        v.listed("crm", s, "", "tools", [s])
    assert len(v) == 3
    assert v.view("crm", "s1", "")[0] is None
    assert all(v.view("crm", s, "")[0] is not None for s in ("s2", "s3", "s4"))


def test_updating_a_partition_makes_it_recent():
    v = Visibility(max_partitions=3)
    for s in ("s1", "s2", "s3"):
        v.listed("crm", s, "", "tools", [s])
    v.listed("crm", "s1", "", "prompts", ["p"])               # s1 refreshed: s2 is now oldest
    v.listed("crm", "s4", "", "tools", ["x"])
    assert v.view("crm", "s2", "")[0] is None
    assert v.view("crm", "s1", "")[0] == {"tools": frozenset({"s1"}), "prompts": frozenset({"p"})}


def test_session_and_caller_partitions_both_count():
    v = Visibility(max_partitions=2)
    v.listed("crm", "s1", ALICE, "tools", ["a"])              # two partitions
    v.listed("crm", "s2", "", "tools", ["b"])                 # evicts the oldest (s1's session)
    assert len(v) == 2
    assert v.view("crm", "s1", ALICE) == (None, {"tools": frozenset({"a"})})


def test_identical_name_sets_are_interned(vis):
    vis.listed("crm", "s1", ALICE, "tools", ["a", "b", "c"])
    vis.listed("crm", "s2", BOB, "tools", ("c", "b", "a"))
    vis.listed_page("crm", "s3", "", "tools", ["b"], first=True, last=False)
    vis.listed_page("crm", "s3", "", "tools", ["a", "c"], first=False, last=True)
    s1 = vis.view("crm", "s1", "")[0]["tools"]
    assert s1 is vis.view("crm", "s2", "")[0]["tools"]
    assert s1 is vis.view("crm", "s3", "")[0]["tools"]
    assert s1 is vis.view("crm", "", ALICE)[1]["tools"]
    assert isinstance(s1, frozenset)
    vis.listed("crm", "s4", "", "tools", ["a"])
    assert vis.view("crm", "s4", "")[0]["tools"] is not s1


# -- replication -------------------------------------------------------------------------------------------

def test_on_change_publishes_complete_snapshots(vis):
    events: list[tuple[str, dict[str, Any]]] = []
    vis.on_change = lambda op, payload: events.append((op, payload))
    vis.listed_page("crm", "s1", ALICE, "tools", ["b", "a"], first=True, last=False)
    assert events == []                                       # pages are not published
    vis.listed_page("crm", "s1", ALICE, "tools", ["c"], first=False, last=True)
    assert events == [("visible", {"server": "crm", "sid": "s1", "caller": ALICE, "kind": "tools",
                                   "names": ["a", "b", "c"]})]


def test_replicated_snapshot_is_applied_but_not_published(vis):
    events: list[Any] = []
    vis.on_change = lambda op, payload: events.append(op)
    vis.apply(Listed("crm", "s1", ALICE, "tools", ("a",)))
    assert events == []
    assert shown(vis.view("crm", "s1", ALICE), "tools", "a") is True


def test_published_payload_round_trips_through_listed():
    a, b = Visibility(), Visibility()
    a.on_change = lambda op, m: b.apply(decode({"op": op, **m}))
    a.listed("crm", "s1", ALICE, "resources", ["crm://x", "crm://y"])
    assert b.view("crm", "s1", ALICE) == a.view("crm", "s1", ALICE)
