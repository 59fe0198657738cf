"""SessionRegistry: bounded without ever dropping a live binding (fail closed when full)."""

from __future__ import annotations

import io
from pathlib import Path

from extauthz.app import App
from extauthz.core.reasons import Reason
from extauthz.sessions.registry import SessionRegistry
from extauthz.shared.changes import SessionBound

from ..core.conftest import SUPPORT, http, learn
from ..core.test_decide_table import rpc

POLICY = Path(__file__).parent.parent / "core" / "policy.yaml"
ALICE, MALLORY = "iss|alice|agent", "iss|mallory|agent"


def age(reg: SessionRegistry, sid: str, seconds: float) -> None:
    info = reg.get(sid)
    assert info is not None
    info.last_seen -= seconds


def test_full_of_live_bindings_a_new_claim_is_refused_and_nobody_is_evicted():
    reg = SessionRegistry(max_sessions=3, idle_ttl=60)
    reg.touch("victim", ALICE, "crm")
    for i in range(2):
        assert reg.touch(f"flood-{i}", MALLORY, "crm") is not None
    for i in range(2, 50):                      # the flood goes on
        assert not reg.has_room(f"flood-{i}")
        assert reg.touch(f"flood-{i}", MALLORY, "crm") is None
    assert len(reg) == 3 and reg.refused == 2 * 48
    assert not reg.owner_ok("victim", MALLORY) and reg.owner_ok("victim", ALICE)
    assert reg.has_room("victim") and reg.touch("victim", ALICE, "crm") is not None   # the owner goes on


def test_bindings_idle_past_the_ttl_make_room_least_recently_used_first():
    reg = SessionRegistry(max_sessions=3, idle_ttl=60)
    for sid in ("a", "b", "c"):
        reg.touch(sid, ALICE, "crm")
    age(reg, "a", 120)
    age(reg, "b", 120)
    reg.touch("b", ALICE, "crm")                 # used again: live, and now the most recent
    assert reg.touch("d", MALLORY, "crm") is not None
    assert reg.get("a") is None and {s.session_id for s in reg.snapshot()} == {"b", "c", "d"}
    assert reg.touch("e", MALLORY, "crm") is None and reg.refused == 1


def test_a_binding_another_worker_made_is_kept_even_when_full():
    reg = SessionRegistry(max_sessions=1, idle_ttl=60)
    reg.touch("mine", ALICE, "crm")
    reg.apply(SessionBound("theirs", MALLORY, "crm"))
    assert reg.get("theirs") is not None
    assert not reg.owner_ok("theirs", ALICE) and len(reg) == 2


def test_sweep_drops_only_idle_bindings():
    reg = SessionRegistry(max_sessions=10, idle_ttl=60)
    for sid in ("a", "b", "c"):
        reg.touch(sid, ALICE, "crm")
    age(reg, "a", 61)
    assert reg.sweep() == 1 and reg.get("a") is None and len(reg) == 2


def test_end_forgets_the_binding_and_reports_its_server():
    reg = SessionRegistry()
    sent = []
    reg.on_change = lambda op, payload: sent.append((op, payload))
    reg.touch("s", ALICE, "crm", path="/mcp")
    assert reg.end("s") is not None and reg.end("s") is None
    assert sent[-1] == ("end", {"sid": "s", "server": "crm", "caller": ALICE}) and len(sent) == 2


def test_a_full_registry_denies_the_claim_as_rate_limited_and_counts_it():
    app = App(str(POLICY), decision_out=io.BytesIO())
    learn(app)
    app.sessions.max_sessions = 2
    assert app.check(http(rpc("tools/list"), headers={"mcp-session-id": "victim"})).allowed
    mallory = dict(SUPPORT, sub="mallory")
    assert app.check(http(rpc("tools/list"), claims=mallory, headers={"mcp-session-id": "flood-0"})).allowed
    d = app.check(http(rpc("tools/list"), claims=mallory, headers={"mcp-session-id": "flood-1"}))
    assert d.reason is Reason.RATE_LIMITED and "maxSessions" in d.detail
    # the victim keeps its session: still its own, still denied to the flooder
    assert app.check(http(rpc("tools/list"), headers={"mcp-session-id": "victim"})).allowed
    assert app.check(http(rpc("tools/list"), claims=mallory, headers={"mcp-session-id": "victim"})).reason \
        is Reason.SESSION_HIJACK
    assert app.metrics.registry.get_sample_value("mcp_extauthz_session_claims_refused_total") == 1.0
    # ... and a session bound on initialize (over ext_proc) is refused the same way: left unbound,
    # so its first claim is denied too while the registry is full
    app.learner.on_session("crm", "iss|mallory|agent", "flood-2")
    assert app.sessions.get("flood-2") is None
    assert app.check(http(rpc("tools/list"), claims=mallory, headers={"mcp-session-id": "flood-2"})).reason \
        is Reason.RATE_LIMITED
    # once a binding goes idle past the TTL there is room again
    app.sessions.idle_ttl = 60
    age(app.sessions, "flood-0", 61)
    assert app.check(http(rpc("tools/list"), claims=mallory, headers={"mcp-session-id": "flood-2"})).allowed


def test_an_ended_id_is_never_bound_again_within_the_ttl():
    reg = SessionRegistry(max_sessions=2, idle_ttl=60)
    reg.touch("s", ALICE, "crm")
    reg.end("s")
    # reserved to its former owner (whose stale reuse the server answers), nobody else's
    assert reg.ended("s") and reg.owner_ok("s", ALICE) and not reg.owner_ok("s", MALLORY)
    assert reg.touch("s", ALICE, "crm") is None and len(reg) == 0 and reg.has_room("s")
    assert reg.ended_ids() == [("s", ALICE)]
    reg._ended["s"] = (reg._ended["s"][0] - 59, ALICE)
    assert reg.touch("s", ALICE, "crm") is None               # its former owner's use keeps it reserved ...
    reg._ended["s"] = (reg._ended["s"][0] - 59, ALICE)
    assert reg.ended("s") and not reg.owner_ok("s", MALLORY)
    reg._ended["s"] = (reg._ended["s"][0] - 2, ALICE)         # ... until it is idle past the TTL: forgotten
    assert not reg.ended("s") and reg.touch("s", MALLORY, "crm") is not None
    for i in range(5):                            # bounded by max_sessions
        reg.end(f"e{i}", caller=ALICE)
    assert reg.ended_ids() == [("e3", ALICE), ("e4", ALICE)]
    reg.end("never-seen-here")                    # a relayed end without an owner: nobody's
    assert not reg.owner_ok("never-seen-here", ALICE) and not reg.owner_ok("never-seen-here", "")


def test_an_anonymous_request_never_rides_a_bound_session(tmp_path):
    """Where the policy lets unauthenticated requests in, a bound session id is still its owner's."""
    p = tmp_path / "p.yaml"
    p.write_text(POLICY.read_text().replace("unauthenticated: deny", "unauthenticated: allow"))
    app = App(str(p), decision_out=io.BytesIO())
    learn(app)
    assert app.check(http(rpc("tools/list"), headers={"mcp-session-id": "alice-s"})).allowed
    assert app.check(http(rpc("tools/list"), claims=None, headers={"mcp-session-id": "alice-s"})).reason \
        is Reason.SESSION_HIJACK
    assert app.check(http(method="DELETE", claims=None, headers={"mcp-session-id": "alice-s"})).reason \
        is Reason.SESSION_HIJACK
    assert app.check(http(rpc("tools/list"), claims=None, headers={"mcp-session-id": "nobodys"})).allowed
