"""Latency through real Envoy: MCP tools/call at fixed request rates, without and with extauthz.

Starts, in the same run: bench/upstream_echo.py (a tiny HTTP/1.1 upstream answering a fixed
JSON-RPC result), `extauthz serve` (bench/policy.yaml + the pinned 1,000-tool spec, decision log to
/dev/null), bench/null_server.py (a do-nothing ext_authz server), and three real Envoys in front of
the same upstream:

* **A (no authz)**: a plain router: the same listener and HTTP connection manager settings as B,
  but no jwt_authn, ext_authz, ext_proc or header stripping (derived from B's config in this script).
* **N (do-nothing authz)**: B's config exactly (jwt_authn, ext_authz, ext_proc, routes, access
  log), except that its `extauthz` cluster points at null_server.py: grpc.aio + uvloop like the
  service, answering every Check with an empty OK, so Envoy forwards the request unchanged. N - A
  is the floor of the ext_authz hop itself (body buffering, gRPC to a Python server and back);
  B - N is what the service's own work adds on top. The two add up to B - A at every percentile.
* **B (extauthz)**: our full config, `extauthz.demo.envoy_config.render`, with the JWKS of a runtime
  `TokenIssuer`; every request carries the same RS256 JWT it minted (a support agent), MCP
  2025-11-25 style: no session, no 2026-07-28 routing headers. The call is a small allowed
  `billing_*`/`crm_*`/`orders_*` tools/call, checked against its schema and the `customer_ids` constraint, of a tool
  the inventory does not classify as sensitive (`--sensitive-call`: one it does; then the caller
  soon has a risk score and every call of theirs is also observed over ext_proc, up to 50 a second).

Before loading, the run checks that A, N and B answer from the upstream (and that N's ext_authz
really called the null server), that B answers 401 without a token and denies an `admin_*` call
(sent as a second caller, so the measured one keeps a risk score of 0): B really enforces. After
every B run, the service's /metrics must show no denials and at least as many allows as the
generator counted successes. The null server and Envoy N are only started when
N is in --targets.

Load is open-loop at a fixed rate (default 250, 500, 1000 req/s): requests are scheduled on a fixed
timeline (a Linux timerfd armed at each scheduled time: asyncio's own timers round to whole
milliseconds) over a pool of keep-alive HTTP/1.1 connections (more are opened when all are busy),
and latency is measured from the *scheduled* time to the last byte of the answer, so a stall
delays every request behind it in the numbers too (no coordinated omission). The generator's own
lateness (scheduled -> written) and CPU per request are printed, and a `direct` row (generator ->
upstream, no Envoy) shows its floor. Rounds interleave the targets (direct, A, N, B, then B, N, A,
direct, ...) at every rate. The added latency is B - A per percentile, split into the transport
floor N - A and the service's share B - N when N was measured.

Where the time goes: all Envoys write an access log with µs phase timings (%COMMON_DURATION%) and
N's and B's ext_authz emit their gRPC round-trip time (`emit_filter_state_stats`); the service is
started through a gc.callbacks hook that logs its gen1/gen2 collection pauses (`--no-gc-log`: plain
`python -m extauthz.cli serve`); per-process CPU (the service's and the null server's too) comes
from /proc.

Shared machines: before each run the bench waits (up to --max-wait) until processes outside it use
less than 10% of a core, and repeats a run during which they used more than 25% (--retries).
No CPU pinning by default (see --pin: on 2 cores, Envoy and the service must not share one; the
null server takes the service's place).

    python bench/through_envoy.py [--quick] [--rates 250,500,1000] [--rounds N] [--duration S]
                                  [--targets direct,A,N,B] [--pin none|auto|ROLE=CORE,...]
                                  [--service-args '--workers 2']
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import ctypes
import ctypes.util
import gc
import http.client
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

import common as C
from extauthz.demo.envoy_config import render
from extauthz.demo.tokens import TokenIssuer
from extauthz.detect.capability import classify_capability

MARKER = b"bench-echo"            # in every answer of bench/upstream_echo.py (and only there)

# --- the load generator --------------------------------------------------------------------------

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

    def __init__(self, gen: "OpenLoop") -> None:
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
        self.transport.write(self.gen.request)
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

    def __init__(self, host: str, port: int, request: bytes, *, rate: int, warmup: float, duration: float,
                 connections: int, max_connections: int, timeout: float) -> None:
        self.host, self.port, self.request = host, port, request
        self.rate, self.connections, self.max_connections, self.timeout = rate, connections, max_connections, timeout
        self.n_warm = int(round(warmup * rate))
        self.n_total = self.n_warm + int(round(duration * rate))
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
        except asyncio.TimeoutError:
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
                key = re.sub(r"\d{3,}", "N", error)[:200]
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


def run_load(loop: asyncio.AbstractEventLoop, target: "Target", request: bytes, rate: int, rnd: int, warmup: float,
             duration: float, connections: int, timeout: float) -> LoadResult:
    gen = OpenLoop("127.0.0.1", target.port, request, rate=rate, warmup=warmup, duration=duration,
                   connections=connections, max_connections=1024, timeout=timeout)
    gc.collect()
    gc.disable()                        # no collector pauses inside the measured window
    try:
        return loop.run_until_complete(gen.run(LoadResult(target.name, rate, rnd)))
    except OSError as e:
        raise SystemExit(f"bench error: cannot open connections to {target.label} on port {target.port}: {e}") from None
    finally:
        gc.enable()


# --- processes -----------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    cmd: list[str]
    log_path: Path
    stdout_devnull: bool = False
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(C.ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.log_path, "wb") as log:
            log.write(f"$ {' '.join(self.cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.cmd, cwd=C.ROOT, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL if self.stdout_devnull else log,
                                         stderr=log, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def fail(self, what: str) -> SystemExit:
        state = f"exited with {self.proc.returncode}" if self.proc and self.proc.poll() is not None else "running"
        return SystemExit(f"bench error: {self.name} {what} ({state}); command: {' '.join(self.cmd)}\n"
                          f"--- last lines of {self.log_path.name} ---\n{self.tail()}")

    def cpu(self) -> float:
        """CPU seconds of the process and everything in its process group (e.g. `--workers` children)."""
        if self.proc is None:
            return float("nan")
        total, found = 0, False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid:              # pgrp: start_new_session made it our pid
                total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
                found = True
        return total / os.sysconf("SC_CLK_TCK") if found else float("nan")

    def stop(self) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
            except ProcessLookupError:
                pass
        try:
            os.killpg(p.pid, signal.SIGKILL)          # anything the leader left behind
        except (ProcessLookupError, PermissionError):
            pass


def wait_until(what: str, proc: Proc, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise proc.fail(f"stopped before {what}")
        try:
            if check():
                return
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise proc.fail(f"not {what} within {timeout:.0f}s {last}")


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:  # noqa: S310 - loopback
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Target:
    name: str
    label: str
    port: int
    proc: Proc | None            # the process that adds the latency (Envoy), for its CPU time
    admin_port: int | None = None


# --- configs -------------------------------------------------------------------------------------

ACCESS_LOG_FORMAT = ("%RESPONSE_CODE% %COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)% "
                     "%COMMON_DURATION(DS_RX_END:US_TX_BEG:us)% %COMMON_DURATION(US_TX_BEG:US_RX_END:us)% "
                     "%FILTER_STATE(envoy.filters.http.ext_authz:FIELD:latency_us)%\n")


def _hcm(doc: dict[str, Any]) -> dict[str, Any]:
    for f in doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]:
        if f["name"] == "envoy.filters.network.http_connection_manager":
            return f["typed_config"]
    raise SystemExit("bench error: no http_connection_manager in the rendered Envoy config")


def _listen_on(doc: dict[str, Any], listen: int, admin: int) -> None:
    doc["admin"]["address"]["socket_address"]["port_value"] = admin
    doc["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listen


def _access_log(doc: dict[str, Any], path: Path) -> None:
    _hcm(doc)["access_log"] = [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(path),
            "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}}}}]


def envoy_configs(*, listen_a: int, listen_b: int, admin_a: int, admin_b: int, upstream_port: int, authz_port: int,
                  jwks_json: str, access_log_dir: Path | None, listen_n: int | None = None,
                  admin_n: int | None = None, null_port: int | None = None) -> tuple[str, str, str | None]:
    """(A: plain router, B: our full config, N: B pointed at the null server or None), all YAML.

    A is B minus everything extauthz adds; N is a copy of B (made after the access log and the
    ext_authz stats are set) with only its ports, its access log file and the `extauthz` cluster's
    endpoint changed, so N - A measures exactly the ext_authz hop B pays, minus the service's work."""
    b = yaml.safe_load(render(listen_port=listen_b, admin_port=admin_b, upstream_host="127.0.0.1",
                              upstream_port=upstream_port, authz_host="127.0.0.1", authz_port=authz_port,
                              jwks_json=jwks_json, header_comment=False))
    a = copy.deepcopy(b)
    _listen_on(a, listen_a, admin_a)
    a["static_resources"]["clusters"] = [c for c in a["static_resources"]["clusters"] if c["name"] != "extauthz"]
    hcm = _hcm(a)
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router"]
    for key in ("early_header_mutation_extensions", "local_reply_config"):
        hcm.pop(key, None)
    vh = hcm["route_config"]["virtual_hosts"][0]
    vh["routes"] = [{"name": "default", "match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "0s"}}]
    if access_log_dir is not None:
        for doc, name in ((a, "a"), (b, "b")):
            _access_log(doc, access_log_dir / f"access-{name}.log")
        for f in _hcm(b)["http_filters"]:
            if f["name"] == "envoy.filters.http.ext_authz":
                f["typed_config"]["emit_filter_state_stats"] = True     # -> ext_authz latency_us in the log
    n = None
    if null_port is not None:
        if listen_n is None or admin_n is None:
            raise ValueError("envoy N needs listen_n and admin_n")
        n = copy.deepcopy(b)
        _listen_on(n, listen_n, admin_n)
        if access_log_dir is not None:
            _access_log(n, access_log_dir / "access-n.log")
        cluster = next(c for c in n["static_resources"]["clusters"] if c["name"] == "extauthz")
        for group in cluster["load_assignment"]["endpoints"]:
            for ep in group["lb_endpoints"]:
                ep["endpoint"]["address"]["socket_address"].update(address="127.0.0.1", port_value=null_port)
    return (yaml.safe_dump(a, sort_keys=False), yaml.safe_dump(b, sort_keys=False),
            yaml.safe_dump(n, sort_keys=False) if n is not None else None)


def write_policy(tmp: Path, sensitive: bool = False) -> tuple[Path, str, dict[str, Any]]:
    """policy.yaml + pinned spec.json in `tmp`; returns (policy path, the tool to call, its arguments).

    The tool is a small `billing_*`, `crm_*` or `orders_*` one the support caller may call with a
    `customer_id` the constraint checks. By default it is one the inventory does not classify as
    sensitive: calling a sensitive tool is scored as extraction, so the caller soon has a risk
    score and every call of theirs is observed over ext_proc (up to 50 a second); with
    `sensitive`, that is what is measured instead."""
    tools = C.make_tools()
    (tmp / "spec.json").write_bytes(orjson.dumps({"tools": tools}))
    doc = yaml.safe_load(C.POLICY.read_text())
    doc["servers"][0]["specFile"] = "spec.json"
    policy = tmp / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    policy_text = C.POLICY.read_text()
    tool = next(t for prefix in ("billing_", "crm_", "orders_") for t in C.tools_by_shape(tools)["small"]
                if t["name"].startswith(prefix) and t["name"] not in policy_text
                and "customer_id" in t["inputSchema"]["required"]
                and bool(classify_capability("tools", t)) == sensitive)
    admin_tool = next(t for t in C.tools_by_shape(tools)["small"] if t["name"].startswith("admin_"))
    return policy, tool["name"], {"args": C.small_args(tool), "admin": admin_tool}


def http_request(port: int, body: bytes, token: str | None) -> bytes:
    """The raw HTTP/1.1 request (MCP 2025-11-25 style, no session, no 2026-07-28 routing headers)."""
    lines = [f"POST {C.PATH} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
             "Accept: application/json, text/event-stream", f"MCP-Protocol-Version: {C.PROTOCOL}",
             "User-Agent: extauthz-bench/1", f"Content-Length: {len(body)}"]
    if token:
        lines.insert(2, f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def post(port: int, body: bytes, token: str | None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "MCP-Protocol-Version": C.PROTOCOL}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request("POST", C.PATH, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def decisions(admin_port: int) -> dict[str, float]:
    """mcp_extauthz_decisions_total by decision label, and the check-duration histogram sum/count."""
    out = {"allow": 0.0, "deny": 0.0, "sum": 0.0, "count": 0.0}
    _, text = http_get(admin_port, "/metrics")
    for line in text.decode().splitlines():
        if line.startswith("mcp_extauthz_decisions_total{"):
            m = re.search(r'decision="(\w+)"', line)
            if m and m.group(1) in out:
                out[m.group(1)] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("mcp_extauthz_check_duration_seconds_sum"):
            out["sum"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("mcp_extauthz_check_duration_seconds_count"):
            out["count"] = float(line.rsplit(" ", 1)[1])
    return out


def envoy_counters(admin_port: int, names: tuple[str, ...]) -> dict[str, int]:
    _, text = http_get(admin_port, "/stats?usedonly&filter=" + "|".join(re.escape(n) for n in names))
    out = {n: 0 for n in names}
    for line in text.decode().splitlines():
        k, _, v = line.partition(": ")
        if k in out:
            try:
                out[k] = int(v)
            except ValueError:
                pass
    return out


EXT_AUTHZ = ("http.mcp.ext_authz.ok", "http.mcp.ext_authz.denied", "http.mcp.ext_authz.error",
             "http.mcp.ext_authz.failure_mode_allowed", "http.mcp.jwt_authn.allowed", "http.mcp.jwt_authn.denied")


# The service, started with a hook that times its gen1/gen2 collections (gen0 returns at once) and
# writes one line per collection to stderr (its log file). Otherwise exactly `python -m extauthz.cli`.
GC_HOOK = """
import gc, sys, time
_t = [0.0]
def _gc(phase, info, _pc=time.perf_counter, _w=sys.stderr.write):
    if info["generation"] == 0:
        return
    if phase == "start":
        _t[0] = _pc()
    else:
        _w("extauthz-bench-gc gen%d %.3f ms\\n" % (info["generation"], (_pc() - _t[0]) * 1e3))
gc.callbacks.append(_gc)
sys.argv[0] = "extauthz"
from extauthz.cli import main
sys.exit(main())
"""


def gc_pauses(log: Path, offset: int) -> tuple[dict[int, list[float]], int]:
    """{generation: [pause ms]} the service logged since `offset`, and the new offset."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return {}, offset
    out: dict[int, list[float]] = {}
    for m in re.finditer(rb"extauthz-bench-gc gen(\d) ([\d.]+) ms", data):
        out.setdefault(int(m.group(1)), []).append(float(m.group(2)))
    return out, offset + len(data)


# --- pinning -------------------------------------------------------------------------------------

ROLES = ("load", "upstream", "envoy", "service")


def layout(spec: str) -> dict[str, int | None]:
    """`--pin` to {role: core}: 'none', 'auto' (with >= 2 cores: load generator, upstream and service on
    the first core, both Envoys on the last), or role=core pairs, e.g. 'load=0,upstream=0,service=0,envoy=1'.

    Measured on 2 cores at 1,000/s: Envoy and the service on one core saturate it (B's p50 goes to
    tens of ms); the other splits measured the same as no pinning within the run-to-run noise."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if spec == "none" or not shutil.which("taskset") or len(cores) < 2:
        return {r: None for r in ROLES}
    if spec == "auto":
        first, last = cores[0], cores[-1]
        return {"load": first, "upstream": first, "service": first, "envoy": last}
    out: dict[str, int | None] = {r: None for r in ROLES}
    for part in spec.split(","):
        role, _, core = part.partition("=")
        if role.strip() not in out or not core.strip().isdigit():
            raise SystemExit(f"--pin: cannot read {part!r} (roles: {', '.join(ROLES)})")
        out[role.strip()] = int(core)
    return out


def pin_note(pins: dict[str, int | None]) -> str:
    if all(v is None for v in pins.values()):
        return "no CPU pinning"
    by_core: dict[int | None, list[str]] = {}
    for r, c in pins.items():
        by_core.setdefault(c, []).append(r)
    return "pinned: " + "; ".join(f"{'+'.join(rs)} on core {c}" if c is not None else f"{'+'.join(rs)} unpinned"
                                  for c, rs in sorted(by_core.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


def prefix(pins: dict[str, int | None], role: str) -> list[str]:
    c = pins[role]
    return [shutil.which("taskset") or "taskset", "-c", str(c)] if c is not None else []


# --- main ----------------------------------------------------------------------------------------


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s per rate and target (a smoke run)")
    ap.add_argument("--rates", default="250,500,1000", help="requests per second, comma-separated")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, quick 1)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per run (default 6, quick 2)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per run (default 1, quick 0.5)")
    ap.add_argument("--connections", type=int, default=16,
                    help="keep-alive connections opened before each run (more are opened if all are busy)")
    ap.add_argument("--envoy-concurrency", type=int, default=None,
                    help="Envoy worker threads (default: Envoy's own, one per core it may use)")
    ap.add_argument("--no-direct", action="store_true", help="skip the generator -> upstream row (no Envoy)")
    ap.add_argument("--no-access-log", action="store_true",
                    help="no Envoy access log (then no per-phase timings from Envoy)")
    ap.add_argument("--pin", default="none",
                    help="'none' (default), 'auto' (load generator, upstream and service on the first core, Envoys on "
                         "the last), or role=core pairs, e.g. load=0,upstream=0,service=0,envoy=1")
    ap.add_argument("--targets", default="direct,A,N,B",
                    help="which of direct (no Envoy), A (Envoy, no authz), N (B's config, do-nothing authz server), "
                         "B (Envoy + extauthz) to load; without N, the null server and Envoy N are not started")
    ap.add_argument("--link-call", action="store_true",
                    help="the upstream's results carry a resource_link: every B call is read on the learn route")
    ap.add_argument("--sensitive-call", action="store_true",
                    help="call a tool classified as sensitive: the caller gets a risk score, and every call of theirs "
                         "is then observed over ext_proc (up to 50/s); default: a tool that is not")
    ap.add_argument("--service-args", default="", help="extra arguments for `extauthz serve`, e.g. '--workers 2'")
    ap.add_argument("--no-gc-log", action="store_true",
                    help="start the service as plain `python -m extauthz.cli serve`, without the hook that logs "
                         "its gen1/gen2 garbage collections")
    ap.add_argument("--retries", type=int, default=2,
                    help=f"repeat a run during which other processes used more than {DISTURBED:.0%}% of a core "
                         "(default 2 times)")
    ap.add_argument("--max-wait", type=float, default=60.0,
                    help="before each run, wait up to this many seconds for other processes to go quiet")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    a = ap.parse_args(argv)
    rates = [int(r) for r in a.rates.split(",") if r.strip()]
    rounds = a.rounds or (1 if a.quick else 3)
    duration = a.duration or (2.0 if a.quick else 6.0)
    warmup = a.warmup if a.warmup is not None else (0.5 if a.quick else 1.0)
    envoy_bin = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
    if not os.path.exists(envoy_bin):
        raise SystemExit("envoy not found on PATH (the venv's bin/ should have it)")
    try:
        Timer().close()
    except (OSError, AttributeError) as e:
        raise SystemExit(f"this load generator needs Linux timerfd ({e})") from None
    pins = layout(a.pin)
    wanted = {x.strip() for x in a.targets.split(",") if x.strip()} - ({"direct"} if a.no_direct else set())
    if not wanted & {"direct", "A", "N", "B"}:
        raise SystemExit("--targets: none of direct, A, N, B")
    with_n = "N" in wanted            # the null server and Envoy N cost a start-up and CPU: only when loaded

    try:
        import uvloop
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        loop_name = "uvloop"
    except ImportError:
        loop, loop_name = asyncio.new_event_loop(), "asyncio"

    tmpdir = tempfile.mkdtemp(prefix="extauthz-bench-envoy-")
    tmp = Path(tmpdir)
    procs: list[Proc] = []
    previous = signal.signal(signal.SIGTERM, _interrupt)
    results: list[LoadResult] = []
    try:
        policy, tool, extra = write_policy(tmp, a.sensitive_call)
        issuer = TokenIssuer()
        token = issuer.mint("alice", groups=["support", "employees"], customer_ids=["c-100", "c-101"],
                            client_id="support-agent", sid="user-session-7f3a", ttl=24 * 3600)
        # The enforcement check below runs as another caller: a denied admin_* call is a probe on
        # its caller's risk timeline, and a caller with a risk score has every call observed over
        # ext_proc (up to 50 a second), which is not the traffic this bench means to measure.
        prober = issuer.mint("mallory", groups=["support"], customer_ids=["c-100"], client_id="support-agent",
                             sid="user-session-0b1c", ttl=24 * 3600)
        body = C.call_body(tool, extra["args"])

        up_port, grpc_port, svc_admin = C.free_port(), C.free_port(), C.free_port()
        la, lb, aa, ab = C.free_port(), C.free_port(), C.free_port(), C.free_port()
        ln, an, null_port = (C.free_port(), C.free_port(), C.free_port()) if with_n else (None, None, None)
        access_dir = None if a.no_access_log else tmp
        cfg_a, cfg_b, cfg_n = envoy_configs(listen_a=la, listen_b=lb, admin_a=aa, admin_b=ab, upstream_port=up_port,
                                            authz_port=grpc_port, jwks_json=issuer.jwks_json(),
                                            access_log_dir=access_dir, listen_n=ln, admin_n=an, null_port=null_port)
        (tmp / "envoy-a.yaml").write_text(cfg_a)
        (tmp / "envoy-b.yaml").write_text(cfg_b)
        if cfg_n is not None:
            (tmp / "envoy-n.yaml").write_text(cfg_n)
        envoy_args = ["--disable-hot-restart", "--log-level", "warn", "--file-flush-interval-msec", "200"]
        if a.envoy_concurrency:
            envoy_args += ["--concurrency", str(a.envoy_concurrency)]

        upstream = Proc("upstream", [*prefix(pins, "upstream"), sys.executable, str(C.HERE / "upstream_echo.py"),
                                     "--port", str(up_port), *(["--link"] if a.link_call else [])],
                        tmp / "upstream.log")
        launcher = ["-m", "extauthz.cli"] if a.no_gc_log else ["-c", GC_HOOK]
        service = Proc("extauthz", [*prefix(pins, "service"), sys.executable, *launcher, "serve",
                                    "--policy", str(policy), "--grpc-port", str(grpc_port), "--admin-port",
                                    str(svc_admin), "--host", "127.0.0.1", "--log-level", "warning",
                                    "--drain-seconds", "1", *shlex.split(a.service_args)],
                       tmp / "extauthz.log", stdout_devnull=True)      # decision log -> /dev/null
        env_a = Proc("envoy A", [*prefix(pins, "envoy"), envoy_bin, "-c", str(tmp / "envoy-a.yaml"), *envoy_args],
                     tmp / "envoy-a.log")
        env_b = Proc("envoy B", [*prefix(pins, "envoy"), envoy_bin, "-c", str(tmp / "envoy-b.yaml"), *envoy_args],
                     tmp / "envoy-b.log")
        procs = [upstream, service, env_a, env_b]
        envoys = [(env_a, aa), (env_b, ab)]
        null = env_n = None
        if with_n:
            # The do-nothing server takes the service's place (and core): N - A is then the transport alone.
            null = Proc("null authz", [*prefix(pins, "service"), sys.executable, str(C.HERE / "null_server.py"),
                                       "--port", str(null_port), "--host", "127.0.0.1"], tmp / "null-server.log")
            env_n = Proc("envoy N", [*prefix(pins, "envoy"), envoy_bin, "-c", str(tmp / "envoy-n.yaml"), *envoy_args],
                         tmp / "envoy-n.log")
            procs += [null, env_n]
            envoys.append((env_n, an))
        for p in procs:
            p.start()
        wait_until("listening", upstream, lambda: http_get(up_port, "/healthz")[0] == 200)
        wait_until("ready (/readyz)", service, lambda: http_get(svc_admin, "/readyz")[0] == 200)
        if null is not None:
            wait_until("listening", null, lambda: b"listening on" in null.log_path.read_bytes())
        for env, admin in envoys:
            wait_until("LIVE (/ready)", env, lambda admin=admin: http_get(admin, "/ready") == (200, b"LIVE\n"))

        # Correctness first: A passes, B allows the bench call, B really enforces.
        checks = [("A", la, token, 200, True), ("B", lb, token, 200, True), ("B without a token", lb, None, 401, False)]
        for what, port, tok, status, echoed in checks:
            st, hdrs, rbody = post(port, body, tok)
            if st != status or (MARKER in rbody) != echoed:
                raise SystemExit(f"bench setup error: {what}: HTTP {st} {hdrs.get('x-mcp-extauthz-reason', '')} "
                                 f"{rbody[:300]!r}; expected {status} {'from the upstream' if echoed else 'from extauthz'}"
                                 f"\n--- extauthz ---\n{service.tail()}\n--- envoy B ---\n{env_b.tail()}")
        admin_tool = extra["admin"]
        st, hdrs, rbody = post(lb, C.call_body(admin_tool["name"], C.small_args(admin_tool)), prober)
        if MARKER in rbody or hdrs.get("x-mcp-extauthz-reason") != "not_allowed":
            raise SystemExit(f"bench setup error: B let a denied call ({admin_tool['name']}) through: HTTP {st} "
                             f"{hdrs} {rbody[:300]!r}")
        if env_n is not None and null is not None and an is not None and ln is not None:
            # N passes the bench call, and really through the null server's Check (else N would be just A).
            n0 = envoy_counters(an, EXT_AUTHZ)["http.mcp.ext_authz.ok"]
            st, hdrs, rbody = post(ln, body, token)
            n1 = envoy_counters(an, EXT_AUTHZ)["http.mcp.ext_authz.ok"]
            if st != 200 or MARKER not in rbody or n1 != n0 + 1:
                raise SystemExit(f"bench setup error: N: HTTP {st} {rbody[:300]!r}, ext_authz ok {n0} -> {n1}; "
                                 f"expected 200 from the upstream after one OK Check from the null server"
                                 f"\n--- null server ---\n{null.tail()}\n--- envoy N ---\n{env_n.tail()}")

        direct = Target("direct", "direct (no Envoy)", up_port, None)
        ta = Target("A", "A Envoy, no authz", la, env_a, aa)
        tb = Target("B", "B Envoy + extauthz", lb, env_b, ab)
        tn = Target("N", "N Envoy + do-nothing authz", ln, env_n, an) if ln is not None else None
        targets = [t for t in (direct, ta, tn, tb) if t is not None and t.name in wanted]
        requests = {t.name: http_request(t.port, body, token) for t in targets}
        if pins["load"] is not None:
            os.sched_setaffinity(0, {pins["load"]})

        print(f"through Envoy (extauthz {C.revision()}, envoy {envoy_version(envoy_bin)}): tools/call {tool}"
              f"{' (sensitive: its caller is observed)' if a.sensitive_call else ''}"
              f"{' (returns a resource link: read on the learn route)' if a.link_call else ''} "
              f"({len(next(iter(requests.values())))} B request, {len(body)} B body), open-loop {loop_name} generator, "
              f"{a.connections} keep-alive connections; rates {', '.join(map(str, rates))}/s; {rounds} rounds x "
              f"{duration:g}s (+{warmup:g}s warm-up) per rate and target; {pin_note(pins)}; "
              f"Envoy {'--concurrency ' + str(a.envoy_concurrency) if a.envoy_concurrency else 'workers: one per core it may use'}"
              f"{'; extauthz serve ' + a.service_args if a.service_args else ''}"
              f"{', access log on (all Envoys)' if access_dir else ''}", flush=True)
        al_offsets = {t.name: 0 for t in targets}
        width = max([20, *(len(t.label) for t in targets)])      # the per-run lines line up
        repeated = 0
        gc_offset = 0
        for r in range(rounds):
            for rate in rates:
                order = targets if (r + rates.index(rate)) % 2 == 0 else targets[::-1]
                for t in order:
                    for attempt in range(a.retries + 1):
                        waited = wait_quiet(procs, a.max_wait)
                        _, gc_offset = gc_pauses(service.log_path, gc_offset)
                        res = one_run(loop, t, requests[t.name], rate, r, warmup, duration, a.connections, service,
                                      svc_admin, procs)
                        res.extra["waited"] = waited
                        res.extra["gc"], gc_offset = gc_pauses(service.log_path, gc_offset)
                        if res.extra["other_cpu"] <= DISTURBED or attempt == a.retries:
                            break
                        repeated += 1
                        print(f"  round {r + 1} {rate:5d}/s {t.label:<{width}} disturbed: other processes used "
                              f"{res.extra['other_cpu']:.0%} of a core; repeating", flush=True)
                    if access_dir is not None and t.proc is not None:
                        res.extra["phases"], al_offsets[t.name] = access_log(
                            tmp / f"access-{t.name.lower()}.log", al_offsets[t.name], res)
                    results.append(res)
                    s = sorted(res.lat_ns)
                    print(f"  round {r + 1} {rate:5d}/s {t.label:<{width}} p50 {C.percentile(s, 50) / 1e3:7.0f} µs  "
                          f"p99 {C.percentile(s, 99) / 1e3:7.0f} µs  ok {res.ok}  failed {res.failed}  "
                          f"new conns {res.new_connections}  other cpu {res.extra['other_cpu']:.0%}"
                          + (f"  service gen2 GC {len(g2)}x, longest {max(g2):.0f} ms"
                             if (g2 := res.extra["gc"].get(2)) else "")
                          + (f"  (waited {res.extra['waited']:.0f}s for quiet)" if res.extra["waited"] >= 1 else ""),
                          flush=True)
        stats = envoy_counters(ab, EXT_AUTHZ)
        stats_n = envoy_counters(an, EXT_AUTHZ) if an is not None else None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for p in reversed(procs):
            p.stop()
        signal.signal(signal.SIGTERM, previous)
        loop.close()
        if a.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    return report(results, rates, targets, stats, stats_n, repeated, a.no_gc_log)


def envoy_version(envoy_bin: str) -> str:
    try:
        out = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"/(\d+\.\d+\.\d+)/", out)
        return m.group(1) if m else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def system_cpu() -> tuple[float, float]:
    """(busy seconds of all CPUs, steal seconds) since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    tck = os.sysconf("SC_CLK_TCK")
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    steal = v[7] if len(v) > 7 else 0
    return (sum(v[:8]) - idle - steal) / tck, steal / tck


DISTURBED = 0.25          # other processes' CPU during a run, in cores, above which the run is repeated
QUIET = 0.10              # ... and below which a run may start


def wait_quiet(procs: list[Proc], max_wait: float) -> float:
    """Wait until processes other than ours use less than QUIET of a core (sampled over 0.3 s), at most
    `max_wait` seconds; returns the seconds waited. On a shared machine (CI, colleagues' tests) a
    benchmark that starts while something else is busy measures the other thing."""
    t0 = time.monotonic()
    while True:
        c0 = {p.name: p.cpu() for p in procs}
        s0, me0 = system_cpu()[0], time.process_time()
        time.sleep(0.3)
        ours = sum(p.cpu() - c0[p.name] for p in procs) + (time.process_time() - me0)
        other = (system_cpu()[0] - s0 - ours) / 0.3
        waited = time.monotonic() - t0
        if other < QUIET or waited >= max_wait:
            return waited
        time.sleep(0.7)


def one_run(loop: asyncio.AbstractEventLoop, t: Target, request: bytes, rate: int, rnd: int, warmup: float,
            duration: float, connections: int, service: Proc, svc_admin: int, procs: list[Proc]) -> LoadResult:
    before = decisions(svc_admin) if t.name == "B" else None
    eb = envoy_counters(t.admin_port, EXT_AUTHZ) if t.name in ("B", "N") and t.admin_port else None
    cpu0 = {p.name: p.cpu() for p in procs}
    sys0, me0 = system_cpu(), time.process_time()
    res = run_load(loop, t, request, rate, rnd, warmup, duration, connections, timeout=10.0)
    sys1, me1 = system_cpu(), time.process_time()
    cpu = {p.name: p.cpu() - cpu0[p.name] for p in procs}
    # CPU used by anything but this bench's processes (a noisy neighbour), and stolen by the hypervisor.
    ours = sum(cpu.values()) + (me1 - me0)
    res.extra["cpu"] = cpu
    res.extra["other_cpu"] = max(0.0, (sys1[0] - sys0[0]) - ours) / max(res.wall_s, 1e-9)
    res.extra["steal"] = (sys1[1] - sys0[1]) / max(res.wall_s, 1e-9)
    for p in procs:
        if not p.alive():
            raise p.fail("exited during a run")
    if before is not None:
        after = decisions(svc_admin)
        allowed, denied = after["allow"] - before["allow"], after["deny"] - before["deny"]
        res.extra["check_us"] = ((after["sum"] - before["sum"]) / max(after["count"] - before["count"], 1)) * 1e6
        if denied or allowed < res.ok:
            raise SystemExit(f"bench error: extauthz allowed {allowed:.0f} and denied {denied:.0f} Checks, but the "
                             f"load generator counted {res.ok} successes at {rate}/s")
    if eb is not None and t.admin_port:
        ea = envoy_counters(t.admin_port, EXT_AUTHZ)
        res.extra["ext_authz"] = {k: ea[k] - eb[k] for k in EXT_AUTHZ}
    if res.failed:
        errs = "; ".join(f"{n} x {e}" for e, n in sorted(res.errors.items(), key=lambda kv: -kv[1])[:5])
        raise SystemExit(f"bench error: {res.failed} of {res.scheduled} requests to {t.label} failed at {rate}/s: "
                         f"{errs}")
    return res


def access_log(path: Path, offset: int, res: LoadResult) -> tuple[dict[str, list[int]], int]:
    """Per-request Envoy timings (µs) of one run from the access log, warm-up lines dropped."""
    time.sleep(0.5)                        # Envoy flushes the file every 200 ms (--file-flush-interval-msec)
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return {}, offset
    lines = data.splitlines()
    n_warm = max(0, len(lines) - res.scheduled)
    out: dict[str, list[int]] = {"total": [], "before_upstream": [], "upstream": [], "ext_authz": []}
    for line in lines[n_warm:]:
        parts = line.split()
        if len(parts) < 5 or parts[0] != b"200":
            continue
        for key, v in zip(("total", "before_upstream", "upstream", "ext_authz"), parts[1:5]):
            if v.isdigit():
                out[key].append(int(v))
    return out, offset + len(data)


def report(results: list[LoadResult], rates: list[int], targets: list[Target], stats: dict[str, int],
           stats_n: dict[str, int] | None, repeated: int, no_gc_log: bool) -> int:
    def pct(values: list[int], q: float, scale: float = 1e3) -> float:
        return C.percentile(values, q) / scale

    rows = []
    pooled: dict[tuple[str, int], list[int]] = {}
    for rate in rates:
        for t in targets:
            rs = [x for x in results if x.target == t.name and x.rate == rate]
            lat = sorted(v for x in rs for v in x.lat_ns)
            lag = sorted(v for x in rs for v in x.lag_ns)
            pooled[(t.name, rate)] = lat
            n = sum(x.scheduled for x in rs)
            achieved = sum(x.ok for x in rs) / max(sum(x.scheduled for x in rs) / rate, 1e-9)
            gen_cpu = sum(x.cpu_s for x in rs) / max(sum(x.answered for x in rs), 1) * 1e6
            rows.append([f"{rate:,}/s", t.label, f"{achieved:,.0f}", f"{pct(lat, 50):,.0f}", f"{pct(lat, 90):,.0f}",
                         f"{pct(lat, 99):,.0f}", f"{pct(lat, 99.9):,.0f}", f"{lat[-1] / 1e3:,.0f}" if lat else "-",
                         sum(x.failed for x in rs), f"{pct(lag, 50):.0f}/{pct(lag, 99):.0f}", f"{gen_cpu:.0f}",
                         sum(x.new_connections for x in rs), f"{max(x.extra['other_cpu'] for x in rs):.0%}", n])
    print()
    print(C.table(["rate", "target", "ok/s", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "failed",
                   "gen lag p50/p99 µs", "gen cpu µs/req", "new conns", "other cpu", "samples"], rows))
    print("  latency: from the scheduled send time to the last byte of the answer, successes only (a failure "
          "stops the run);")
    print("  gen lag: scheduled time -> request written to the socket (the generator's own lateness, included "
          "in the latency);")
    print("  gen cpu: the load generator's CPU time per request; new conns: opened mid-run because all pooled "
          "ones were busy;")
    print(f"  other cpu: the most any run of the row saw processes outside this bench use (cores); runs above "
          f"{DISTURBED:.0%} were repeated: {repeated}.")

    names = {t.name for t in targets}
    if not {"A", "B"} <= names:
        parts = [f"{t.name} {rate}/s p50 {pct(pooled[(t.name, rate)], 50):.0f}/p99 {pct(pooled[(t.name, rate)], 99):.0f} µs"
                 for rate in rates for t in targets]
        print(f"SUMMARY through_envoy: {'; '.join(parts)} (no A and B in --targets: no added latency)")
        return 0

    def cpu_per_req(target: str, proc: str, rate: int) -> float:
        """`proc`'s CPU µs per request answered over `target`'s runs at `rate`."""
        xs = [x for x in results if x.target == target and x.rate == rate]
        return sum(x.extra["cpu"].get(proc, 0.0) for x in xs) / max(sum(x.answered for x in xs), 1) * 1e6

    def b_minus_p99_by_round(other: str, rate: int) -> list[float]:
        """B's p99 minus `other`'s in the same round, for each round at `rate`."""
        out = []
        for x in results:
            if x.target == "B" and x.rate == rate:
                y = next(y for y in results if y.target == other and y.rate == rate and y.round == x.round)
                out.append(pct(sorted(x.lat_ns), 99) - pct(sorted(y.lat_ns), 99))
        return out

    with_n = "N" in names
    # Added latency: B - A per percentile (pooled over rounds), and per round for the spread.
    rows = []
    added: dict[int, tuple[float, float, float]] = {}
    for rate in rates:
        la, lb = pooled[("A", rate)], pooled[("B", rate)]
        d = tuple(pct(lb, q) - pct(la, q) for q in (50, 90, 99))
        added[rate] = d  # type: ignore[assignment]
        per_round = b_minus_p99_by_round("A", rate)
        bs = [x for x in results if x.target == "B" and x.rate == rate]
        check_us = statistics.median(x.extra.get("check_us", float("nan")) for x in bs)
        svc_cpu, env_b_cpu = cpu_per_req("B", "extauthz", rate), cpu_per_req("B", "envoy B", rate)
        env_a_cpu = cpu_per_req("A", "envoy A", rate)
        gen2 = [ms for x in bs for ms in x.extra.get("gc", {}).get(2, [])]
        gen1 = [ms for x in bs for ms in x.extra.get("gc", {}).get(1, [])]
        gcs = (f"{len(gen2)} / {max(gen2):.0f}" if gen2 else "0 / -") + (f"  ({max(gen1):.1f})" if gen1 else "")
        if not gen1 and not gen2:
            gcs = "none logged"       # e.g. --workers: the hook runs in the supervisor, not in the workers
        row = [f"{rate:,}/s", f"+{d[0]:,.0f}", f"+{d[1]:,.0f}", f"+{d[2]:,.0f}",
               f"{min(per_round):,.0f} .. {max(per_round):,.0f}", f"{check_us:.0f}", f"{svc_cpu:.0f}",
               f"{env_a_cpu:.0f} / {env_b_cpu:.0f}", gcs if not no_gc_log else "-"]
        if with_n:          # the null server's CPU next to the service's; Envoy N's between A's and B's
            row[7:8] = [f"{cpu_per_req('N', 'null authz', rate):.0f}",
                        f"{env_a_cpu:.0f} / {cpu_per_req('N', 'envoy N', rate):.0f} / {env_b_cpu:.0f}"]
        rows.append(row)
    print()
    print(C.table(["rate", "added p50 µs", "added p90 µs", "added p99 µs", "added p99 per round",
                   "decide µs (mean)", "extauthz cpu µs/req",
                   *(["null authz cpu µs/req", "envoy cpu µs/req A / N / B"] if with_n else
                     ["envoy cpu µs/req A / B"]),
                   "service gen2 GCs / max ms (gen1 max)"], rows))
    print("  added = B minus A at the same percentile (pooled over rounds); decide µs: App.check time from the "
          "service's")
    print("  histogram sum/count; cpu µs/req: process CPU time (all threads) over the run / requests answered;")
    print("  service GCs: full (gen2) collections in the service during B's runs at that rate, and the longest pause:")
    print("  every Check waits while one runs, so a pause of P ms at R req/s delays about P*R/1000 requests.")

    # The split: N - A (the ext_authz hop with nothing behind it) + B - N (the service's work) = B - A.
    split: dict[int, tuple[tuple[float, ...], tuple[float, ...]]] = {}
    if with_n:
        rows = []
        for rate in rates:
            la, ln, lb = pooled[("A", rate)], pooled[("N", rate)], pooled[("B", rate)]
            floor = tuple(pct(ln, q) - pct(la, q) for q in (50, 90, 99))
            own = tuple(pct(lb, q) - pct(ln, q) for q in (50, 90, 99))
            split[rate] = (floor, own)
            per_round = b_minus_p99_by_round("N", rate)
            rows.append([f"{rate:,}/s", " / ".join(f"{v:+,.0f}" for v in floor), " / ".join(f"{v:+,.0f}" for v in own),
                         f"{min(per_round):,.0f} .. {max(per_round):,.0f}"])
        print()
        print(C.table(["rate", "floor N-A p50/p90/p99 µs", "service B-N p50/p90/p99 µs", "B-N p99 per round"], rows))
        print("  floor = N minus A: jwt_authn, body buffering and the gRPC Check to a do-nothing server (grpc.aio +")
        print("  uvloop, empty OK); service = B minus N: what extauthz's own work adds. Same percentile, pooled over")
        print("  rounds, so floor + service = added at each percentile.")

    phases_rows = []
    for rate in rates:
        for t in targets:
            if t.proc is None:
                continue
            ph: dict[str, list[int]] = {}
            for x in results:
                if x.target == t.name and x.rate == rate:
                    for k, v in x.extra.get("phases", {}).items():
                        ph.setdefault(k, []).extend(v)
            if not ph or not ph.get("total"):
                continue
            cells = [f"{rate:,}/s", t.label]
            for k in ("total", "before_upstream", "upstream", "ext_authz"):
                # Without ext_authz buffering the body, A starts the upstream request before the downstream
                # one has ended, so "before upstream" only means something for N and B.
                s = sorted(ph.get(k, [])) if (k == "total" or k == "upstream" or t.name in ("B", "N")) else []
                cells.append(f"{C.percentile(s, 50):,.0f} / {C.percentile(s, 99):,.0f}" if s else "-")
            phases_rows.append(cells)
    if phases_rows:
        print()
        print(C.table(["rate", "target", "in Envoy p50/p99 µs", "before upstream", "upstream (rx->tx end)",
                       "ext_authz call"], phases_rows))
        print("  From Envoy's access log (µs, its own clocks): in Envoy = first byte in -> last byte out; before "
              "upstream =")
        print("  request received -> first byte to the upstream (jwt_authn + ext_authz + routing); upstream = "
              "first byte to the")
        print("  upstream -> last byte back; ext_authz call = the gRPC Check round trip as ext_authz timed it.")
    print(f"  Envoy B over the whole run: ext_authz ok {stats.get('http.mcp.ext_authz.ok', 0):,}, denied "
          f"{stats.get('http.mcp.ext_authz.denied', 0):,}, error {stats.get('http.mcp.ext_authz.error', 0):,}; "
          f"jwt_authn allowed {stats.get('http.mcp.jwt_authn.allowed', 0):,}, denied "
          f"{stats.get('http.mcp.jwt_authn.denied', 0):,} (the setup checks account for the denials)")
    if stats_n is not None:
        print(f"  Envoy N over the whole run: ext_authz ok {stats_n.get('http.mcp.ext_authz.ok', 0):,}, denied "
              f"{stats_n.get('http.mcp.ext_authz.denied', 0):,}, error {stats_n.get('http.mcp.ext_authz.error', 0):,}")

    failed = sum(x.failed for x in results)
    parts = [f"{rate}/s +{added[rate][0]:.0f}/+{added[rate][2]:.0f} µs" for rate in rates]
    tail = ""
    if split:
        tail = ("; transport floor N-A p50/p99 "
                + ", ".join(f"{rate}/s {f[0]:+.0f}/{f[2]:+.0f} µs" for rate, (f, _) in split.items())
                + "; service B-N p50/p99 "
                + ", ".join(f"{rate}/s {o[0]:+.0f}/{o[2]:+.0f} µs" for rate, (_, o) in split.items()))
    print(f"SUMMARY through_envoy: added latency B-A p50/p99 {'; '.join(parts)}; failed requests {failed} "
          f"(reference: added p99 <= 2,000 µs at 1,000/s){tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
