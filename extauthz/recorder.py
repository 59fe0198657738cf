"""Answered decisions recorded off the hot path: metrics, the inventory and the decision log.

Nothing recorded here changes a later decision (sessions and risk are updated inside the Check),
so no answer waits for it: the service records a batch 20 ms after its answers went out, RECORD_SLICE
decisions per event-loop turn, and every admin view or workers-bus report records first
(`record_pending`)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from extauthz.core.decision import Decision
from extauthz.decisionlog import DecisionLog
from extauthz.inventory.store import Inventory
from extauthz.mcp.request import HttpRequest
from extauthz.metrics import Metrics

RECORD_DELAY = 0.02     # seconds: answered Checks are recorded in batches this far apart
RECORD_SLICE = 8        # decisions recorded per event-loop turn: a Check waits behind at most this many
log = logging.getLogger("extauthz")


class Recorder:
    def __init__(self, metrics: Metrics, inventory: Inventory, decisions: DecisionLog) -> None:
        self.metrics, self.inventory, self.decisions = metrics, inventory, decisions
        self.unrecorded: list[tuple[Decision, HttpRequest]] = []       # answered, not yet recorded
        self.recording: deque[tuple[Decision, HttpRequest]] = deque()  # a batch being recorded, in slices
        self.after_recording: Callable[[], object] | None = None      # `serve`: paced GC (extauthz.gcpacing)

    def enqueue(self, d: Decision, http: HttpRequest) -> None:
        q = self.unrecorded
        q.append((d, http))
        if len(q) == 1:
            try:
                asyncio.get_running_loop().call_later(RECORD_DELAY, self.record_in_slices)
            except RuntimeError:        # no loop (replay, tests): now
                self.record_pending()

    def record_in_slices(self) -> None:
        """The batch timer: record what was answered, RECORD_SLICE decisions per loop turn, so a
        Check arriving meanwhile waits behind one slice (~0.1-0.2 ms), not the whole batch."""
        self.recording.extend(self.unrecorded)
        self.unrecorded = []
        self._record_slice()

    def _record_slice(self) -> None:
        r = self.recording
        if not r:
            return                      # record_pending took the rest
        self._record([r.popleft() for _ in range(min(len(r), RECORD_SLICE))])
        if r:
            asyncio.get_running_loop().call_soon(self._record_slice)
        else:
            self._recorded()

    def record_pending(self) -> None:
        """Metrics, inventory and decision log for the Checks answered since the last call, in
        the order they were answered."""
        if not self.recording and not self.unrecorded:
            return
        q = [*self.recording, *self.unrecorded]
        self.recording.clear()
        self.unrecorded = []
        self._record(q)
        del q
        self._recorded()

    def _recorded(self) -> None:
        """A batch is fully recorded: the inventory folds it in; its objects are garbage now, for
        the paced collection (`after_recording`)."""
        self.inventory.flush()
        if self.after_recording is not None:
            self.after_recording()

    def _record(self, q: list[tuple[Decision, HttpRequest]]) -> None:
        observe, record, emit = self.metrics.observe, self.inventory.record, self.decisions.emit
        for d, http in q:
            try:
                observe(d.server, d.method, d.allowed, d.reason._value_, d.latency)
                record(d, http)
                emit(d)
            except Exception:  # noqa: BLE001 - a decision already answered stays answered
                log.exception("recording a decision failed")
