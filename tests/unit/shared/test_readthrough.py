"""Denials our own feed lag would cause are read through to Redis once (extauthz.shared.readthrough):
a spec or a list another replica wrote and this one has not applied yet decides the call here;
an unknown name stays unknown, probes cost at most a read per server and interval, and Redis
down leaves the deny standing."""

from __future__ import annotations

import asyncio
import io

import pytest

from extauthz.app import App
from extauthz.core.reasons import Reason
from extauthz.shared.redis import RedisShared
from extauthz.shared.testing import RedisProcess

from ..core.conftest import SUPPORT, TOOLS, call, http, learn
from .test_redis_state import LOOKUP, MALLORY, POLICY, check, close, replica

OPEN = call("open_tool", {"a": "x"})
SEARCH = call("search_customers", {"query": "x"})
WITHOUT_OPEN = [t for t in TOOLS if t["name"] != "open_tool"]


def pause_feed(app: App) -> None:
    """This replica's feed reader applies nothing more: what the others write reaches it only by
    reading through (a cancelled reader may swallow the cancellation mid-command: RedisShared)."""
    shared: RedisShared = app.shared
    shared._apply = lambda msg: None  # type: ignore[method-assign]


async def written(app: App) -> None:
    for _ in range(200):
        if not app.shared.outbox and not app.shared.inflight:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the writer did not drain")


async def lagging_pair(redis: RedisProcess) -> tuple[App, App]:
    """Two replicas that know crm without open_tool and session S1 (alice's); B stops reading the
    feed; then A learns open_tool."""
    a, b = await replica(redis, learned=False), await replica(redis, learned=False)
    learn(a, WITHOUT_OPEN)
    learn(b, WITHOUT_OPEN)
    assert (await check(a, LOOKUP)).allowed and (await check(b, LOOKUP)).allowed
    pause_feed(b)
    learn(a, TOOLS)
    await written(a)
    return a, b


async def test_a_spec_another_replica_wrote_is_read_through_and_the_call_allowed(redis_server: RedisProcess) -> None:
    a, b = await lagging_pair(redis_server)
    try:
        assert b.specs.get("crm").tools.get("open_tool") is None          # the feed did not bring it
        req = http(OPEN, headers={"mcp-session-id": "S1"})
        pending = b.check(req)
        assert pending.recheck[0] == ("spec", "crm") and not pending.allowed          # never an allow before the read
        d = await b.confirm_claim(req, pending)
        assert d.allowed, d.detail
        assert b.shared.readthrough.counts["found"] == 1
        assert b.risk.score(d.caller.key) == 0                              # the honest call scored nothing
        assert (await check(b, OPEN)).allowed                               # known now: decided locally
        assert sum(b.shared.readthrough.counts.values()) == 1
        b.metrics.watch_shared(b.shared.status)
        from prometheus_client import generate_latest
        text = generate_latest(b.metrics.registry).decode()
        assert 'mcp_extauthz_shared_readthrough_total{outcome="found"} 1.0' in text
        assert 'mcp_extauthz_shared_readthrough_total{outcome="nothing"} 0.0' in text
    finally:
        await close(a, b)


async def test_a_list_another_replica_showed_the_session_is_read_through(redis_server: RedisProcess) -> None:
    a, b = await replica(redis_server), await replica(redis_server)
    try:
        alice = SUPPORT["iss"] + "|alice|agent"
        a.visibility.listed("crm", "S1", alice, "tools", ["lookup_customer"])
        await written(a)
        assert (await check(b, LOOKUP)).allowed                             # claimed on B, with that list
        pause_feed(b)
        a.visibility.listed("crm", "S1", alice, "tools", ["lookup_customer", "search_customers"])
        await written(a)
        req = http(SEARCH, headers={"mcp-session-id": "S1"})
        pending = b.check(req)
        assert pending.recheck == (("vis", "crm", "s:S1"), ("vis", "crm", "c:" + alice)) and "never listed" in pending.detail
        d = await b.confirm_claim(req, pending)
        assert d.allowed, d.detail
        assert b.shared.readthrough.counts == {"found": 1, "nothing": 0, "down": 0}
        # somebody else's list of S1 is not this session's: still never listed to it
        d = await check(b, call("get_order", {"order": {"id": 1}}))
        assert d.reason is Reason.UNKNOWN_CAPABILITY and "never listed" in d.detail
    finally:
        await close(a, b)


async def test_an_unknown_name_stays_unknown_and_a_burst_of_probes_costs_a_read_or_two(
        redis_server: RedisProcess) -> None:
    a, b = await lagging_pair(redis_server)
    try:
        plain = App(str(POLICY), decision_out=io.BytesIO())
        learn(plain)
        alone = plain.check(http(call("no_such_tool"), headers={"mcp-session-id": "P"}))
        d = await check(b, call("no_such_tool"), sid="S1")
        assert d.reason is Reason.UNKNOWN_CAPABILITY and "published spec" in d.detail
        assert plain.risk.score(alone.caller.key) > 0      # scored once, as on a replica alone (decay aside)
        assert b.risk.score(d.caller.key) == pytest.approx(plain.risk.score(alone.caller.key), abs=0.01)
        assert b.shared.readthrough.counts == {"found": 1, "nothing": 0, "down": 0}   # open_tool came along
        await asyncio.sleep(1.1)                                            # past the freshness window
        assert (await check(b, call("lookup_customer", {"customer_id": "c-100"}), claims=MALLORY,
                            sid="M1")).allowed
        probes = await asyncio.gather(*(check(b, call(f"probe_{n}"), claims=MALLORY, sid="M1") for n in range(50)))
        # each probe scored once: the risk engine blocks mallory part way through, as it would alone
        assert {p.reason for p in probes} == {Reason.UNKNOWN_CAPABILITY, Reason.RISK_BLOCKED}
        assert b.risk.blocked(probes[0].caller.key)
        assert not any(p.pending for p in probes)
        reads = sum(b.shared.readthrough.counts.values()) - 1
        assert 1 <= reads <= 2, b.shared.readthrough.counts
        assert b.shared.readthrough.counts["nothing"] >= 1
    finally:
        await close(a, b)


async def test_redis_down_the_deny_stands(redis_server: RedisProcess) -> None:
    a, b = await lagging_pair(redis_server)
    try:
        redis_server.stop()
        d = await check(b, OPEN)                                            # Redis holds it, but cannot say so
        assert d.reason is Reason.UNKNOWN_CAPABILITY and not d.pending
        assert b.shared.readthrough.counts["down"] >= 1 and b.shared.readthrough.counts["found"] == 0
        assert (await check(b, LOOKUP)).allowed                             # known: decided locally
        for _ in range(100):                                                # the ping notices the outage
            if not b.shared.connected:
                break
            await asyncio.sleep(0.05)
        down = b.shared.readthrough.counts["down"]
        pending = b.check(http(call("open_tool", {"a": "y"}), headers={"mcp-session-id": "S1"}))
        assert not pending.pending and pending.reason is Reason.UNKNOWN_CAPABILITY   # no wait at all
        assert b.shared.readthrough.counts["down"] == down + 1
    finally:
        await close(a, b)


async def test_a_change_of_ours_not_yet_written_is_not_undone_by_the_older_copy_in_redis(
        redis_server: RedisProcess) -> None:
    b = await replica(redis_server, learned=False)
    try:
        learn(b, TOOLS)
        assert (await check(b, OPEN)).allowed
        await written(b)                    # Redis holds B's list, with open_tool
        b.shared._wake = asyncio.Event()    # B's writer waits on the old event: B's next writes stay queued
        learn(b, WITHOUT_OPEN)              # the same viewer's newer list, without open_tool
        assert ("spec", "tools") in b.shared.pending_own("crm")
        d = await check(b, OPEN)            # Redis still holds the older list, with open_tool
        assert d.reason is Reason.UNKNOWN_CAPABILITY, d.detail
        assert b.specs.get("crm").tools.get("open_tool") is None
        assert b.shared.readthrough.counts["found"] == 0
    finally:
        await close(b)


async def test_a_known_capability_never_waits(redis_server: RedisProcess) -> None:
    a, b = await lagging_pair(redis_server)
    try:
        d = b.check(http(LOOKUP, headers={"mcp-session-id": "S1"}))
        assert d.allowed and not d.pending
        d = b.check(http(call("lookup_customer", {"customer_id": "c-999"}), headers={"mcp-session-id": "S1"}))
        assert d.reason is Reason.CONSTRAINT_VIOLATED and not d.pending     # other denials: decided locally
        assert sum(b.shared.readthrough.counts.values()) == 0
    finally:
        await close(a, b)
