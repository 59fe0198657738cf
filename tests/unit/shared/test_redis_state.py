"""Two replicas (two Apps, each with its own Redis connection) against one real redis-server:
session owners, approvals, visibility and risk are one truth; faults fail as the policy says."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

from extauthz.app import App
from extauthz.core.decision import Decision
from extauthz.core.reasons import Reason
from extauthz.shared.config import redis_config
from extauthz.shared.redis import RedisShared
from extauthz.shared.testing import RedisProcess

from ..core.conftest import SUPPORT, call, http, learn

HERE = Path(__file__).parent
POLICY = HERE.parent / "core" / "policy.yaml"
MALLORY = {**SUPPORT, "sub": "mallory"}


async def replica(redis: RedisProcess, policy: Path = POLICY, *, learned: bool = True) -> App:
    app = App(str(policy), decision_out=io.BytesIO())
    shared = RedisShared(redis_config(redis.url, prefix="t"), app)
    app.use_shared(shared)
    await shared.start()
    await asyncio.wait_for(shared.loaded.wait(), 10)
    if learned:
        learn(app)
    return app


async def check(app: App, body: Any, claims: dict[str, Any] = SUPPORT, sid: str = "S1", **kw: Any) -> Decision:
    req = http(body, claims=claims, headers={"mcp-session-id": sid, **kw.pop("headers", {})}, **kw)
    d = app.check(req)
    if d.pending:
        d = await app.confirm_claim(req, d)
    return d


async def settle(*apps: App) -> None:
    """Wait until every replica wrote what it queued and read what the others wrote."""
    for _ in range(200):
        await asyncio.sleep(0.02)
        if all(not a.shared.outbox for a in apps):
            break
    await asyncio.sleep(0.15)


async def close(*apps: App) -> None:
    for a in apps:
        await a.shared.close()


LOOKUP = call("lookup_customer", {"customer_id": "c-100"})


async def test_an_owner_on_one_replica_is_the_owner_on_the_other(redis_server: RedisProcess) -> None:
    a, b = await replica(redis_server), await replica(redis_server)
    try:
        assert (await check(a, LOOKUP)).allowed
        d = await check(b, LOOKUP, claims=MALLORY)
        assert d.reason is Reason.SESSION_HIJACK
        assert (await check(b, LOOKUP)).allowed and (await check(a, LOOKUP)).allowed
        assert (await check(a, LOOKUP, claims=MALLORY)).reason is Reason.SESSION_HIJACK
    finally:
        await close(a, b)


async def test_first_claim_race_has_exactly_one_owner_everywhere(redis_server: RedisProcess) -> None:
    a, b = await replica(redis_server), await replica(redis_server)
    try:
        for n in range(20):
            sid = f"race-{n}"
            # one caller each: whoever loses many races presents many foreign ids and is risk-blocked
            first, rival = {**SUPPORT, "sub": f"first-{n}"}, {**SUPPORT, "sub": f"rival-{n}"}
            da, db = await asyncio.gather(check(a, LOOKUP, claims=first, sid=sid),
                                          check(b, LOOKUP, claims=rival, sid=sid))
            assert da.allowed != db.allowed, (n, da.reason, db.reason)
            loser = db if da.allowed else da
            assert loser.reason is Reason.SESSION_HIJACK
            assert a.sessions.owner(sid) == b.sessions.owner(sid)
    finally:
        await close(a, b)


async def test_idle_copy_on_one_replica_never_frees_a_session_used_on_the_other(redis_server: RedisProcess) -> None:
    a, b = await replica(redis_server), await replica(redis_server)
    try:
        assert (await check(a, LOOKUP)).allowed
        await settle(a, b)
        assert b.sessions.owner("S1") is not None     # the binding reached b over the feed
        b.sessions._by_id.clear()                    # b's copy idled out; alice kept using a
        d = await check(b, LOOKUP, claims=MALLORY)
        assert d.reason is Reason.SESSION_HIJACK
        assert (await check(a, LOOKUP)).allowed and (await check(b, LOOKUP)).allowed
    finally:
        await close(a, b)


async def test_an_approval_holds_on_every_replica_and_after_a_restart(redis_server: RedisProcess) -> None:
    a, b = await replica(redis_server), await replica(redis_server)
    await settle(a, b)                  # both replicas' first snapshots are in everywhere
    try:
        changed = [{"name": "search_customers", "description": "now different",
                    "inputSchema": {"type": "object", "properties": {"query": {"type": "string"}}}}]
        from ..core.conftest import TOOLS
        tools = [t for t in TOOLS if t["name"] != "search_customers"] + changed
        a.specs.apply_page("crm", "tools", tools, first=True, last=True)      # drift: held
        await settle(a, b)
        body = call("search_customers", {"query": "x"})
        assert (await check(b, body)).reason is Reason.QUARANTINED
        assert a.specs.approve("crm", "tools", "search_customers")
        await settle(a, b)
        assert (await check(b, body, sid="S2")).allowed
        c = await replica(redis_server, learned=False)            # a replica started afterwards
        try:
            assert (await check(c, body, sid="S3")).allowed
            assert c.specs.get("crm").approved[("tools", "search_customers")]
        finally:
            await close(c)
    finally:
        await close(a, b)


async def test_what_a_session_was_listed_reaches_a_replica_started_later(redis_server: RedisProcess) -> None:
    a = await replica(redis_server)
    try:
        a.visibility.listed("crm", "S1", SUPPORT["iss"] + "|alice|", "tools", ["lookup_customer"])
        assert (await check(a, LOOKUP)).allowed
        await settle(a)
        c = await replica(redis_server)
        try:
            d = await check(c, call("search_customers", {"query": "x"}))
            assert d.reason is Reason.UNKNOWN_CAPABILITY and "never listed" in d.detail
            assert (await check(c, LOOKUP)).allowed
        finally:
            await close(c)
    finally:
        await close(a)


async def test_redis_down_new_sessions_follow_the_policy(redis_server: RedisProcess, tmp_path: Path) -> None:
    a = await replica(redis_server)
    local = tmp_path / "local.yaml"
    local.write_text(POLICY.read_text().replace("sessions: {bindToCaller: true}",
                                                "sessions: {bindToCaller: true, sharedStateDown: local}"))
    b = await replica(redis_server, local)
    try:
        assert (await check(a, LOOKUP, sid="known")).allowed
        redis_server.stop()
        d = await check(a, LOOKUP, sid="new-on-a")
        assert d.reason is Reason.NOT_ALLOWED and "shared state unavailable" in d.detail
        assert a.shared.claims_denied == 1
        assert (await check(a, LOOKUP, sid="known")).allowed       # known here: decided locally
        assert (await check(b, LOOKUP, sid="new-on-b")).allowed    # sharedStateDown: local
        redis_server.start()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if a.shared.connected and b.shared.connected and not b.shared.outbox:
                break
        # the claim b made while Redis was away was written once it came back (replayed)
        assert (await check(a, LOOKUP, claims=MALLORY, sid="new-on-b")).reason is Reason.SESSION_HIJACK
        assert (await check(a, LOOKUP, sid="new-on-a")).allowed
    finally:
        await close(a, b)


async def test_redis_restarted_empty_gets_the_replicas_state_back(redis_server: RedisProcess) -> None:
    a = await replica(redis_server)
    try:
        assert (await check(a, LOOKUP)).allowed
        await settle(a)
        redis_server.stop()                 # its data gone
        redis_server.start()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if a.shared.connected:
                break
        await settle(a)
        c = await replica(redis_server, learned=False)
        try:
            assert {t for t in c.specs.get("crm").tools} >= {"lookup_customer"}
            assert (await check(c, LOOKUP, claims=MALLORY)).reason is Reason.SESSION_HIJACK
        finally:
            await close(c)
    finally:
        await close(a)


async def test_redis_restarted_with_its_data_resumes_the_feed(redis_server: RedisProcess) -> None:
    a, b = await replica(redis_server), await replica(redis_server)
    try:
        assert (await check(a, LOOKUP)).allowed
        await settle(a, b)
        redis_server.stop(keep_data=True)
        redis_server.start()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if a.shared.connected and b.shared.connected:
                break
        assert (await check(a, LOOKUP, sid="after")).allowed
        await settle(a, b)
        assert b.sessions.owner("after") == a.sessions.owner("after")
        assert (await check(b, LOOKUP, claims=MALLORY, sid="S1")).reason is Reason.SESSION_HIJACK
    finally:
        await close(a, b)


async def test_a_risk_event_is_scored_once_and_blocks_on_every_replica(redis_server: RedisProcess) -> None:
    a, b = await replica(redis_server), await replica(redis_server)
    try:
        a.risk.block_at = b.risk.block_at = 40
        for n in range(8):                  # distinct probes, all on a
            await check(a, call(f"nope_{n}", {}), sid="S1")
        await settle(a, b)
        assert abs(a.risk.score(a.sessions.owner("S1")) - b.risk.score(a.sessions.owner("S1"))) < 1.0
        # the same denial again on b: not a new probe
        before = b.risk.score(a.sessions.owner("S1"))
        await check(b, call("nope_0", {}), sid="S1")
        assert b.risk.score(a.sessions.owner("S1")) <= before + 0.01
    finally:
        await close(a, b)
