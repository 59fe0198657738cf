"""The decision log never blocks a Check: a stalled output delays lines, bounded, and loses
only what exceeds the bound (counted)."""

from __future__ import annotations

import threading
import time

import orjson

from extauthz.core.decision import Decision, new_decision_id
from extauthz.core.reasons import Reason
from extauthz.decisionlog import DecisionLog, redact


class StalledOutput:
    def __init__(self) -> None:
        self.gate = threading.Event()
        self.data = bytearray()
        self.writers: set[str] = set()

    def write(self, b: bytes) -> int:
        self.writers.add(threading.current_thread().name)
        self.gate.wait()          # a full pipe: blocks until released
        self.data += b
        return len(b)

    def flush(self) -> None:
        pass


def test_emit_does_not_wait_for_a_stalled_output_and_loses_nothing_within_the_bound():
    out = StalledOutput()
    log = DecisionLog(out, background=True, max_pending=10_000)
    for _ in range(2000):
        log.emit(Decision(new_decision_id(), Reason.NOT_ALLOWED, "x"))
    # Every emit returned although the output is stuck; only the writer thread ever waited on it.
    assert not out.data and out.writers <= {"decision-log"}
    out.gate.set()
    log.flush()
    lines = out.data.splitlines()
    assert len(lines) == 2000 and log.dropped == 0
    assert orjson.loads(lines[0])["reason"] == "not_allowed"


def test_beyond_the_bound_the_oldest_lines_are_dropped_and_counted():
    out = StalledOutput()
    log = DecisionLog(out, background=True, max_pending=100)
    for _ in range(200):
        log.emit(Decision(new_decision_id(), Reason.ALLOWED))
    time.sleep(0.1)
    out.gate.set()
    log.flush()
    assert log.dropped > 0                  # some were beyond the bound (how many depends on timing)
    assert len(out.data.splitlines()) + log.dropped == 200


def test_redaction_of_secret_looking_keys():
    args = {"customer_id": "c-1", "api_key": "k", "nested": {"Password": "p", "note": "x" * 300},
            "list": [{"token": "t"}]}
    r = redact(args)
    assert r["customer_id"] == "c-1" and r["api_key"] == "[redacted]"
    assert r["nested"]["Password"] == "[redacted]" and len(r["nested"]["note"]) < 300
    assert r["list"][0]["token"] == "[redacted]"
