"""The open-loop HTTP/1.1 load generator of the through-Envoy benches (through_envoy.py, shared_envoy.py).

Requests are scheduled on a fixed timeline (a Linux timerfd armed at each scheduled time: asyncio's
own timers round to whole milliseconds) over a pool of keep-alive connections (more are opened when
all are busy), and latency is measured from the *scheduled* time to the last byte of the answer, so
a stall delays every request behind it in the numbers too (no coordinated omission). A success is
HTTP 200 with bench/upstream_echo.py's marker in the body.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import common as C

MARKER = b"bench-echo"            # in every answer of bench/upstream_echo.py (and only there)
Request = bytes | Callable[[int], bytes]

_CLOCK_MONOTONIC, _TFD_TIMER_ABSTIME = 1, 1
_TFD_NONBLOCK, _TFD_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class Timer:
    """A one-shot timer on CLOCK_MONOTONIC (= time.monotonic_ns) with nanosecond resolution.

    asyncio's timers round to whole milliseconds (epoll's timeout), which would make every send up
    to 1 ms late; a Linux timerfd armed at an absolute time wakes the loop within tens of µs."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd
        self._spec = _Itimerspec()

    def arm_at(self, t_ns: int) -> None:
        self._spec.it_value.tv_sec, self._spec.it_value.tv_nsec = divmod(max(t_ns, 1), 1_000_000_000)
        if self._settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def drain(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class LoadResult:
    target: str
    rate: int
    round: int
    scheduled: int = 0                 # measured requests (after the warm-up)
    ok: int = 0
    failed: int = 0
    lat_ns: list[int] = field(default_factory=list)    # scheduled time -> last byte, successes only
    lag_ns: list[int] = field(default_factory=list)    # scheduled time -> written to the socket
    errors: dict[str, int] = field(default_factory=dict)
    new_connections: int = 0           # opened during the run because no pooled one was idle
    queued: int = 0                    # waited for a connection (pool at its cap)
    answered: int = 0                  # all answers, warm-up included (CPU is measured over the whole run)
    cpu_s: float = 0.0                 # this process's CPU time over the run (the generator's cost)
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, gen: OpenLoop) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.cur: tuple[int, int] | None = None        # (request index, scheduled ns)
        self.head_end = -1
        self.status = 0
        self.clen = -1
        self.chunked = False
        self.close_after = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, i: int, sched: int) -> None:
        assert self.transport is not None
        self.cur = (i, sched)
        self.buf.clear()
        self.head_end, self.status, self.clen, self.chunked, self.close_after = -1, 0, -1, False, False
        self.transport.write(self.gen.request_for(i))
        self.gen.sent(i, sched)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if self.cur is None:
            self.gen.protocol_error(self, "data without a request")
            return
        self.buf += data
        if self.head_end < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head_end = end + 4
            lines = bytes(self.buf[:end]).split(b"\r\n")
            try:
                self.status = int(lines[0].split(b" ", 2)[1])
            except (IndexError, ValueError):
                self.gen.protocol_error(self, "bad status line")
                return
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    self.clen = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    self.chunked = True
                elif name == b"connection" and b"close" in value.lower():
                    self.close_after = True
        if self.chunked:
            if not self.buf.endswith(b"0\r\n\r\n"):
                return
            body = bytes(self.buf[self.head_end:])
        elif self.clen >= 0:
            if len(self.buf) < self.head_end + self.clen:
                return
            body = bytes(self.buf[self.head_end:self.head_end + self.clen])
        else:
            self.gen.protocol_error(self, "answer without a length")
            return
        i, sched = self.cur
        self.cur = None
        ok = self.status == 200 and MARKER in body
        self.gen.finished(i, sched, now, ok, "" if ok else f"HTTP {self.status} {body[:160]!r}")
        if self.close_after:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self.gen.dropped(self)
        else:
            self.gen.idle_conn(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.cur is not None:
            i, sched = self.cur
            self.cur = None
            self.gen.finished(i, sched, time.monotonic_ns(), False, f"connection lost ({exc or 'closed by peer'})")
        self.gen.dropped(self)


class OpenLoop:
    """Sends `request` to host:port at `rate` per second on a fixed schedule, open loop.

    Request i is due at t0 + i/rate. When it is due, it goes out on an idle pooled connection; if
    none is idle, a new connection is opened (up to `max_connections`), else it waits in a FIFO.
    Its latency counts from when it was due, so the generator's own lateness, connection set-up and
    queueing all show up in the numbers instead of silently lowering the offered rate."""

    def __init__(self, host: str, port: int, request: Request, *, rate: int, warmup: float, duration: float,
                 connections: int, max_connections: int, timeout: float) -> None:
        self.host, self.port = host, port
        # One fixed request, or one per index (e.g. a new session id on every request).
        if callable(request):
            self.request_for: Callable[[int], bytes] = request
        else:
            fixed = request
            self.request_for = lambda _i: fixed
        self.rate, self.connections, self.max_connections, self.timeout = rate, connections, max_connections, timeout
        self.n_warm = round(warmup * rate)
        self.n_total = self.n_warm + round(duration * rate)
        self.period_ns = 1e9 / rate
        self.idle: deque[_Conn] = deque()
        self.all: set[_Conn] = set()
        self.waiting: deque[tuple[int, int]] = deque()
        self.opening = 0
        self.next_i = 0
        self.outstanding = 0
        self.t0 = 0
        self.res: LoadResult | None = None
        self.done: asyncio.Future[None] | None = None
        self.timer: Timer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def sched(self, i: int) -> int:
        return self.t0 + int(i * self.period_ns)

    async def _open(self) -> _Conn:
        assert self.loop is not None
        _, conn = await self.loop.create_connection(lambda: _Conn(self), self.host, self.port)
        self.all.add(conn)
        return conn

    async def run(self, res: LoadResult) -> LoadResult:
        self.loop = asyncio.get_running_loop()
        self.res = res
        conns = await asyncio.gather(*(self._open() for _ in range(self.connections)))
        self.idle.extend(conns)
        self.done = self.loop.create_future()
        self.timer = Timer()
        cpu0, wall0 = time.process_time(), time.monotonic()
        self.t0 = time.monotonic_ns() + 20_000_000
        self.loop.add_reader(self.timer.fd, self._tick)
        self.timer.arm_at(self.t0)
        last_due = self.sched(self.n_total - 1) / 1e9
        try:
            await asyncio.wait_for(asyncio.shield(self.done),
                                   timeout=max(0.0, last_due - time.monotonic()) + self.timeout + 1.0)
        except TimeoutError:
            pass
        finally:
            self.loop.remove_reader(self.timer.fd)
            self.timer.close()
        res.cpu_s, res.wall_s = time.process_time() - cpu0, time.monotonic() - wall0
        # What never came back: timed out (also what never left the queue).
        lost = [c.cur for c in self.all if c.cur is not None] + list(self.waiting)
        lost += [(i, 0) for i in range(self.next_i, self.n_total)]
        for i, _ in lost:
            if i >= self.n_warm:
                res.failed += 1
                res.errors["timeout"] = res.errors.get("timeout", 0) + 1
        for c in list(self.all):
            c.cur = None
            if c.transport is not None:
                c.transport.close()
        await asyncio.sleep(0)
        return res

    # The schedule.
    def _tick(self) -> None:
        assert self.timer is not None
        self.timer.drain()
        now = time.monotonic_ns()
        while self.next_i < self.n_total and self.sched(self.next_i) <= now:
            i = self.next_i
            self.next_i += 1
            self.outstanding += 1
            self._dispatch(i, self.sched(i))
        if self.next_i < self.n_total:
            self.timer.arm_at(self.sched(self.next_i))

    def _dispatch(self, i: int, sched: int) -> None:
        while self.idle:
            conn = self.idle.popleft()
            if not conn.closed:
                conn.send(i, sched)
                return
        if len(self.all) + self.opening < self.max_connections:
            self.opening += 1
            if i >= self.n_warm and self.res is not None:
                self.res.new_connections += 1
            assert self.loop is not None
            self.loop.create_task(self._open_and_send(i, sched))
        else:
            if i >= self.n_warm and self.res is not None:
                self.res.queued += 1
            self.waiting.append((i, sched))

    async def _open_and_send(self, i: int, sched: int) -> None:
        try:
            conn = await self._open()
        except OSError as e:
            self.opening -= 1
            self.finished(i, sched, time.monotonic_ns(), False, f"connect failed ({e})")
            return
        self.opening -= 1
        conn.send(i, sched)

    # Callbacks from connections.
    def sent(self, i: int, sched: int) -> None:
        if i >= self.n_warm and self.res is not None:
            self.res.lag_ns.append(time.monotonic_ns() - sched)

    def finished(self, i: int, sched: int, now: int, ok: bool, error: str) -> None:
        res = self.res
        assert res is not None
        self.outstanding -= 1
        res.answered += 1
        if i >= self.n_warm:
            res.scheduled += 1
            if ok:
                res.ok += 1
                res.lat_ns.append(now - sched)
            else:
                res.failed += 1
                key = re.sub(r"(?<!HTTP )\d{3,}", "N", error)[:200]      # ids vary, the status stays
                res.errors[key] = res.errors.get(key, 0) + 1
        if self.next_i >= self.n_total and self.outstanding == 0 and self.done is not None and not self.done.done():
            self.done.set_result(None)

    def idle_conn(self, conn: _Conn) -> None:
        if self.waiting:
            i, sched = self.waiting.popleft()
            conn.send(i, sched)
        else:
            self.idle.append(conn)

    def dropped(self, conn: _Conn) -> None:
        self.all.discard(conn)
        if self.waiting and len(self.all) + self.opening < self.max_connections:
            i, sched = self.waiting.popleft()
            self.opening += 1
            assert self.loop is not None
            self.loop.create_task(self._open_and_send(i, sched))

    def protocol_error(self, conn: _Conn, what: str) -> None:
        if conn.transport is not None:
            conn.transport.abort()          # connection_lost() fails the request in flight


def run_load(loop: asyncio.AbstractEventLoop, name: str, label: str, port: int, request: Request, rate: int,
             rnd: int, warmup: float, duration: float, connections: int, timeout: float) -> LoadResult:
    """One open-loop run against 127.0.0.1:`port`, with the collector off inside the measured window."""
    gen = OpenLoop("127.0.0.1", port, request, rate=rate, warmup=warmup, duration=duration,
                   connections=connections, max_connections=1024, timeout=timeout)
    gc.collect()
    gc.disable()                        # no collector pauses inside the measured window
    try:
        return loop.run_until_complete(gen.run(LoadResult(name, rate, rnd)))
    except OSError as e:
        raise SystemExit(f"bench error: cannot open connections to {label} on port {port}: {e}") from None
    finally:
        gc.enable()


def http_request(port: int, body: bytes, token: str | None, session_id: str | None = None) -> bytes:
    """The raw HTTP/1.1 request (MCP 2025-11-25 style, no 2026-07-28 routing headers; a session id if given)."""
    lines = [f"POST {C.PATH} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
             "Accept: application/json, text/event-stream", f"MCP-Protocol-Version: {C.PROTOCOL}",
             "User-Agent: extauthz-bench/1", f"Content-Length: {len(body)}"]
    if token:
        lines.insert(2, f"Authorization: Bearer {token}")
    if session_id:
        lines.append(f"Mcp-Session-Id: {session_id}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
