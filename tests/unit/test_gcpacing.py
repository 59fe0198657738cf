"""Paced garbage collection: young collections after each recorded batch, gen1 every tenth, a full
one at most once a minute, and the automatic collector kept only as a safety net."""

from __future__ import annotations

import asyncio
import gc
import io
import weakref

import orjson
import pytest

from extauthz.app import App
from extauthz.gcpacing import GcPacer
from extauthz.recorder import RECORD_DELAY
from extauthz.server import GC_PACER, settle

from .core.conftest import http, learn
from .envoy.test_check_transport import POLICY, check_request, stub_for  # noqa: F401 - fixture


@pytest.fixture
def manual_gc():
    """Only the test collects; the collector's settings come back afterwards."""
    was_enabled, threshold = gc.isenabled(), gc.get_threshold()
    gc.disable()
    gc.collect()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()
    if was_enabled:
        gc.enable()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_tick_collects_the_young_cycles(manual_gc):
    pacer = GcPacer(min_young=50)
    cycles = [Cycle() for _ in range(200)]
    refs = [weakref.ref(c) for c in cycles]
    del cycles
    assert all(r() is not None for r in refs)          # cycles: reference counting cannot free them
    assert pacer.tick() == 0
    assert all(r() is None for r in refs)
    assert pacer.collections == [1, 0, 0]


def test_tick_skips_when_little_was_allocated(manual_gc):
    pacer = GcPacer(min_young=10_000)
    keep = [Cycle() for _ in range(10)]
    assert pacer.tick() is None and pacer.collections == [0, 0, 0]
    assert gc.get_count()[0] >= len(keep)               # nothing was collected


def test_gen1_every_tenth_young_and_full_at_most_once_a_minute(manual_gc):
    now = [0.0]
    pacer = GcPacer(min_young=0, clock=lambda: now[0])
    pacer.install()                                     # right after settle's full collection, t=0
    gens = []
    for t in range(1, 131):                             # one tick a second for 130 s
        now[0] = float(t)
        gens.append(pacer.tick())
    assert [i + 1 for i, g in enumerate(gens) if g] == list(range(10, 131, 10))   # every tenth: gen1+
    assert [i + 1 for i, g in enumerate(gens) if g == 2] == [60, 120]
    assert pacer.collections == [117, 11, 2]


def test_install_keeps_the_automatic_collector_as_a_safety_net(manual_gc):
    pacer = GcPacer(safety_threshold=12_345)
    _, older, oldest = gc.get_threshold()
    pacer.install()
    assert gc.get_threshold() == (12_345, older, oldest)


def test_the_pacer_runs_after_the_batch_is_recorded_and_released():
    app = App(str(POLICY), decision_out=io.BytesIO())
    learn(app)
    seen = []
    app.recorder.after_recording = lambda: seen.append((len(app.recorder.unrecorded), len(app.decisions.recent)))
    app.record_pending()
    assert seen == []                                   # nothing answered: nothing to record or collect
    for i in range(3):                                  # no running loop: each Check is recorded inline
        assert app.check(http({"jsonrpc": "2.0", "id": i, "method": "tools/list"})).allowed
    assert seen == [(0, 1), (0, 2), (0, 3)]             # after each recording, with the batch released


def test_settle_wires_the_process_pacer(manual_gc):
    app = App(str(POLICY), decision_out=io.BytesIO())
    settle(app)
    assert app.recorder.after_recording == GC_PACER.soon
    assert gc.get_threshold()[0] == GC_PACER.safety_threshold


async def test_soon_ticks_on_the_loops_next_turn(manual_gc):
    pacer = GcPacer(min_young=0)
    pacer.soon()
    assert pacer.collections == [0, 0, 0]              # not inside the caller's callback
    await asyncio.sleep(0)
    assert sum(pacer.collections) == 1


def test_soon_without_a_loop_ticks_now(manual_gc):
    pacer = GcPacer(min_young=0)
    pacer.soon()
    assert sum(pacer.collections) == 1


async def test_real_checks_are_followed_by_a_paced_collection(stub_for, manual_gc):  # noqa: F811
    stub, app = await stub_for()
    pacer = GcPacer(min_young=1)
    app.recorder.after_recording = pacer.soon
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    for _ in range(20):
        assert (await stub.Check(check_request(body))).status.code == 0
    await asyncio.sleep(RECORD_DELAY * 5)               # the recorded batch, then its collection
    assert sum(pacer.collections) >= 1
    assert app.recorder.unrecorded == [] and len(app.decisions.recent) == 20
