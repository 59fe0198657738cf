"""Cyclic garbage collection at moments the service picks, not wherever an allocation count trips.

grpc.aio leaves reference cycles behind every RPC (its method lookup's closure and scope, the call
details, one `_Metadatum` per request header), so with allocation-triggered collection a young
collection lands inside some Check every few hundred RPCs, and a gen1 one every few thousand. At
CPython's default threshold (700) those pauses are short but frequent; at 7,000 they were rare but
walked 7,000-22,000 objects: 2-5 ms of CPU on average and up to 12 ms, with every Check behind it
waiting (measured with a gc.callbacks probe through real Envoy at 1,000/s, bench/README.md).

The service instead collects the young generation right after each batch of answered Checks is
recorded (App.record_pending, every ~20 ms under load): then it holds little more than that batch's
garbage, and the collection runs between Checks rather than inside one. Every tenth of those also
collects gen1; a full collection runs at most once a minute (after `settle`, long-lived state is
frozen out of the collector's sight, so a full one walks only what was created since). The automatic,
allocation-triggered collector stays on with a high threshold as a safety net for allocation that no
Check paces (ext_proc streams, admin requests, a stalled loop).
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable

# The automatic collector's young threshold: only reached when nothing paces collection.
SAFETY_THRESHOLD = int(os.environ.get("EXTAUTHZ_GC_GEN0", "50000"))
MIN_YOUNG = 256          # below this many new objects, a young collection is not worth its fixed cost
GEN1_EVERY = 10          # young collections per gen1 collection (CPython's default ratio)
FULL_EVERY_SECONDS = 60.0


class GcPacer:
    """Decides which generation to collect at each pacing point (`tick`)."""

    def __init__(self, *, safety_threshold: int = SAFETY_THRESHOLD, min_young: int = MIN_YOUNG,
                 gen1_every: int = GEN1_EVERY, full_every: float = FULL_EVERY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.safety_threshold = safety_threshold
        self.min_young = min_young
        self.gen1_every = gen1_every
        self.full_every = full_every
        self._clock = clock
        self._last_full = clock()
        self.collections = [0, 0, 0]      # paced collections per generation (the automatic ones aside)

    def install(self) -> None:
        """Raise the automatic collector's young threshold to the safety net (it stays enabled).
        Called right after a full collection (`settle`), which restarts the full-collection clock."""
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(self.safety_threshold, older, oldest)
        self._last_full = self._clock()

    def soon(self) -> None:
        """Tick on the event loop's next turn (after the I/O that arrived meanwhile), so a Check
        waits behind the recorded batch or behind the collection, never behind both."""
        try:
            asyncio.get_running_loop().call_soon(self.tick)
        except RuntimeError:        # no running loop: now
            self.tick()

    def tick(self) -> int | None:
        """Collect what is due now; return the generation collected, or None."""
        young, young_runs, _ = gc.get_count()
        if young < self.min_young:
            return None
        gen = 0
        if young_runs + 1 >= self.gen1_every:
            gen = 1
            now = self._clock()
            if now - self._last_full >= self.full_every:
                gen = 2
                self._last_full = now
        gc.collect(gen)
        self.collections[gen] += 1
        return gen
