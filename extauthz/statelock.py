"""One lock over the service's state, shared by gRPC's threads and the event loop.

Checks and ext_proc messages are answered on gRPC's own threads (the sync `grpc.server`): per call it
costs about half what `grpc.aio` does (bench/check_throughput.py prints both floors). Everything
else (admin HTTP, discovery, the workers bus, policy reloads, sweeps, deferred bookkeeping) runs on
one asyncio loop. The loop holds the lock whenever it runs callbacks and lets go only while it waits
in select(), so a loop callback never sees a decision half made, and a decision never sees a
callback half done, with no locking inside the state itself. The lock is re-entrant so that state
code may take it again without knowing who holds it.
"""

from __future__ import annotations

import asyncio
import selectors
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def new_lock() -> threading.RLock:
    return threading.RLock()


class _LockedSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The loop's selector: the state lock is free exactly while the loop waits for I/O."""

    def __init__(self, lock: threading.RLock) -> None:
        super().__init__()
        self._state_lock = lock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self._state_lock.release()
        try:
            return super().select(timeout)
        finally:
            self._state_lock.acquire()


def run(main: Coroutine[Any, Any, T], lock: threading.RLock) -> T:
    """asyncio.run(main) on a loop that holds `lock` except while it waits for I/O."""
    with lock, asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(_LockedSelector(lock))) as runner:
        return runner.run(main)


def call_soon(loop: asyncio.AbstractEventLoop | None, fn: Any, *args: Any) -> None:
    """Run fn(*args) on `loop` soon, from any thread (no loop: now, in the caller's thread)."""
    if loop is None or loop.is_closed():
        fn(*args)
    elif _on_loop_thread(loop):
        loop.call_soon(fn, *args)
    else:
        loop.call_soon_threadsafe(fn, *args)


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
