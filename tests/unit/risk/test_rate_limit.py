"""`risk.callsPerMinute`: one caller, all its sessions, at most N requests a minute (`rate_limited`)."""

from __future__ import annotations

from pathlib import Path

from extauthz.core.reasons import Reason

from .conftest import Clock
from .test_risk_app import BOB_CLAIMS, POLICY, Harness, variant


def test_the_calls_over_the_limit_in_one_minute_are_rate_limited(clock: Clock, tmp_path: Path):
    h = variant(tmp_path, "volumePerMinute: 2}", "volumePerMinute: 2, callsPerMinute: 5}")
    got = [h.call("open_tool", {"q": "x"}, session=f"s{i % 2}").reason for i in range(8)]
    assert got == [Reason.ALLOWED] * 5 + [Reason.RATE_LIMITED] * 3        # across both sessions
    d = h.call("open_tool", {"q": "x"})
    assert d.reason is Reason.RATE_LIMITED and "5 requests" in d.detail and not d.wire_allowed
    assert h.call("open_tool", {"q": "x"}, claims=BOB_CLAIMS).allowed      # per caller
    assert h.score() == 0.0                                                 # not a probe
    clock.advance(60)
    assert h.call("open_tool", {"q": "x"}).allowed                          # a new minute


def test_no_limit_by_default(clock: Clock, tmp_path: Path):
    h = variant(tmp_path, "volumePerMinute: 2}", "volumePerMinute: 2}")
    assert all(h.call("open_tool", {"q": "x"}).allowed for _ in range(50))


def test_monitor_mode_only_logs_the_limit(clock: Clock, tmp_path: Path):
    text = POLICY.read_text().replace("volumePerMinute: 2}", "volumePerMinute: 2, callsPerMinute: 1}")
    h = Harness(text.replace("mode: enforce", "mode: monitor"), tmp_path)
    assert h.call("open_tool", {"q": "x"}).allowed
    d = h.call("open_tool", {"q": "x"})
    assert d.reason is Reason.RATE_LIMITED and d.wire_allowed           # decided, logged, let through
    assert h.log()[-1]["reason"] == "rate_limited" and h.log()[-1]["enforced"] is False
