"""Which call results ext_proc shows us, and what we do with them (`audit.observeResponses`).

Every observed call costs an ext_proc stream (in observability mode: Envoy never waits for it,
but the service still reads it), so `sampled` is bounded twice: per capability (its first calls,
then 1 in `EVERY`) and overall (`PER_SECOND`). Calls of a caller with a risk score skip the
per-capability sampling (their extraction is what the risk engine must see) but have a budget of
their own. `all` observes every call.

A result is scanned for sensitive data inline on the event loop, bounded to `SCAN_BYTES` of
strings (2-8 ms at worst). A worker thread was tried first: under load its GIL hand-offs stalled
Checks far longer than the scan itself (bench/through_envoy.py: the added p99 at 1,000/s went from
~3 ms to 11-33 ms; inline it is back to ~3 ms). Only counts are kept, never values.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from extauthz.core.decision import Decision
from extauthz.decisionlog import DecisionLog
from extauthz.detect.responses import scan_response
from extauthz.inventory.store import Inventory
from extauthz.mcp.kinds import BY_OBSERVED_METHOD
from extauthz.mcp.learnheader import LearnEntry
from extauthz.risk.engine import RiskEngine
from extauthz.risk.stages import EXTRACT

FIRST = 3                  # sampled: the first calls of each capability ...
EVERY = 200                # ... then 1 in this many ...
PER_SECOND = 10            # ... and at most this many observed calls a second in all
RISKY_PER_SECOND = 50      # calls of callers with a risk score: every one, up to this rate
SCAN_BYTES = 16 * 1024     # of string data scanned per observed result (sizes are counted whole)
MAX_TRACKED = 50_000       # capabilities with a sampling counter
SENSITIVE_CATEGORIES = ("pii", "secret", "financial", "health")


class Observer:
    def __init__(self, inventory: Inventory, risk: RiskEngine, decisions: DecisionLog,
                 ctx: Callable[[], Any]) -> None:
        self.inventory, self.risk, self.decisions, self._ctx = inventory, risk, decisions, ctx
        self._counts: dict[tuple[str, str], int] = {}
        self._budget = [0, 0, 0]            # [second, sampled, risky] observed in that second

    def sample(self, d: Decision, ctx: Any) -> bool:
        """Whether an allowed call's result is to be observed (its answer plan then says so)."""
        mode = ctx.policy.audit.observe_responses
        if mode == "off" or d.legacy_sse or len(d.ids) != 1 or not d.name or d.caller is None:
            return False
        if mode == "sampled":
            risky = self.risk.score(d.caller.key) > 0
            if not risky:
                key = (d.server, d.name)
                n = self._counts.get(key, 0) + 1
                if key in self._counts or len(self._counts) < MAX_TRACKED:
                    self._counts[key] = n
                if n > FIRST and n % EVERY:
                    return False
            second = int(time.monotonic())
            budget = self._budget
            if budget[0] != second:
                budget[:] = [second, 0, 0]
            slot = 2 if risky else 1
            if budget[slot] >= (RISKY_PER_SECOND if risky else PER_SECOND):
                return False
            budget[slot] += 1
        return True

    def on_result(self, server: str, caller: str, session_id: str, entry: LearnEntry,
                  result: dict[str, Any] | None, size: int) -> None:
        """An observed call's result (the learner's hook): counted in the inventory; a large or
        sensitive one is extraction evidence on the caller's timeline."""
        findings = scan_response(result, max_bytes=SCAN_BYTES) if result is not None else {}
        self.inventory.record_response(server, BY_OBSERVED_METHOD[entry.method].value, entry.name, findings, size)
        ctx = self._ctx()
        if not caller or caller == "-" or ctx is None:
            return
        large = size >= ctx.policy.risk.large_response_bytes
        sensitive = {k: n for k, n in findings.items() if k.split(".", 1)[0] in SENSITIVE_CATEGORIES}
        if large or sensitive:
            what = ", ".join(f"{n} {k}" for k, n in sorted(sensitive.items())[:5])
            why = f"response of {size} bytes" + (f" carrying {what}" if what else "")
            alert = self.risk.record(caller, decision_id="", session_id=session_id, server=server, method=entry.method,
                                     name=entry.name, reason=why, stage=EXTRACT, points=0.0)
            if alert is not None:
                self.decisions.emit_alert(alert)
