"""The --workers claim authority without Redis (extauthz.workers.claims): two worker Apps whose
`App.shared` is a `BusClaims`, and a supervisor App whose `ClaimAuthority` answers them, joined
by an in-process bus that delivers each message on a later loop turn, as the socketpair does."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from extauthz.app import App
from extauthz.core.decision import Decision
from extauthz.core.reasons import Reason
from extauthz.shared.redis import SharedUnavailable
from extauthz.workers.bus import apply_change
from extauthz.workers.claims import MAX_WAITING, BusClaims, ClaimAuthority
from extauthz.workers.supervisor import RELAYED

from ..core.conftest import SUPPORT, call, http, learn

POLICY = Path(__file__).parent.parent / "core" / "policy.yaml"
MALLORY = {**SUPPORT, "sub": "mallory"}
LOOKUP = call("lookup_customer", {"customer_id": "c-100"})


class Bus:
    """The supervisor's routing (workers/supervisor.py `_read`), delivered with call_soon."""

    def __init__(self, n: int = 2, policy: Path = POLICY) -> None:
        self.sup = App(str(policy), decision_out=io.BytesIO())
        self.authority = ClaimAuthority(self.sup.sessions)
        self.workers: list[App] = []
        self.silent = False             # a supervisor that never answers
        for _ in range(n):
            w = App(str(policy), decision_out=io.BytesIO())
            learn(w)                    # before the bus: each learned it itself
            w.use_shared(BusClaims(lambda op, p, w=w: self._from(w, op, p), timeout=0.5))
            w.shared.loaded.set()
            self.workers.append(w)

    def _later(self, fn: Any, *args: Any) -> None:
        asyncio.get_running_loop().call_soon(fn, *args)

    def _relay(self, source: App, msg: dict[str, Any]) -> None:
        for w in self.workers:
            if w is not source:
                self._later(apply_change, w, msg)

    def _from(self, w: App, op: str, payload: dict[str, Any]) -> None:
        msg = {"op": op, **payload}
        if self.silent:
            return
        if op == "claim":
            reply, binding = self.authority.claim(msg)
            self._later(w.shared.on_answer, reply)
            if binding is not None:
                self._relay(w, binding)
        elif op == "session":
            relay, correction = self.authority.offer(msg)
            if correction is not None:
                self._later(apply_change, w, correction)
            if relay:
                self._relay(w, msg)
        elif op in RELAYED:
            apply_change(self.sup, msg)
            self._relay(w, msg)


async def check(app: App, body: Any = LOOKUP, claims: dict[str, Any] = SUPPORT, sid: str = "S1") -> Decision:
    req = http(body, claims=claims, headers={"mcp-session-id": sid})
    d = app.check(req)
    if d.pending:
        d = await app.confirm_claim(req, d)
    return d


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_first_use_of_a_session_waits_for_the_supervisor_and_binds_it_everywhere() -> None:
    bus = Bus()
    a, b = bus.workers
    req = http(LOOKUP, headers={"mcp-session-id": "S1"})
    pending = a.check(req)
    assert pending.claim == "S1" and not pending.allowed         # never an allow before the answer
    assert (await a.confirm_claim(req, pending)).allowed
    await settle()
    assert bus.sup.sessions.owner("S1") == a.sessions.owner("S1") == b.sessions.owner("S1") == SUPPORT["iss"] + "|alice|agent"
    assert (await check(b, claims=MALLORY)).reason is Reason.SESSION_HIJACK
    assert (await check(b)).allowed


async def test_a_copy_idle_on_one_worker_does_not_free_a_session_used_on_the_other() -> None:
    bus = Bus()
    a, b = bus.workers
    assert (await check(a)).allowed
    await settle()
    b.sessions._by_id.clear()           # b's copy idled out while alice kept using a
    d = await check(b, claims=MALLORY)
    assert d.reason is Reason.SESSION_HIJACK
    assert a.sessions.owner("S1") == b.sessions.owner("S1") == bus.sup.sessions.owner("S1")
    assert (await check(a)).allowed and (await check(b)).allowed


async def test_racing_first_claims_on_two_workers_have_one_owner() -> None:
    bus = Bus()
    a, b = bus.workers
    for n in range(20):
        sid, first, rival = f"race-{n}", {**SUPPORT, "sub": f"first-{n}"}, {**SUPPORT, "sub": f"rival-{n}"}
        if n % 2:                       # either worker's claim may reach the supervisor first
            db, da = await asyncio.gather(check(b, claims=rival, sid=sid), check(a, claims=first, sid=sid))
        else:
            da, db = await asyncio.gather(check(a, claims=first, sid=sid), check(b, claims=rival, sid=sid))
        assert da.allowed != db.allowed, (n, da.reason, db.reason)
        assert (db if da.allowed else da).reason is Reason.SESSION_HIJACK
        await settle()
        assert a.sessions.owner(sid) == b.sessions.owner(sid) == bus.sup.sessions.owner(sid)


def test_the_supervisor_keeps_a_binding_alive_while_a_worker_reports_it_used() -> None:
    bus = Bus()
    reg = bus.sup.sessions
    reg.touch("S1", "alice", "crm")
    ttl = reg.idle_ttl
    reg.get("S1").last_seen -= 0.9 * ttl                 # nearly idle here ...
    bus.authority.keep_alive(["S1", 42, "unknown"])     # ... but a worker used it this tick
    reg.get("S1").last_seen -= 0.9 * ttl
    assert reg.owner("S1") == "alice"                    # 1.8 TTLs after the first use: alive
    reg.get("S1").last_seen -= 0.2 * ttl
    bus.authority.keep_alive(["S1"])                    # expired here: only the authority lets it go,
    assert reg.owner("S1") is None                      # and a late report does not revive it


async def test_a_binding_a_worker_made_itself_is_corrected_when_another_caller_owns_it() -> None:
    bus = Bus()
    a, b = bus.workers
    assert (await check(a)).allowed
    b.sessions._by_id.clear()
    b._on_session("crm", MALLORY["iss"] + "|mallory|agent", "S1")    # b saw an initialize answer issue S1
    await settle()
    assert b.sessions.owner("S1") == SUPPORT["iss"] + "|alice|agent"     # the authority's owner, back
    assert bus.sup.sessions.owner("S1") == SUPPORT["iss"] + "|alice|agent"
    assert bus.authority.corrected == 1


async def test_an_ended_session_stays_its_former_owners_on_a_worker_that_never_saw_it() -> None:
    bus = Bus(3)
    a, b, c = bus.workers
    assert (await check(a)).allowed
    a._on_session_end("crm", "S1", "ended")
    await settle()
    c.sessions._by_id.clear()
    c.sessions._ended.clear()           # c never heard of S1 at all
    assert (await check(c, claims=MALLORY)).reason is Reason.SESSION_HIJACK
    assert c.sessions.ended("S1")


async def test_no_answer_in_time_fails_closed() -> None:
    bus = Bus()
    a, _ = bus.workers
    bus.silent = True
    d = await check(a)
    assert not d.allowed and d.rule == "sessions.sharedStateDown" and "owner cannot be confirmed" in d.detail
    assert a.shared.claims_denied == 1 and a.sessions.owner("S1") is None


async def test_a_closed_bus_fails_every_waiting_and_later_claim() -> None:
    claims = BusClaims(lambda op, p: None, timeout=30)
    waiting = asyncio.create_task(claims.claim("S1", "alice", "crm", {}))
    await settle()
    claims.lost()
    with pytest.raises(SharedUnavailable):
        await waiting
    with pytest.raises(SharedUnavailable):
        await claims.claim("S2", "alice", "crm", {})


async def test_bad_or_overflowing_answers_fail_closed() -> None:
    sent: list[dict[str, Any]] = []
    claims = BusClaims(lambda op, p: sent.append(p), timeout=30)
    t = asyncio.create_task(claims.claim("S1", "alice", "crm", {}))
    await settle()
    claims.on_answer({"op": "claimed", "rid": sent[0]["rid"], "owner": None})
    with pytest.raises(SharedUnavailable):
        await t
    t = asyncio.create_task(claims.claim("S1", "alice", "crm", {}))
    await settle()
    claims.on_answer({"op": "claimed", "rid": sent[1]["rid"], "error": "sessions.maxSessions live sessions are bound"})
    with pytest.raises(SharedUnavailable, match="maxSessions"):
        await t
    claims._waiting.update({-i: asyncio.get_running_loop().create_future() for i in range(1, MAX_WAITING + 1)})
    with pytest.raises(SharedUnavailable, match="already wait"):
        await claims.claim("S3", "alice", "crm", {})
    assert ClaimAuthority(App(str(POLICY)).sessions).claim({"rid": 1, "sid": 5})[0]["error"] == "malformed claim"


async def test_a_legacy_stream_hears_of_posts_decided_on_another_worker() -> None:
    """2024-11-05: the POST's learn entries and its denial travel as change records (expect/inject)."""
    bus = Bus()
    a, b = bus.workers
    req = http({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, path="/mcp/messages/?session_id=L1")
    d = a.check(req)
    if d.pending:
        d = await a.confirm_claim(req, d)
    assert d.allowed
    denied = a.check(http(call("export_customers", {"format": "csv"}, mid=9), path="/mcp/messages/?session_id=L1"))
    assert denied.reason is Reason.NOT_ALLOWED
    await settle()
    assert [e.method for e in b.learner.stream_pending[("crm", "L1")].values()] == ["tools/list"]
    assert b'"id":9' in bytes(b.learner.stream_inject[("crm", "L1")])
    assert bytes(b.learner.stream_inject[("crm", "L1")]) == bytes(a.learner.stream_inject[("crm", "L1")])
