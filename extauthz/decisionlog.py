"""One JSON line per Check, allow or deny (DESIGN.md "Decisions"), plus a ring of recent ones
for the admin API. Argument values only when `audit.logArguments` is on, and then redacted."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any

import orjson

from extauthz.core.decision import Decision

_SECRET_WORDS = ("password", "passwd", "secret", "token", "authorization", "api_key", "apikey",
                 "cookie", "credential", "private_key", "ssn", "card")


def redact(value: Any, depth: int = 0) -> Any:
    """Replace values under secret-looking keys; cap size so a log line stays a log line."""
    if depth > 8:
        return "[…]"
    if isinstance(value, dict):
        return {k: ("[redacted]" if any(w in k.lower() for w in _SECRET_WORDS) else redact(v, depth + 1))
                for k, v in list(value.items())[:50]}
    if isinstance(value, list):
        return [redact(v, depth + 1) for v in value[:20]]
    if isinstance(value, str) and len(value) > 256:
        return value[:256] + "…"
    return value


_second = [-1, ""]


def _now() -> str:
    """RFC 3339 with milliseconds; the seconds part is formatted once per second."""
    t = time.time()
    sec = int(t)
    if sec != _second[0]:
        _second[0], _second[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_second[1]}.{int((t - sec) * 1000):03d}Z"


def record(d: Decision) -> dict[str, Any]:
    c = d.caller
    rec: dict[str, Any] = {
        "time": _now(),
        "decision_id": d.decision_id,
        "server": d.server,
        "method": d.method,
        "name": d.name,
        "caller": {"iss": c.issuer, "sub": c.subject, "client_id": c.client_id} if c else None,
        "mcp_session_id": d.session_id,
        "user_session": c.user_session if c else "",
        "decision": "allow" if d.allowed else "deny",
        "reason": d.reason.value,
        "rule": d.rule,
        "latency_ms": round(d.latency * 1000, 3),
    }
    if d.detail:
        rec["detail"] = d.detail
    if d.monitor and not d.allowed:
        rec["monitor"] = True
        rec["enforced"] = False
    if d.http_method != "POST":
        rec["http_method"] = d.http_method
    if d.form == "batch":
        rec["batch"] = [{"id": i, "reason": v.reason.value, "name": v.name}
                        for i, v in zip(d.ids, d.verdicts, strict=False)]
    if d.arguments is not None:
        rec["arguments"] = redact(d.arguments)
    if d.alert is not None:
        rec["alert"] = d.alert
    return rec


class RecentDecisions:
    """The last `keep` decision-log lines for the admin API, kept as their JSON bytes and decoded
    on read. Bytes are invisible to the cyclic GC; a ring of 1,000 dicts was most of what young
    collections promoted under load, and then walked again in every older collection."""

    def __init__(self, keep: int) -> None:
        self._lines: deque[bytes] = deque(maxlen=keep)

    def add_line(self, line: bytes) -> None:
        self._lines.append(line)

    def append(self, rec: dict[str, Any]) -> None:
        self._lines.append(orjson.dumps(rec))

    def last(self, n: int) -> list[dict[str, Any]]:
        """The newest n records, oldest first."""
        lines = self._lines
        n = max(0, min(n, len(lines)))
        return [orjson.loads(x) for x in itertools.islice(lines, len(lines) - n, None)]

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def keep(self) -> int:
        return self._lines.maxlen or 0

    def __getitem__(self, i: int) -> dict[str, Any]:
        return orjson.loads(self._lines[i])  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (orjson.loads(x) for x in list(self._lines))


class DecisionLog:
    """Writes each decision as a JSON line; never raises into the Check path, never blocks it.

    With `background=True` (the service), lines are handed to a writer thread: a slow or full
    stdout pipe then delays the log, not the Check. The hand-off is bounded (`max_pending` lines);
    beyond it the oldest unwritten lines are dropped and counted in `dropped`, and the drop itself
    is logged, rather than growing memory or stalling decisions. Tests and replay write inline.
    """

    def __init__(self, out: IO[bytes] | None = None, keep: int = 1000, *, background: bool = False,
                 max_pending: int = 100_000) -> None:
        self._out = out if out is not None else sys.stdout.buffer
        self.recent = RecentDecisions(keep)
        self.emitted = 0          # records ever emitted: lets the workers bus ship only new ones
        # also handed each record (the shared actor log, --redis); runs where decisions are
        # recorded, after their answers went out (App.record_pending), never on the Check path
        self.tap: Callable[[dict[str, Any]], None] | None = None
        self.dropped = 0
        self._pending: deque[bytes] = deque()
        self._max_pending = max_pending
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._writer, name="decision-log", daemon=True)
            self._thread.start()

    def emit(self, d: Decision) -> dict[str, Any] | None:
        try:
            rec = record(d)
            self.emitted += 1
            self._write(rec, keep=True)
            if self.tap is not None:
                self.tap(rec)
            return rec
        except Exception:       # logging must never change a verdict
            return None

    def emit_alert(self, alert: dict[str, Any]) -> None:
        """A risk alert raised outside any Check (evidence seen in a response over ext_proc)."""
        try:
            self._write({"time": _now(), "type": "alert", **alert})
        except Exception:
            pass

    def _write(self, rec: dict[str, Any], keep: bool = False) -> dict[str, Any]:
        line = orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE)
        if keep:
            self.recent.add_line(line)
        if self._thread is None:
            self._out.write(line)
        else:
            if len(self._pending) >= self._max_pending:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(line)
            if len(self._pending) >= 256:
                self._wake.set()
        return rec

    def _drain(self) -> None:
        lines = []
        while self._pending:
            lines.append(self._pending.popleft())
        if lines:
            self._out.write(b"".join(lines))
            self._out.flush()

    def _writer(self) -> None:
        reported = 0
        while not self._closed:
            self._wake.wait(0.05)
            self._wake.clear()
            try:
                self._drain()
                if self.dropped > reported:
                    sys.stderr.write(f"decision log: {self.dropped - reported} line(s) dropped, output too slow\n")
                    reported = self.dropped
            except Exception:   # a broken stdout must not kill the writer
                pass

    def flush(self) -> None:
        """Write everything pending (shutdown, tests). Safe to call from the event loop at exit."""
        try:
            if self._thread is not None:
                self._closed = True
                self._wake.set()
                self._thread.join(timeout=5)
            self._drain()
            self._out.flush()
        except Exception:
            pass
