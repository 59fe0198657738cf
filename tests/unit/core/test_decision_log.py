"""The decision log never blocks a Check: a stalled output delays lines, bounded, and loses
only what exceeds the bound (counted)."""

from __future__ import annotations

import io
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


def test_recent_decisions_are_a_bounded_ring_of_lines_decoded_on_read():
    """The admin ring keeps the exact JSON lines (bytes: nothing for the cyclic GC to walk) and
    decodes only what is read: newest last, bounded, the same records the log wrote."""
    import gc

    from extauthz.core.decision import Decision, new_decision_id
    from extauthz.core.reasons import Reason
    from extauthz.decisionlog import DecisionLog

    out = io.BytesIO()
    log = DecisionLog(out, keep=5)
    for i in range(8):
        log.emit(Decision(new_decision_id(), Reason.ALLOWED if i % 2 else Reason.NOT_ALLOWED, name=f"t{i}"))
    written = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert len(written) == 8 and len(log.recent) == 5
    assert log.recent.last(3) == written[-3:] and log.recent.last(99) == written[-5:] and log.recent.last(0) == []
    assert log.recent[-1] == written[-1] and [r["name"] for r in log.recent] == ["t3", "t4", "t5", "t6", "t7"]
    assert not any(gc.is_tracked(x) for x in log.recent._lines)
    log.recent.append({"decision_id": "relayed", "name": "from a worker"})     # the supervisor's merge
    assert log.recent.last(1) == [{"decision_id": "relayed", "name": "from a worker"}] and len(log.recent) == 5
