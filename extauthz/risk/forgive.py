"""Corrected mistakes: an agent sends `"5"` for an integer, reads the error, and calls again right.

A `CORRECTABLE` denial (schema violation, payload too large) followed within `CORRECTION_WINDOW`
by an allowed call of the same capability (server, method, name) is forgiven: its points are
refunded and it stops being chain or escalation evidence. One allowed call forgives at most
`PER_CORRECTION` denials (the most recent), and a caller is forgiven at most
max(`FLOOR`, `SHARE` of its allowed uses) per `BUCKETS` hours, so a fuzzer that slips a valid call
between its variants still pays for most of them (honest agents make 2-5% of mistakes).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

CORRECTION_WINDOW = 300.0    # seconds from the mistake to the call that corrects it
PER_CORRECTION = 2
FLOOR = 3
SHARE = 0.10
BUCKETS = 6                  # hours of (uses, forgiven) counts kept for the budget
MAX_PENDING = 32             # capabilities with a forgivable denial waiting, per caller
PENDING_PER_KEY = 4

if TYPE_CHECKING:
    from extauthz.risk.engine import Event

Key = tuple[str, str, str]


@dataclass(slots=True)
class Corrections:
    pending: OrderedDict[Key, list[Event]] = field(default_factory=OrderedDict)
    hours: deque[list[int]] = field(default_factory=lambda: deque(maxlen=BUCKETS))   # [hour, uses, forgiven]

    def _bucket(self, now: float) -> list[int]:
        hour = int(now // 3600)
        if not self.hours or self.hours[-1][0] != hour:
            self.hours.append([hour, 0, 0])
        return self.hours[-1]

    def mistake(self, key: Key, ev: Event) -> None:
        """A forgivable denial, waiting for its correction."""
        waiting = self.pending.get(key)
        if waiting is None:
            waiting = self.pending[key] = []
            while len(self.pending) > MAX_PENDING:
                self.pending.popitem(last=False)
        waiting.append(ev)
        del waiting[:-PENDING_PER_KEY]

    def use(self, key: Key, now: float, *also: Key) -> list[Event]:
        """An allowed use of `key`: the denials it forgives (their points are for the caller to
        refund), those waiting under `key` and then under `also`, most recent first."""
        bucket = self._bucket(now)
        bucket[1] += 1
        waiting = [e for k in (*also, key) for e in self.pending.pop(k, ())] if self.pending else []
        if not waiting:
            return []
        waiting.sort(key=lambda e: e.at)
        fresh = [e for e in waiting if e.points > 0 and 0 <= now - e.at <= CORRECTION_WINDOW]
        uses = sum(b[1] for b in self.hours)
        forgiven = sum(b[2] for b in self.hours)
        budget = max(FLOOR, int(SHARE * uses)) - forgiven
        out = fresh[-min(PER_CORRECTION, max(0, budget)):] if budget > 0 else []
        bucket[2] += len(out)
        return out
