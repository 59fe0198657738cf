"""Processes of the through-Envoy benches: start/stop/CPU of each, readiness, the service's and Envoy's
counters, and waiting for a shared machine to go quiet before a run."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common as C


@dataclass
class Proc:
    name: str
    cmd: list[str]
    log_path: Path
    stdout_devnull: bool = False
    env: dict[str, str] = field(default_factory=dict)       # set on top of this process's environment
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(C.ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **self.env)
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
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Target:
    name: str
    label: str
    port: int
    proc: Proc | None            # the process that adds the latency (Envoy), for its CPU time
    admin_port: int | None = None  # Envoy's admin port
    authz: bool = False          # Envoy has ext_authz: its counters are read around every run
    service: Proc | None = None  # the extauthz behind it: its GC log is read around every run
    service_admin: int | None = None   # ... and its /metrics must account for every success


def post(port: int, body: bytes, token: str | None, session_id: str | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "MCP-Protocol-Version": C.PROTOCOL}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if session_id:
            headers["Mcp-Session-Id"] = session_id
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


def envoy_version(envoy_bin: str) -> str:
    try:
        out = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
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

