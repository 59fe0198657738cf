"""RedisShared.claim_slot: the one way claims and read-throughs take a claim connection. A slot is
given back however the block ends; a wait for one ends within the budget (NoFreeSlot), and each
caller maps that as before: a claim is denied (counted waited out), a read-through is "down"."""

from __future__ import annotations

import asyncio
import dataclasses
import io

import pytest
from redis.exceptions import RedisError

from extauthz.app import App
from extauthz.shared.config import redis_config
from extauthz.shared.redis import NoFreeSlot, RedisShared, SharedUnavailable

from .test_redis_state import POLICY

SLOTS = 2


def unstarted(timeout: float = 0.05) -> RedisShared:
    """A RedisShared never started: its clients never connect (nothing listens on port 1)."""
    cfg = dataclasses.replace(redis_config("redis://127.0.0.1:1", prefix="t", timeout=timeout),
                              claim_connections=SLOTS)
    return RedisShared(cfg, App(str(POLICY), decision_out=io.BytesIO()))


def free(shared: RedisShared) -> int:
    return shared.claim_slots._value


async def test_a_slot_is_held_for_the_block_and_given_back_after() -> None:
    s = unstarted()
    async with s.claim_slot():
        assert free(s) == SLOTS - 1
        async with s.claim_slot():
            assert free(s) == 0
        assert free(s) == SLOTS - 1
    assert free(s) == SLOTS


async def test_a_slot_is_given_back_when_the_block_raises() -> None:
    s = unstarted()
    with pytest.raises(ValueError, match="boom"):
        async with s.claim_slot():
            raise ValueError("boom")
    assert free(s) == SLOTS


async def test_a_slot_is_given_back_when_the_block_is_cancelled() -> None:
    s = unstarted()
    entered = asyncio.Event()

    async def hold() -> None:
        async with s.claim_slot():
            entered.set()
            await asyncio.Event().wait()

    t = asyncio.create_task(hold())
    await entered.wait()
    assert free(s) == SLOTS - 1
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert free(s) == SLOTS


async def test_no_free_slot_within_the_budget_raises_and_takes_none() -> None:
    s = unstarted()
    for _ in range(SLOTS):
        await s.claim_slots.acquire()
    entered = False
    with pytest.raises(NoFreeSlot, match=r"no Redis connection free within 0.05s \(2 claims in flight\)"):
        async with s.claim_slot():
            entered = True
    assert not entered
    assert isinstance(NoFreeSlot("x"), TimeoutError)
    for _ in range(SLOTS):
        s.claim_slots.release()
    assert free(s) == SLOTS               # the timed-out wait left no slot taken behind


async def test_a_waiter_gets_the_slot_another_gives_back_within_the_budget() -> None:
    s = unstarted(timeout=30.0)
    for _ in range(SLOTS):
        await s.claim_slots.acquire()
    got = asyncio.Event()

    async def wait_for_one() -> None:
        async with s.claim_slot():
            got.set()

    t = asyncio.create_task(wait_for_one())
    await asyncio.sleep(0)
    assert not got.is_set()
    s.claim_slots.release()
    await asyncio.wait_for(t, 10)
    assert got.is_set() and free(s) == 1


async def test_a_claim_finding_no_slot_is_unavailable_and_counted_waited_out() -> None:
    s = unstarted()
    for _ in range(SLOTS):
        await s.claim_slots.acquire()
    with pytest.raises(SharedUnavailable, match="no Redis connection free within") as e:
        await s.claim("S1", "alice", "crm", {})
    assert isinstance(e.value.__cause__, NoFreeSlot)
    assert s.claims_waited_out == 1 and s.claims == 0 and free(s) == 0


async def test_a_read_through_finding_no_slot_is_down_and_remembers_nothing() -> None:
    s = unstarted()
    for _ in range(SLOTS):
        await s.claim_slots.acquire()
    assert await s.readthrough._read_one(("spec", "crm")) == "down"
    assert free(s) == 0 and not s.readthrough._fresh


async def test_a_read_through_gives_its_slot_back_when_the_read_fails_or_is_slow() -> None:
    s = unstarted()
    s.connected = True

    async def failing(server: str) -> bool:
        assert free(s) == SLOTS - 1                   # read while holding a slot
        raise RedisError("gone")

    async def slow(server: str) -> bool:
        await asyncio.Event().wait()
        return True

    s.readthrough._spec = failing  # type: ignore[method-assign]
    assert await s.readthrough._read_one(("spec", "crm")) == "down"
    assert free(s) == SLOTS and not s.connected        # a Redis error marks Redis down, as before
    s.readthrough._spec = slow  # type: ignore[method-assign]
    assert await s.readthrough._read_one(("spec", "crm")) == "down"
    assert free(s) == SLOTS and not s.readthrough._fresh
