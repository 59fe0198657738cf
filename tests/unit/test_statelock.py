"""extauthz.statelock: the event loop and gRPC's threads never interleave inside the state."""

from __future__ import annotations

import asyncio
import threading
import time

from extauthz import statelock


def test_loop_callbacks_and_threads_are_mutually_atomic():
    """The loop updates two counters with a GIL-releasing pause between them; threads taking the
    lock must never see them apart, and the threads' own two-step updates must never be seen apart
    by the loop. Without the lock this fails within a few iterations (the sleep hands the GIL over)."""
    lock = statelock.new_lock()
    state = {"a": 0, "b": 0}
    torn: list[tuple[str, int, int]] = []
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            with lock:
                if state["a"] != state["b"]:
                    torn.append(("thread saw", state["a"], state["b"]))
                state["a"] += 1
                time.sleep(0.0001)
                state["b"] += 1

    async def main() -> int:
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        rounds = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if state["a"] != state["b"]:
                torn.append(("loop saw", state["a"], state["b"]))
            state["a"] += 1
            time.sleep(0.0001)
            state["b"] += 1
            rounds += 1
            await asyncio.sleep(0.001)       # select(): the threads get their turn here
        stop.set()
        for t in threads:
            await asyncio.to_thread(t.join)
        return rounds

    rounds = statelock.run(main(), lock)
    assert torn == []
    assert rounds > 50 and state["a"] == state["b"] > rounds      # both sides really ran


def test_lock_is_free_while_the_loop_waits_and_held_while_it_runs():
    lock = statelock.new_lock()
    got: list[tuple[str, bool]] = []

    def grab(tag: str) -> None:
        ok = lock.acquire(timeout=0.3)
        got.append((tag, ok))
        if ok:
            lock.release()

    async def main() -> None:
        t = threading.Thread(target=grab, args=("while the loop waits",))
        t.start()
        await asyncio.sleep(0.5)             # the loop waits in select()
        await asyncio.to_thread(t.join)
        t = threading.Thread(target=grab, args=("while a callback runs",))
        t.start()
        t.join()                             # blocks this callback, which keeps the lock

    statelock.run(main(), lock)
    assert got == [("while the loop waits", True), ("while a callback runs", False)]
    assert lock.acquire(blocking=False)      # and it is let go when the loop ends
    lock.release()


def test_call_soon_from_a_thread_runs_on_the_loop():
    lock = statelock.new_lock()
    ran: list[tuple[str, bool]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def on_loop(tag: str) -> None:
            ran.append((tag, threading.current_thread() is threading.main_thread()))
            done.set()

        threading.Thread(target=statelock.call_soon, args=(loop, on_loop, "from thread")).start()
        await asyncio.wait_for(done.wait(), 5)

    statelock.run(main(), lock)
    assert ran == [("from thread", True)]
    out: list[int] = []
    statelock.call_soon(None, out.append, 1)      # no loop: at once
    assert out == [1]
