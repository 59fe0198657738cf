"""One contract for every implementation of the shared stores: the embedded in-memory default (one
process), the `--workers` bus (two worker Apps, the supervisor's claim authority and relay, a
worker started later caught up from the supervisor) and Redis (two replicas on a real
redis-server, a replica started later loading from it). The same cases run over each."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from extauthz.app import App
from extauthz.core.decision import Decision
from extauthz.core.reasons import Reason
from extauthz.risk.report import REPORT_EVERY
from extauthz.shared.changes import Approved, decode
from extauthz.shared.config import redis_config
from extauthz.shared.redis import RedisShared
from extauthz.shared.testing import RedisProcess
from extauthz.workers.bus import apply_change
from extauthz.workers.claims import BusClaims, ClaimAuthority
from extauthz.workers.supervisor import RELAYED, catch_up_messages

from ..core.conftest import SUPPORT, TOOLS, call, http, learn

POLICY = Path(__file__).parent.parent / "core" / "policy.yaml"
ALICE = SUPPORT["iss"] + "|alice|agent"
MALLORY = {**SUPPORT, "sub": "mallory"}
LOOKUP = call("lookup_customer", {"customer_id": "c-100"})
SEARCH = call("search_customers", {"query": "x"})


def drifted(description: str) -> list[dict[str, Any]]:
    """The tools with search_customers changed (a new digest)."""
    changed = {"name": "search_customers", "description": description,
               "inputSchema": {"type": "object", "properties": {"query": {"type": "string"}}}}
    return [t for t in TOOLS if t["name"] != "search_customers"] + [changed]


class Memory:
    """The embedded default: one process, so `a`, `b` and a later start are the same store."""

    name = "memory"

    async def start(self) -> None:
        self.a = self.b = App(str(POLICY), decision_out=io.BytesIO())
        learn(self.a)

    async def settle(self) -> None:
        await asyncio.sleep(0)

    async def late(self) -> App:
        return self.a

    def idle(self, app: App) -> None:
        """No other copy exists to idle out: the one in use is the only one."""

    async def report(self, *apps: App) -> None:
        """One process counts everything itself."""

    async def close(self) -> None:
        return None


class Bus:
    """`serve --workers 2` without Redis: the supervisor's routing (workers/supervisor.py `_read`),
    each message delivered on a later loop turn, as the socketpair does."""

    name = "bus"

    async def start(self) -> None:
        self.sup = App(str(POLICY), decision_out=io.BytesIO())
        self.authority = ClaimAuthority(self.sup.sessions)
        self.workers: list[App] = []
        self.a, self.b = self._worker(), self._worker()
        learn(self.a)                   # learned on one worker, relayed to the other
        await self.settle()

    def _worker(self, catch_up: list[dict[str, Any]] | None = None) -> App:
        w = App(str(POLICY), decision_out=io.BytesIO())
        for m in catch_up or ():        # what the supervisor sends a (re)started worker first
            apply_change(w, m)
        w.use_shared(BusClaims(lambda op, p, w=w: self._from(w, op, p), timeout=0.5))
        w.shared.loaded.set()
        self.workers.append(w)
        return w

    def _later(self, fn: Any, *args: Any) -> None:
        asyncio.get_running_loop().call_soon(fn, *args)

    def _relay(self, source: App, msg: dict[str, Any]) -> None:
        for w in self.workers:
            if w is not source:
                self._later(apply_change, w, msg)

    def _from(self, w: App, op: str, payload: dict[str, Any]) -> None:
        msg = {"op": op, **payload}
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

    async def settle(self) -> None:
        for _ in range(10):
            await asyncio.sleep(0)

    async def late(self) -> App:
        return self._worker(catch_up_messages(self.sup))

    async def report(self, *apps: App) -> None:
        """What each worker's report loop (extauthz.risk.report) publishes every 250 ms."""
        for app in apps:
            for rec in app.risk.report_counts():
                app.shared.publish("rate", rec)
        await self.settle()

    def idle(self, app: App) -> None:
        app.sessions._by_id.clear()     # this worker's copies idled out

    async def close(self) -> None:
        return None


class Redis:
    """Replicas on one real redis-server."""

    name = "redis"

    def __init__(self) -> None:
        self.server = RedisProcess().start()
        self.apps: list[App] = []

    async def _replica(self) -> App:
        app = App(str(POLICY), decision_out=io.BytesIO())
        shared = RedisShared(redis_config(self.server.url, prefix="contract"), app)
        app.use_shared(shared)
        await shared.start()
        await asyncio.wait_for(shared.loaded.wait(), 10)
        self.apps.append(app)
        return app

    async def start(self) -> None:
        self.a, self.b = await self._replica(), await self._replica()
        learn(self.a)
        await self.settle()

    async def settle(self) -> None:
        """Every replica wrote what it queued and read what the others wrote."""
        for _ in range(200):
            await asyncio.sleep(0.02)
            if all(not a.shared.outbox for a in self.apps):
                break
        await asyncio.sleep(0.15)

    async def late(self) -> App:
        return await self._replica()

    async def report(self, *apps: App) -> None:
        """Each replica's report loop runs (RedisShared.start) every REPORT_EVERY seconds."""
        await asyncio.sleep(REPORT_EVERY)
        await self.settle()

    def idle(self, app: App) -> None:
        app.sessions._by_id.clear()

    async def close(self) -> None:
        for a in self.apps:
            await a.shared.close()
        self.server.close()


@pytest.fixture(params=[Memory, Bus, Redis], ids=lambda c: c.name)
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    c = request.param()
    await c.start()
    try:
        yield c
    finally:
        await c.close()


async def check(app: App, body: Any = LOOKUP, claims: dict[str, Any] = SUPPORT, sid: str = "S1") -> Decision:
    req = http(body, claims=claims, headers={"mcp-session-id": sid})
    d = app.check(req)
    if d.pending:
        d = await app.confirm_claim(req, d)
    return d


# -- session owners ----------------------------------------------------------------------------------

async def test_first_claim_wins(cluster: Any) -> None:
    a, b = cluster.a, cluster.b
    for n in range(6):
        sid, first, rival = f"race-{n}", {**SUPPORT, "sub": f"first-{n}"}, {**SUPPORT, "sub": f"rival-{n}"}
        da, db = await asyncio.gather(check(a, claims=first, sid=sid), check(b, claims=rival, sid=sid))
        assert da.allowed != db.allowed, (n, da.reason, db.reason)
        assert (db if da.allowed else da).reason is Reason.SESSION_HIJACK
        await cluster.settle()
        assert a.sessions.owner(sid) == b.sessions.owner(sid) is not None


async def test_idle_expiry_never_frees_a_session_another_holds(cluster: Any) -> None:
    a, b = cluster.a, cluster.b
    assert (await check(a)).allowed
    await cluster.settle()
    cluster.idle(b)                     # b's copy idled out while alice kept using a
    assert (await check(b, claims=MALLORY)).reason is Reason.SESSION_HIJACK
    assert (await check(a)).allowed and (await check(b)).allowed
    await cluster.settle()
    assert a.sessions.owner("S1") == b.sessions.owner("S1") == ALICE


async def test_an_ended_session_stays_its_former_owners_everywhere(cluster: Any) -> None:
    a = cluster.a
    assert (await check(a)).allowed
    a.sessions.end("S1")
    await cluster.settle()
    for app in (cluster.b, await cluster.late()):
        assert (await check(app, claims=MALLORY)).reason is Reason.SESSION_HIJACK


# -- quarantine and approvals ----------------------------------------------------------------------------

async def test_a_hold_reaches_every_replica_and_a_late_one(cluster: Any) -> None:
    a = cluster.a
    a.specs.apply_page("crm", "tools", drifted("now different"), first=True, last=True)    # drift: held
    assert ("tools", "search_customers") in a.specs.get("crm").quarantined
    await cluster.settle()
    late = await cluster.late()
    for n, app in enumerate((cluster.b, late)):
        assert ("tools", "search_customers") in app.specs.get("crm").quarantined
        assert (await check(app, SEARCH, sid=f"H{n}")).reason is Reason.QUARANTINED


async def test_an_approval_carries_its_digest_and_survives_catch_up(cluster: Any) -> None:
    a = cluster.a
    a.specs.apply_page("crm", "tools", drifted("now different"), first=True, last=True)
    await cluster.settle()
    sent: list[Any] = []
    sink = a.specs.on_change
    a.specs.on_change = lambda op, m: (sent.append(decode({"op": op, **m})), sink and sink(op, m))
    assert a.specs.approve("crm", "tools", "search_customers")
    digest = a.specs.get("crm").tools["search_customers"].digest
    assert sent == [Approved("crm", "tools", "search_customers", digest)]
    await cluster.settle()
    late = await cluster.late()
    for n, app in enumerate((cluster.b, late)):
        assert app.specs.get("crm").approved[("tools", "search_customers")] == digest
        assert (await check(app, SEARCH, sid=f"A{n}")).allowed
    # the approval is for that digest: a further change is held again, on every replica
    a.specs.apply_page("crm", "tools", drifted("changed once more"), first=True, last=True)
    await cluster.settle()
    for n, app in enumerate((cluster.b, late)):
        assert (await check(app, SEARCH, sid=f"B{n}")).reason is Reason.QUARANTINED


# -- visibility -------------------------------------------------------------------------------------------

async def test_visibility_is_present_after_catch_up(cluster: Any) -> None:
    cluster.a.visibility.listed("crm", "S1", ALICE, "tools", ["lookup_customer"])
    assert (await check(cluster.a)).allowed
    await cluster.settle()
    late = await cluster.late()
    for app in (cluster.b, late):
        session_view, _ = app.visibility.view("crm", "S1", ALICE)
        assert session_view is not None and session_view["tools"] == frozenset({"lookup_customer"})
        assert (await check(app)).allowed
        # listed to this session: lookup only, so search is unknown here (not the server-wide spec)
        assert (await check(app, SEARCH)).reason is Reason.UNKNOWN_CAPABILITY


# -- risk -------------------------------------------------------------------------------------------------

async def test_a_risk_event_is_scored_once(cluster: Any) -> None:
    a, b = cluster.a, cluster.b
    for n in range(3):                  # distinct probes, all decided on a
        assert not (await check(a, call(f"nope_{n}", {}))).allowed
    await cluster.settle()
    scored = a.risk.score(ALICE)
    assert scored > 0
    assert b.risk.score(ALICE) == pytest.approx(scored, abs=0.5)       # relayed once, not re-scored
    await check(b, call("nope_0", {}))  # the same denial again, elsewhere: not a new probe
    await cluster.settle()
    assert a.risk.score(ALICE) <= scored + 0.5 and b.risk.score(ALICE) <= scored + 0.5


async def test_rate_counts_add_up_over_every_process(cluster: Any) -> None:
    a, b = cluster.a, cluster.b
    for app in (a, b):
        app.risk.calls_per_minute = 1000          # counts are reported only where a limit is set
    for n in range(3):
        assert (await check(a, sid=f"R{n}")).allowed
    assert (await check(b, sid="R0")).allowed
    await cluster.report(a, b)
    for _ in range(200):                # the shared machine may delay a report loop: wait for it
        if all(app.risk.get(ALICE).rate_count >= 4 for app in (a, b)):
            break
        await asyncio.sleep(0.05)
    await cluster.settle()
    assert [app.risk.get(ALICE).rate_count for app in (a, b)] == [4, 4]   # each call once, everywhere


async def test_a_resource_link_granted_on_one_is_readable_on_the_other(cluster: Any) -> None:
    cluster.a.links.grant("crm", "S1", ALICE, ["crm://customers/c-100/notes"], tool="lookup_customer")
    await cluster.settle()
    granted = cluster.b.links.view("crm", "S1", ALICE)
    assert granted is not None and len(granted) == 1
    assert cluster.b.links.view("crm", "S1", MALLORY["iss"] + "|mallory|agent") is None
