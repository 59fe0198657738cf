"""The shared actor log (issue 18, --redis): two replicas on one real redis-server. What replica A
decided for a caller is on replica B's actor view, found by decision id, MCP session id, user
session id, subject and client id; merged with B's own decisions once each, in time order; capped
per caller; every key expires; with Redis down the view is B's alone, marked partial."""

from __future__ import annotations

import asyncio

from extauthz.admin.actor_page import render
from extauthz.admin.actor_view import build
from extauthz.admin.actors import LocalActors
from extauthz.admin.actors_shared import SharedActors, merge_shared, with_shared_log
from extauthz.app import App
from extauthz.shared.actor_log import ActorLog
from extauthz.shared.testing import RedisProcess

from ..core.conftest import SUPPORT, call
from .test_redis_state import check, close, replica

IVAN = {**SUPPORT, "sub": "ivan", "client_id": "ivan-agent", "sid": "web-7"}
KEY = f"{IVAN['iss']}|ivan|ivan-agent"
LOOKUP = call("lookup_customer", {"customer_id": "c-100"})
UNKNOWN = call("drop_tables", {})


async def pair(redis: RedisProcess) -> tuple[App, App, SharedActors, SharedActors]:
    a, b = await replica(redis), await replica(redis)
    sa, _ = with_shared_log(a, LocalActors(a), a.shared, write=True)
    sb, _ = with_shared_log(b, LocalActors(b), b.shared, write=True)
    assert isinstance(sa, SharedActors) and isinstance(sb, SharedActors)
    return a, b, sa, sb


async def written(*sources: SharedActors) -> None:
    for _ in range(100):
        if all(not s.log.pending for s in sources):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the actor log did not write its queue")


async def stop(*sources: SharedActors) -> None:
    for s in sources:
        await s.log.close()


async def test_a_decision_made_on_one_replica_is_on_the_other_replicas_actor_view(redis_server) -> None:
    a, b, sa, sb = await pair(redis_server)
    try:
        made = []
        for body in (LOOKUP, UNKNOWN):
            # recorded one by one: a record's time is when it was recorded, a risk event's when
            # it was decided (a ms apart at most here, in the service up to a recording batch)
            made.append(await check(a, body, claims=IVAN, sid="S-A"))
            a.record_pending()
            await asyncio.sleep(0.005)
        await written(sa)
        denied = made[1]
        assert not denied.allowed
        # B never saw this caller, yet every identifier of it leads there
        for q, via in ((denied.decision_id, "decision"), ("S-A", "session"), ("web-7", "userSession"),
                       ("ivan", "subject"), ("ivan-agent", "client"), (KEY, "caller")):
            hits = await sb.find(q)
            assert [(h.caller, h.via) for h in hits] == [(KEY, via)], q
        assert (await sb.find(denied.decision_id))[0].decision_id == denied.decision_id
        # an allowed decision id (the upstream sees it in x-mcp-decision-id): not indexed, found
        # in the streams of the callers of its minute
        allowed = made[0]
        assert allowed.allowed
        assert [(h.caller, h.via, h.decision_id) for h in await sb.find(allowed.decision_id)] == [
            (KEY, "decision", allowed.decision_id)]
        assert await sb.find(allowed.decision_id[:12] + "f" * 20) == []      # its minute, made by nobody
        facts = await sb.facts(KEY)
        assert facts["known"] and facts["partial"] == ""
        assert [d["decision_id"] for d in facts["decisions"]] == [d.decision_id for d in made]
        view = build(facts)
        assert [s.decision_id for s in view.steps] == [d.decision_id for d in made]
        assert {s.replica for s in view.steps} == {a.shared.replica}
        assert view.steps[1].verdict == "deny" and view.steps[1].user_session == "web-7"
        assert [m.session_id for m in view.mcp_sessions] == ["S-A"]
        assert view.bounds.shared == 256 and view.bounds.allowed == 1 and view.bounds.denied == 1
        assert "Over every replica (Redis)" in render(view)
    finally:
        await stop(sa, sb)
        await close(a, b)


async def test_both_replicas_decisions_merged_once_each_in_time_order(redis_server) -> None:
    a, b, sa, sb = await pair(redis_server)
    try:
        ids = []
        for n in range(6):          # alternating replicas: the merge must interleave them
            app = (a, b)[n % 2]
            ids.append((await check(app, LOOKUP, claims=IVAN, sid=f"S-{n % 2}")).decision_id)
            app.record_pending()
            await asyncio.sleep(0.005)
        await written(sa, sb)
        for src in (sa, sb):
            facts = await src.facts(KEY)
            got = [d["decision_id"] for d in facts["decisions"]]
            assert got == ids, "every decision once, oldest first"
            # each replica's own three come from its decision ring (the local copy wins a tie)
            assert sum(1 for d in facts["decisions"] if "replica" not in d) == 3
            ev, partial = await src.timeline_events([KEY], [])
            assert [e["decisionId"] for e in ev] == ids and partial == ""
    finally:
        await stop(sa, sb)
        await close(a, b)


def test_merge_dedupes_by_decision_id_keeps_the_local_copy_and_orders_by_time() -> None:
    caller = {"iss": "i", "sub": "s", "client_id": "c"}
    local = {"caller": "i|s|c", "known": True, "identity": {"allowed": 1, "denied": 0}, "decisions": [
        {"decision_id": "b" * 32, "time": "2026-12-03T06:00:02.000Z", "caller": caller, "decision": "allow",
         "worker": 1}]}
    remote = [
        {"decision_id": "c" * 32, "time": "2026-12-03T06:00:03.000Z", "caller": caller, "decision": "deny"},
        {"decision_id": "b" * 32, "time": "2026-12-03T06:00:02.000Z", "caller": caller, "decision": "allow",
         "replica": "other"},
        {"decision_id": "a" * 32, "time": "2026-12-03T06:00:01.000Z", "caller": caller, "decision": "deny"},
        {"decision_id": "d" * 32, "time": "2026-12-03T06:00:00.000Z", "caller": {**caller, "sub": "x"}},
    ]
    out = merge_shared(local, remote, 256)
    assert [d["decision_id"][0] for d in out["decisions"]] == ["a", "b", "c"]
    assert out["decisions"][1]["worker"] == 1 and "replica" not in out["decisions"][1]
    assert out["identity"] == {"allowed": 1, "denied": 2} and out["shared"]["records"] == 3


async def test_the_stream_per_caller_is_capped_and_every_key_expires(redis_server) -> None:
    a = await replica(redis_server)
    log = ActorLog(a.shared, keep=20, ttl=120)
    try:
        for n in range(300):
            log.add({"decision_id": f"{n:032x}", "time": f"2026-12-03T06:00:00.{n:03d}Z", "decision": "deny",
                     "caller": {"iss": "i", "sub": "s", "client_id": "c"}, "mcp_session_id": f"S{n % 3}"})
        while log.queue:
            assert await log.flush()
        got = await log.read("i|s|c")
        assert [r["decision_id"] for r in got] == [f"{n:032x}" for n in range(280, 300)], "the newest 20, in order"
        r = a.shared.r
        assert await r.xlen(log.key("actor", "i|s|c")) <= 20 + 100     # MAXLEN ~ trims by whole nodes
        keys = [k async for k in r.scan_iter(match=log.key("actor*"))]
        assert len(keys) >= 6     # stream, 3 sessions, subject, client, denial index
        for k in keys:
            assert 0 < await r.ttl(k) <= 180, k
    finally:
        await close(a)


async def test_redis_down_the_view_is_this_replicas_alone_marked_partial(redis_server) -> None:
    a, b, sa, sb = await pair(redis_server)
    try:
        await check(a, LOOKUP, claims=IVAN, sid="S-A")
        mine = await check(b, LOOKUP, claims=IVAN, sid="S-B")
        a.record_pending()
        b.record_pending()
        await written(sa, sb)
        redis_server.stop()
        for _ in range(2):      # before and after the replica noticed (a failed read, then not connected)
            facts = await asyncio.wait_for(sb.facts(KEY), 5)
            assert "did not answer" in facts["partial"]
            assert [d["decision_id"] for d in facts["decisions"]] == [mine.decision_id]
            view = build(facts)
            assert view.bounds.partial and "Partial: " in render(view).replace("<b>", "").replace("</b>", "")
            hits = await asyncio.wait_for(sb.find("ivan"), 5)
            assert [h.caller for h in hits] == [KEY]     # found locally; the shared log's absence is no error
            await asyncio.sleep(0.5)
        # written behind meanwhile: queued, not lost, not raised into the recording
        await check(b, LOOKUP, claims=IVAN, sid="S-B")
        b.record_pending()
        await asyncio.sleep(0.3)
        assert sb.log.pending == 1
    finally:
        await stop(sa, sb)
        await close(a, b)


async def test_a_batch_redis_refuses_is_dropped_and_counted_not_retried_forever(redis_server) -> None:
    a = await replica(redis_server)
    log = ActorLog(a.shared)
    try:
        rec = {"decision_id": "0" * 32, "decision": "allow", "caller": {"iss": "i", "sub": "s", "client_id": "c"}}
        await a.shared.r.set(log.key("actor", "i|s|c"), "not a stream")      # XADD answers WRONGTYPE
        log.add(rec)
        assert await log.flush() and log.dropped == 1 and log.pending == 0
        await a.shared.r.delete(log.key("actor", "i|s|c"))
        log.add(rec)
        assert await log.flush() and log.written == 1
        assert [r["decision_id"] for r in await log.read("i|s|c")] == ["0" * 32]
    finally:
        await close(a)
