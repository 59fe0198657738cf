"""Check throughput of the real service against a do-nothing ext_authz server, same load, same run.

Starts `python -m extauthz.cli serve` (bench/policy.yaml + a pinned 1,000-tool spec) and
bench/null_server.py (returns an empty OK CheckResponse) as subprocesses, then loads each with the
same serialized CheckRequest (a small allowed tools/call, as Envoy 1.40 would send it) using h2load
(gRPC framed in a data file), or a multi-process grpc.aio client when h2load is missing.
The two servers alternate in interleaved rounds (A B, then B A, ...) so slow drifts and noisy
neighbours hit both alike. By default each server is pinned to core 1 and the load generator to
core 0 (taskset), so a server gets exactly one core, as with a 1-CPU container limit.

With `--redis` a fourth server joins the same rounds: `serve --redis URL` against a real
redis-server started here (extauthz.shared.testing.RedisProcess), so the Check/s with shared state
sit beside the in-memory service and the do-nothing floor. Every Check carries the same session id:
after the first one claims it, each is a session the replica already holds (the hot path).

    python bench/check_throughput.py [--quick] [--rounds N] [--duration S] [--client auto|h2load|python] [--redis]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common as C
import orjson

METHOD = "/envoy.service.auth.v3.Authorization/Check"


# --- servers -------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc; nan where unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


@dataclass
class Server:
    name: str
    cmd: list[str]
    port: int
    admin_port: int | None
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONPATH=str(C.ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        # stdout (the decision log, one JSON line per Check) goes to /dev/null; stderr to a file.
        self.proc = subprocess.Popen(self.cmd, cwd=C.ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True)

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, payload: bytes, timeout: float = 90.0) -> Any:
        """Until a Check answers; returns the decoded CheckResponse."""
        import grpc
        from envoy.service.auth.v3 import external_auth_pb2

        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.proc.returncode} before serving:\n"
                                 f"{self.log_tail()}")
            try:
                with grpc.insecure_channel(self.target) as ch:
                    raw = ch.unary_unary(METHOD)(payload, timeout=5)
                return external_auth_pb2.CheckResponse.FromString(raw)
            except grpc.RpcError as e:
                last = f"{e.code()}: {e.details()}"
                time.sleep(0.2)
        raise SystemExit(f"{self.name} did not answer Check within {timeout:.0f}s ({last}):\n{self.log_tail()}")

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid) if self.proc else float("nan")

    def stop(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            except ProcessLookupError:
                pass
        if self._log:
            self._log.close()
            self._log = None


def decisions(admin_port: int) -> dict[str, float]:
    """mcp_extauthz_decisions_total summed by decision label (allow/deny), from /metrics."""
    out = {"allow": 0.0, "deny": 0.0}
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith("mcp_extauthz_decisions_total{"):
            m = re.search(r'decision="(\w+)"', line)
            if m and m.group(1) in out:
                out[m.group(1)] += float(line.rsplit(" ", 1)[1])
    return out


# --- load ----------------------------------------------------------------------------------------


@dataclass
class Run:
    server: str
    mode: str
    rps: float
    ok: int
    failed: int
    lat_us: list[int]
    cpu_us_per_check: float


@dataclass
class Mode:
    label: str
    clients: int        # h2load -c (connections) / python: processes
    streams: int        # h2load -m (concurrent streams per connection) / python: coroutines per process


def h2load_run(h2load: str, pin: list[str], target: str, datafile: Path, mode: Mode, warmup: float,
               duration: float, logfile: Path) -> tuple[float, int, int, list[int]]:
    cmd = [*pin, h2load, "-D", f"{int(duration * 1000)}ms", f"--warm-up-time={int(warmup * 1000)}ms", "-c", str(mode.clients),
           "-m", str(mode.streams), "-t", "1", "-d", str(datafile),
           "-H", "content-type: application/grpc", "-H", "te: trailers", "-H", "grpc-accept-encoding: identity",
           "--log-file", str(logfile), f"http://{target}{METHOD}"]
    logfile.unlink(missing_ok=True)           # h2load appends to an existing log file
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=warmup + duration + 60)
    if p.returncode != 0:
        raise SystemExit(f"h2load failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", p.stdout)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", p.stdout)
    if not m or not r:
        raise SystemExit(f"cannot read h2load output:\n{p.stdout}")
    lat = []
    with open(logfile) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1] == "200":
                lat.append(int(parts[2]))
    return float(m.group(1)), int(r.group(4)), int(r.group(5)), lat


def python_run(pin: list[str], target: str, payload_file: Path, mode: Mode, warmup: float,
               duration: float) -> tuple[float, int, int, list[int]]:
    procs = [subprocess.Popen([*pin, sys.executable, str(C.HERE / "pyload.py"), "--target", target,
                               "--payload", str(payload_file), "--streams", str(mode.streams),
                               "--warmup", f"{warmup:g}", "--duration", f"{duration:g}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=C.ROOT)
             for _ in range(mode.clients)]
    ok = failed = 0
    lat: list[int] = []
    for p in procs:
        out, err = p.communicate(timeout=warmup + duration + 60)
        if p.returncode != 0:
            raise SystemExit(f"python load client failed:\n{err.decode(errors='replace')}")
        res = orjson.loads(out.splitlines()[-1])
        ok += res["ok"]
        failed += res["failed"]
        lat += res["lat_us"]
    return ok / duration, ok, failed, lat


# --- main ----------------------------------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    """gRPC length-prefixed message: 1 byte compressed-flag, 4 bytes big-endian length."""
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def write_inputs(tmp: Path) -> tuple[Path, bytes, str]:
    """policy.yaml + pinned spec.json in `tmp`; returns (policy path, CheckRequest bytes, tool)."""
    policy, tools = C.write_pinned_policy(tmp)
    policy_text = C.POLICY.read_text()
    tool = next(t for t in C.tools_by_shape(tools)["small"]
                if t["name"].startswith("billing_") and t["name"] not in policy_text)
    body = C.call_body(tool["name"], C.small_args(tool))
    return policy, C.check_request(body).SerializeToString(), tool["name"]


def pinning(enabled: bool) -> tuple[list[str], list[str], str]:
    """(prefix for servers, prefix for the load generator, description)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    taskset = shutil.which("taskset")
    if not enabled:
        return [], [], "no CPU pinning (--no-pin)"
    if not taskset or len(cores) < 2:
        return [], [], f"no CPU pinning ({'taskset missing' if not taskset else 'fewer than 2 cores'})"
    srv, load = cores[-1], cores[0]
    return ([taskset, "-c", str(srv)], [taskset, "-c", str(load)],
            f"each server pinned to core {srv} (only one of them is loaded at a time), "
            f"load generator pinned to core {load}")


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds of 2 s per server and mode")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per mode (default 4, quick 2)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per run (default 5, quick 2)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per run (default 1, quick 0.5)")
    ap.add_argument("--client", choices=("auto", "h2load", "python"), default="auto")
    ap.add_argument("--no-pin", action="store_true", help="don't pin processes to cores")
    ap.add_argument("--concurrency", default="2x16",
                    help="CONNECTIONSxSTREAMS of the loaded mode (default 2x16: 32 Checks in flight)")
    ap.add_argument("--redis", action="store_true",
                    help="also run `serve --redis` against a local redis-server (started here), in the same rounds")
    a = ap.parse_args(argv)
    rounds = a.rounds or (2 if a.quick else 4)
    duration = a.duration or (2.0 if a.quick else 5.0)
    warmup = a.warmup if a.warmup is not None else (0.5 if a.quick else 1.0)

    h2load = shutil.which("h2load")
    if a.client == "h2load" and not h2load:
        raise SystemExit("h2load not found: apt-get install -y nghttp2-client (or use --client python)")
    use_h2load = h2load is not None and a.client != "python"
    if not use_h2load and a.client == "auto":
        print("NOTE: h2load not found (Debian: apt-get install -y nghttp2-client); falling back to the Python "
              "grpc.aio client, which may itself be the bottleneck against the do-nothing server.", flush=True)
    srv_pin, load_pin, pin_note = pinning(not a.no_pin)
    conns, streams = (int(x) for x in a.concurrency.lower().split("x"))
    modes = [Mode(f"load {conns}x{streams}", conns, streams), Mode("serial 1x1", 1, 1)]

    with tempfile.TemporaryDirectory(prefix="extauthz-bench-") as tmpdir:
        tmp = Path(tmpdir)
        policy, payload, tool = write_inputs(tmp)
        datafile = tmp / "check.grpc"
        datafile.write_bytes(frame(payload))
        payload_file = tmp / "check.pb"
        payload_file.write_bytes(payload)

        gport, aport, nport = C.free_port(), C.free_port(), C.free_port()
        ours = Server("extauthz", [*srv_pin, sys.executable, "-m", "extauthz.cli", "serve", "--policy", str(policy),
                                   "--grpc-port", str(gport), "--admin-port", str(aport), "--host", "127.0.0.1",
                                   "--log-level", "warning"],
                      gport, aport, tmp / "extauthz.log")
        null = Server("do-nothing", [*srv_pin, sys.executable, str(C.HERE / "null_server.py"), "--port", str(nport)],
                      nport, None, tmp / "null.log")
        tport = C.free_port()
        null_threads = Server("do-nothing/threads", [*srv_pin, sys.executable, str(C.HERE / "null_server.py"),
                                                     "--port", str(tport), "--transport", "threads"],
                              tport, None, tmp / "null-threads.log")
        servers = [ours, null, null_threads]
        redis_proc = None
        if a.redis:
            from extauthz.shared.testing import RedisProcess
            redis_proc = RedisProcess().start()
            rg, ra = C.free_port(), C.free_port()
            ours_redis = Server("extauthz+redis", [*srv_pin, sys.executable, "-m", "extauthz.cli", "serve",
                                                   "--policy", str(policy), "--grpc-port", str(rg), "--admin-port",
                                                   str(ra), "--host", "127.0.0.1", "--log-level", "warning",
                                                   "--redis", redis_proc.url],
                                rg, ra, tmp / "extauthz-redis.log")
            servers = [ours_redis, *servers]      # servers[0] is compared with every other one
        previous = signal.signal(signal.SIGTERM, _interrupt)
        runs: list[Run] = []
        try:
            for s in servers:
                s.start()
            for s in servers:
                if s.admin_port is None:
                    continue
                resp = s.wait_ready(payload)
                if resp.status.code != 0 or not resp.HasField("ok_response"):
                    reason = [h.header.value for h in resp.denied_response.headers
                              if h.header.key == "x-mcp-extauthz-reason"]
                    raise SystemExit(f"bench setup error: {s.name} denied the bench request ({reason}); "
                                     f"the comparison needs an allowed tools/call")
            null.wait_ready(payload)
            null_threads.wait_ready(payload)

            print(f"check throughput (extauthz {C.revision()}): "
                  f"{'h2load' if use_h2load else 'python grpc.aio client'}, "
                  f"CheckRequest {len(payload)} B (tools/call {tool}), {rounds} rounds x "
                  f"{duration:g}s (+{warmup:g}s warm-up) per server and mode; {pin_note}", flush=True)
            for r in range(rounds):
                order = servers if r % 2 == 0 else servers[::-1]
                for mode in modes:
                    for s in order:
                        runs.append(one_run(s, mode, use_h2load, h2load, load_pin, datafile, payload_file,
                                            warmup, duration, tmp))
                        x = runs[-1]
                        print(f"  round {r + 1} {mode.label:<12} {s.name:<10} {x.rps:9,.0f} Check/s  "
                              f"p50 {C.percentile(sorted(x.lat_us), 50):7.0f} µs  "
                              f"cpu {x.cpu_us_per_check:6.1f} µs/Check", flush=True)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            for s in servers:
                s.stop()
            if redis_proc is not None:
                redis_proc.close()
            signal.signal(signal.SIGTERM, previous)

    report(runs, modes, servers)
    return 0


def one_run(s: Server, mode: Mode, use_h2load: bool, h2load: str | None, load_pin: list[str], datafile: Path,
            payload_file: Path, warmup: float, duration: float, tmp: Path) -> Run:
    before = decisions(s.admin_port) if s.admin_port else None
    cpu: dict[str, float] = {}

    def sample() -> None:                 # server CPU over the measured window only
        time.sleep(warmup)
        cpu["t0"] = s.cpu()
        time.sleep(duration)
        cpu["t1"] = s.cpu()

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    if use_h2load:
        assert h2load is not None
        rps, ok, failed, lat = h2load_run(h2load, load_pin, s.target, datafile, mode, warmup, duration,
                                          tmp / "h2load.log")
    else:
        rps, ok, failed, lat = python_run(load_pin, s.target, payload_file, mode, warmup, duration)
    t.join()
    if s.proc is not None and s.proc.poll() is not None:
        raise SystemExit(f"bench error: {s.name} exited ({s.proc.returncode}) during the run:\n{s.log_tail()}")
    if before is not None:
        after = decisions(s.admin_port)
        denied = after["deny"] - before["deny"]
        allowed = after["allow"] - before["allow"]
        if denied or allowed < ok:      # h2load sees HTTP 200 even for a gRPC error: check the service
            raise SystemExit(f"bench error: {s.name} allowed {allowed:.0f} and denied {denied:.0f} Checks, "
                             f"but the load generator counted {ok} successes")
    if failed:
        raise SystemExit(f"bench error: {failed} failed requests against {s.name}")
    cpu_us = (cpu.get("t1", float("nan")) - cpu.get("t0", float("nan"))) * 1e6 / max(rps * duration, 1)
    return Run(s.name, mode.label, rps, ok, failed, lat, cpu_us)


def report(runs: list[Run], modes: list[Mode], servers: list[Server]) -> None:
    """servers[0] is ours; every other one is a floor it is compared with, round by round."""
    rows = []
    ratios: dict[tuple[str, str], tuple[float, float, float, float]] = {}
    for mode in modes:
        stats = {}
        for s in servers:
            rs = [x for x in runs if x.mode == mode.label and x.server == s.name]
            lat = sorted(v for x in rs for v in x.lat_us)
            rps = [x.rps for x in rs]
            cpu = statistics.median(x.cpu_us_per_check for x in rs)
            stats[s.name] = (statistics.median(rps), C.percentile(lat, 50), C.percentile(lat, 99), cpu)
            rows.append([mode.label, s.name, f"{statistics.median(rps):,.0f}", f"{min(rps):,.0f}-{max(rps):,.0f}",
                         f"{C.percentile(lat, 50):,.0f}", f"{C.percentile(lat, 99):,.0f}", f"{cpu:.1f}", len(lat)])
        # Paired ratio: each round's ours/floor, then the median (cancels slow drifts).
        ours = [x.rps for x in runs if x.mode == mode.label and x.server == servers[0].name]
        o = stats[servers[0].name]
        for floor in servers[1:]:
            base = [x.rps for x in runs if x.mode == mode.label and x.server == floor.name]
            paired = statistics.median(a / b for a, b in zip(ours, base))
            b = stats[floor.name]
            ratios[(mode.label, floor.name)] = (paired, o[1] / b[1], o[2] / b[2], o[3] / b[3] if b[3] else float("nan"))
    print()
    print(C.table(["mode", "server", "Check/s", "range", "p50 µs", "p99 µs", "cpu µs/Check", "samples"], rows))
    print("  Check/s: median over rounds; range: slowest-fastest round; p50/p99: client-side latency over all")
    print("  measured requests; cpu µs/Check: server process CPU time (all threads) / Checks in the window.")
    print("  do-nothing: grpc.aio + uvloop, the runtime extauthz serve uses and the floor issue 5 names;")
    print("  do-nothing/threads: the sync grpc.server, for reference (bench/README.md, 'Why grpc.aio').")
    for (label, floor), (paired, p50, p99, cpu) in ratios.items():
        print(f"  ratio ours/{floor} [{label}]: Check/s {paired:.2f} (paired by round), p50 latency x{p50:.2f}, "
              f"p99 x{p99:.2f}, cpu/Check x{cpu:.2f}")
    load, serial = modes[0].label, modes[1].label
    med = {s.name: statistics.median(x.rps for x in runs if x.mode == load and x.server == s.name) for s in servers}
    a, t = "do-nothing", "do-nothing/threads"
    if servers[0].name == "extauthz+redis":
        print(f"SUMMARY check_throughput --redis: extauthz+redis {med[servers[0].name]:,.0f} Check/s [{load}] vs "
              f"extauthz in memory {med['extauthz']:,.0f} = ratio {ratios[(load, 'extauthz')][0]:.2f} (paired), "
              f"cpu/Check x{ratios[(load, 'extauthz')][3]:.2f}; serial p50 x{ratios[(serial, 'extauthz')][1]:.2f}, "
              f"p99 x{ratios[(serial, 'extauthz')][2]:.2f}")
    print(f"SUMMARY check_throughput: {servers[0].name} {med[servers[0].name]:,.0f} Check/s [{load}] vs do-nothing "
          f"grpc.aio {med[a]:,.0f} = ratio {ratios[(load, a)][0]:.2f} (sync grpc.server floor {med[t]:,.0f}: "
          f"{ratios[(load, t)][0]:.2f}); serial p50 {ratios[(serial, a)][1]:.2f}x the do-nothing latency")


if __name__ == "__main__":
    sys.exit(main())
