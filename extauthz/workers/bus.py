"""The worker side of `serve --workers N`: what one worker learns, every worker knows.

Each worker is a full service process on the shared gRPC port (SO_REUSEPORT). Learned state that
decides requests (completed list snapshots, server info, holds and approvals, session bindings)
is published to the supervisor over a socketpair as JSON lines, the wire form of the change records
(extauthz.shared.changes), and relayed to every other worker, which applies them through each
store's `apply` (never re-published): the same records and the same apply as on Redis. Writes go
into the transport's buffer (no await, no I/O wait on the hot path). Every second the worker also
reports its Check counters, new decision records and what its inventory recorded since the last report (drained), so the
supervisor's admin port shows the whole service, and the session ids it used (the supervisor is the
authority for session owners without Redis: extauthz.workers.claims);
risk blocks and alerts included. Every 250 ms it reports the calls and sensitive uses it counted
(extauthz.risk.report), for global rate limits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

import orjson

from extauthz.app import App
from extauthz.risk.report import report_counts
from extauthz.shared.changes import apply_to, decode
from extauthz.workers.claims import MAX_TOUCHED, BusClaims
from extauthz.workers.query import answer

log = logging.getLogger("extauthz.workers")


class WorkerBus:
    def __init__(self, app: App, fd: int, index: int) -> None:
        self.app, self.fd, self.index = app, fd, index
        self._writer: asyncio.StreamWriter | None = None
        self._shipped = 0
        self._queries: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()
        # Without Redis, the supervisor confirms first claims (server.py installs it as App.shared)
        self.claims = BusClaims(self.publish)
        self._last_tick = time.monotonic()

    def publish(self, op: str, payload: dict[str, Any]) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(orjson.dumps({"op": op, **payload}) + b"\n")

    async def _answer(self, msg: dict[str, Any]) -> None:
        """A failed answer is no answer: the supervisor's page names this worker as missing."""
        try:
            line = await answer(self.app, self.index, msg)
        except Exception:  # noqa: BLE001 - a view must never stop the worker's bus
            log.exception("actor query failed")
            return
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(line)

    def apply(self, msg: dict[str, Any]) -> None:
        apply_change(self.app, msg)

    def stats(self) -> dict[str, Any]:
        self.app.record_pending()
        checks = self.app.metrics.checks
        new = self.app.decisions.emitted - self._shipped
        self._shipped = self.app.decisions.emitted
        recent = self.app.decisions.recent.last(min(new, 200)) if new else []
        since, self._last_tick = self._last_tick, time.monotonic()
        # the sessions used here since the last tick: the claim authority keeps its copy alive
        touched = self.app.sessions.touched_since(since, MAX_TOUCHED) if self.app.shared is self.claims else []
        return {"op": "stats", "worker": self.index, "pid": os.getpid(),
                "decisions": [[list(k), v] for k, v in checks.decisions.items()],
                "buckets": checks.bucket_counts, "sum": checks.total, "count": checks.count,
                "list_filter_failures": self.app.metrics.list_filter_failures.counts,
                "risk_blocks": self.app.metrics.risk_blocks.value, "risk_alerts": self.app.metrics.risk_alerts.value,
                "recent": recent, "ready": self.app.ready, "inventory": self.app.inventory.drain(),
                "touched": touched, "claims_denied": self.claims.claims_denied}

    async def run(self) -> None:
        sock = socket.socket(fileno=self.fd)
        reader, self._writer = await asyncio.open_unix_connection(sock=sock, limit=64 * 1024 * 1024)
        on_bus = self.app.shared is None or self.app.shared is self.claims   # else Redis carries them
        if self.app.shared is None:       # (BusClaims, installed by server.py, hooked the stores itself)
            self.app.specs.on_change = self.publish
            self.app.sessions.on_change = self.publish
            self.app.visibility.on_change = self.publish
            self.app.risk.on_change = self.publish
            self.app.links.on_change = self.publish
        ticker = asyncio.create_task(self._tick())
        reports = None
        if on_bus:                        # with Redis, RedisShared reports the counts
            reports = asyncio.create_task(report_counts(self.app.risk, self.publish))
        try:
            while line := await reader.readline():
                try:
                    msg = orjson.loads(line)
                    op = msg.get("op")
                    if op == "query":       # the supervisor's actor view asks
                        self._queries.add(t := asyncio.create_task(self._answer(msg)))
                        t.add_done_callback(self._queries.discard)
                        continue
                    if op == "claimed":     # the supervisor's answer to a claim of ours
                        self.claims.on_answer(msg)
                        continue
                    if op == "caught-up":   # the supervisor's whole view is applied: ready
                        self.claims.loaded.set()
                        continue
                    self.apply(msg)
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    log.error("bad bus message ignored: %s", e)
        finally:
            ticker.cancel()
            self.claims.lost()
            if reports is not None:
                reports.cancel()
            self.closed.set()     # the supervisor is gone: this worker stops too

    async def _tick(self) -> None:
        while True:
            self.publish("stats", self.stats())
            await asyncio.sleep(1.0)


def apply_change(app: App, msg: dict[str, Any]) -> None:
    """Apply a change another worker made (or the supervisor's catch-up on start), as its record
    through the owning store's `apply`; never re-published. Raises ValueError when it does not fit."""
    apply_to(app, decode(msg))
