"""`extauthz serve --workers N`: N worker processes share the gRPC port; this process relays
what they learn, restarts a worker that dies, and serves the admin port for the whole service.

Session owners (without Redis): this process is the claim authority (extauthz.workers.claims);
a worker asks it about a session id it holds no live binding for, and reports the ids it used.
How learning reaches every worker: a worker that completes a list snapshot, learns server info,
binds a session or approves a quarantined capability publishes it on its socketpair; the
supervisor applies it to its own view (for /v1/inventory and /v1/sessions) and relays it to every
other worker. A worker that (re)starts is first sent the supervisor's whole view. The policy is
one file that every process watches, so all reload the same edit within a poll interval.
Envoy keeps one HTTP/2 connection per Envoy worker thread to the extauthz cluster, and ext_authz
and ext_proc share it, so a client's list and its next call usually reach the same worker anyway;
the relay covers the rest within a millisecond or so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import orjson

from extauthz.app import App
from extauthz.mcp.kinds import KIND_NAMES as KINDS
from extauthz.shared.changes import (
    Approved,
    Change,
    InfoNoted,
    InventoryDelta,
    Listed,
    Quarantined,
    RateCounts,
    RiskScore,
    SessionBound,
    SessionEnded,
    SpecLearned,
)
from extauthz.workers.bus import apply_change
from extauthz.workers.claims import ClaimAuthority
from extauthz.workers.query import WorkerActors

log = logging.getLogger("extauthz.workers")
RELAYED = frozenset({"spec", "info", "approve", "quarantine", "session", "end", "visible", "risk", "link",
                     "expect", "inject", "rate"})


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    writer: asyncio.StreamWriter | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    ready: bool = False


class Supervisor:
    def __init__(self, app: App, n: int, worker_args: list[str], shared: Any = None) -> None:
        # With shared state (--redis) every worker is a replica of its own on Redis: the bus then
        # carries only stats, and this process follows Redis for its admin views.
        self.app, self.worker_args, self.shared = app, worker_args, shared
        self.workers = [Worker(i) for i in range(n)]
        self.stopping = False
        self.actors = WorkerActors(self)       # the actor view asks every worker
        self.authority = ClaimAuthority(app.sessions)   # without Redis: who owns each session id
        self._denied_before = 0         # claims denied by workers since replaced (the counter never drops)

    @property
    def ready(self) -> bool:
        return all(w.ready and w.proc is not None and w.proc.poll() is None for w in self.workers)

    def _catch_up(self) -> list[bytes]:
        """Everything a fresh worker must know, as bus messages."""
        return [orjson.dumps(m) + b"\n" for m in catch_up_messages(self.app)]

    async def _start(self, w: Worker) -> None:
        self._denied_before += int(w.stats.get("claims_denied", 0) or 0)
        w.stats = {}
        ours, theirs = socket.socketpair()
        cmd = [sys.executable, "-m", "extauthz.cli", "serve", *self.worker_args,
               "--admin-port", "0", "--worker-fd", str(theirs.fileno()), "--worker-index", str(w.index)]
        w.proc = subprocess.Popen(cmd, pass_fds=[theirs.fileno()])
        theirs.close()
        w.ready = False
        reader, w.writer = await asyncio.open_unix_connection(sock=ours, limit=64 * 1024 * 1024)
        if self.shared is None:
            for line in self._catch_up():
                w.writer.write(line)
            w.writer.write(b'{"op":"caught-up"}\n')     # the worker is ready (and claims) after this
        asyncio.create_task(self._read(w, reader))
        log.info("worker %d started (pid %d)", w.index, w.proc.pid)

    async def _read(self, w: Worker, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            try:
                msg = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            op = msg.get("op")
            if op == "stats":
                self._stats(w, msg)
            elif op == "answer":
                self.actors.on_answer(msg)
            elif op == "claim" and self.shared is None:
                self._claim(w, msg)
            elif op == "session" and self.shared is None:
                relay, correction = self.authority.offer(msg)
                if correction is not None:
                    self._send(w, correction)
                if relay:
                    self._relay(w, line)
            elif op in RELAYED and self.shared is None:
                try:
                    self._apply_locally(msg)
                except (KeyError, TypeError, ValueError) as e:    # never relay what we cannot read
                    log.error("bad bus message from worker %d ignored: %s", w.index, e)
                    continue
                self._relay(w, line)
        w.ready = False

    def _relay(self, source: Worker, line: bytes) -> None:
        for other in self.workers:
            if other is not source and other.writer is not None and not other.writer.is_closing():
                other.writer.write(line)

    def _send(self, w: Worker, msg: dict[str, Any]) -> None:
        if w.writer is not None and not w.writer.is_closing():
            w.writer.write(orjson.dumps(msg) + b"\n")

    def _claim(self, w: Worker, msg: dict[str, Any]) -> None:
        """A worker's first claim of a session id: answered from this registry (one message at a
        time, so one owner), a new binding relayed to every other worker."""
        reply, binding = self.authority.claim(msg)
        self._send(w, reply)
        if binding is not None:
            self._relay(w, orjson.dumps(binding) + b"\n")

    def bus_status(self) -> dict[str, Any]:
        """The workers' claims as shared state: connected while every worker's bus is open."""
        return {"backend": "workers-bus", "lagSeconds": 0.0, "writesDropped": 0,
                "connected": all(w.writer is not None and not w.writer.is_closing() for w in self.workers),
                "claimsDenied": self._denied_before + sum(int(w.stats.get("claims_denied", 0) or 0)
                                                          for w in self.workers)}

    def _relay_own(self, op: str, payload: dict[str, Any]) -> None:
        """A change made here (e.g. `/v1/approve` on the supervisor's admin port): to every worker."""
        line = orjson.dumps({"op": op, **payload}) + b"\n"
        for w in self.workers:
            if w.writer is not None and not w.writer.is_closing():
                w.writer.write(line)

    def _apply_locally(self, msg: dict[str, Any]) -> None:
        apply_change(self.app, msg)

    def _stats(self, w: Worker, msg: dict[str, Any]) -> None:
        w.stats, w.ready = msg, bool(msg.get("ready"))
        self.authority.keep_alive(msg.pop("touched", None))   # used there: alive here
        delta = msg.pop("inventory", None)                       # usage since the worker's last tick
        if delta:
            self.app.inventory.apply(InventoryDelta(delta))
        for rec in msg.get("recent", []):
            rec["worker"] = msg.get("worker")
            self.app.decisions.recent.append(rec)
        checks = self.app.metrics.checks
        decisions: dict[tuple[str, ...], int] = {}
        buckets = [0] * len(checks.bucket_counts)
        total = count = blocks = alerts = 0
        failures: dict[str, int] = {}
        for other in self.workers:
            st = other.stats
            blocks += int(st.get("risk_blocks", 0))
            alerts += int(st.get("risk_alerts", 0))
            for reason, n in (st.get("list_filter_failures") or {}).items():
                failures[reason] = failures.get(reason, 0) + n
            for labels, n in st.get("decisions", []):
                key = tuple(labels)
                decisions[key] = decisions.get(key, 0) + n
            for i, n in enumerate(st.get("buckets", [])[: len(buckets)]):
                buckets[i] += n
            total += st.get("sum", 0.0)
            count += st.get("count", 0)
        checks.decisions, checks.bucket_counts, checks.total, checks.count = decisions, buckets, total, count  # type: ignore[assignment]
        self.app.metrics.list_filter_failures.counts = failures
        # each worker counts the blocks it answered and the chains it completed (a relayed event
        # that completes a chain elsewhere is not counted there again): the sum counts each once
        self.app.metrics.risk_blocks.value, self.app.metrics.risk_alerts.value = blocks, alerts

    async def _watch_children(self) -> None:
        while not self.stopping:
            await asyncio.sleep(0.5)
            for w in self.workers:
                if w.proc is not None and w.proc.poll() is not None and not self.stopping:
                    log.error("worker %d exited with %s; restarting", w.index, w.proc.returncode)
                    await self._start(w)

    async def run(self, admin_host: str, admin_port: int, drain_seconds: float) -> int:
        self.app.ready_check = lambda: self.ready          # /readyz reflects every worker
        if self.shared is not None:
            self.app.use_shared(self.shared)                 # approvals made here go to Redis
            await self.shared.start()
        else:
            self.app.specs.on_change = self._relay_own       # an approval on this admin port reaches every worker
            self.app.metrics.watch_shared(self.bus_status)   # the claim authority's shared_* metrics
        for w in self.workers:
            await self._start(w)
        from extauthz.admin.actors_shared import with_shared_log
        from extauthz.admin.http import admin_server
        actors, _ = with_shared_log(self.app, self.actors, self.shared, write=False)   # every replica's decisions
        admin = admin_server(self.app, admin_host, admin_port, actors)
        admin_task = asyncio.create_task(admin.serve())
        watch_task = asyncio.create_task(self.app.holder.watch())
        children = asyncio.create_task(self._watch_children())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        self.stopping = True
        self.app.draining = True
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        deadline = loop.time() + drain_seconds + 5
        rc = 0
        for w in self.workers:
            while w.proc is not None and w.proc.poll() is None and loop.time() < deadline:
                await asyncio.sleep(0.05)
            if w.proc is not None and w.proc.poll() is None:
                w.proc.kill()
                rc = 1
        children.cancel()
        watch_task.cancel()
        admin.should_exit = True
        await asyncio.wait([admin_task], timeout=3)
        if self.shared is not None:
            await self.shared.close()
        log.info("all workers stopped")
        return rc


def catch_up_messages(app: App) -> list[dict[str, Any]]:
    """`catch_up(app)` in its wire form: what a restarted worker is sent."""
    return [c.encode() for c in catch_up(app)]


def catch_up(app: App) -> list[Change]:
    """What this process holds that another must know, as change records: approvals (with the digest
    approved) before the snapshots they apply to, then snapshots, holds, sessions, risk scores, and
    this minute's rate counts.
    A restarted worker is sent them; a Redis that came back empty is written them."""
    out: list[Change] = []
    for spec in app.specs.servers():
        for (kind, name), digest in spec.approved.items():
            out.append(Approved(spec.server, kind, name, digest))
    for spec in app.specs.servers():
        if spec.info:
            out.append(InfoNoted(spec.server, spec.info))
        if spec.pinned:
            continue
        for kind in KINDS:
            by_source: dict[str, list[Any]] = {}
            for key, e in spec.table(kind).items():
                by_source.setdefault(spec.sources.get((kind, key), "traffic"), []).append(e.raw)
            for source, items in by_source.items():
                out.append(SpecLearned(spec.server, kind, tuple(items), "accept", source, f"catch-up:{source}"))
        for (kind, name), why in spec.quarantined.items():
            out.append(Quarantined(spec.server, kind, name, why))
    for s in app.sessions.snapshot(limit=app.sessions.max_sessions):
        out.append(SessionBound(s.session_id, s.caller, s.server, s.user_session, s.client_id, s.protocol_version,
                                s.path))
    for sid, owner in app.sessions.ended_ids():
        out.append(SessionEnded(sid, owner or ""))
    for server, part, kind, names in app.visibility.snapshots():
        sid, caller = (part[2:], "") if part.startswith("s:") else ("", part[2:])
        out.append(Listed(server, sid, caller, kind, tuple(sorted(names))))
    for st in app.risk.callers(limit=app.risk.max_callers):
        score = app.risk.score(st.caller)
        if score > 0:
            out.append(RiskScore(st.caller, score))
    counts = app.risk.minute_counts()        # this minute's calls so far, for the global limits
    if counts["calls"] or counts["uses"]:
        out.append(RateCounts(counts["minute"], counts["calls"], counts["uses"], totals=True))
    return out


def worker_args(a: Any) -> list[str]:
    """The serve arguments every worker gets (the supervisor adds its own)."""
    out = ["--policy", a.policy, "--grpc-port", str(a.grpc_port), "--host", a.host,
           "--drain-seconds", str(a.drain_seconds), "--log-level", a.log_level, "--loop", a.loop]
    for flag, v in (("--tls-cert", a.tls_cert), ("--tls-key", a.tls_key), ("--tls-client-ca", a.tls_client_ca),
                    ("--redis", a.redis), ("--redis-prefix", a.redis_prefix),
                    ("--redis-password-file", a.redis_password_file), ("--redis-ca", a.redis_ca),
                    ("--redis-cert", a.redis_cert), ("--redis-key", a.redis_key)):
        if v:
            out += [flag, v]
    return out


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
