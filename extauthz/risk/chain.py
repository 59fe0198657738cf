"""When scored evidence becomes an attack chain, and how fast repeated probing escalates.

Calibrated on the traces in tests/corpus/risk (bench/risk_calibration.py prints the figures):

* A chain needs behaviour that looks like probing, not one slip: within `CHAIN_WINDOW` (sliding)
  at least one recon denial (an unknown name, server or method, a listing burst) and one probe
  denial (schema, ACL, constraint, header, a foreign session id), at least `CHAIN_MIN_DENIALS`
  distinct unforgiven denials in all, worth `CHAIN_MIN_POINTS` together; then a sensitive use
  completes it. Recon and probe may come in either order (an attacker who tries the gate first and
  guesses names afterwards is no less one); extraction must come after both.
* Escalation: an honest agent makes a few distinct unforgiven denials in an hour; a slow prober
  keeps making new ones for hours, each below the decay. Past `ESCALATE_AFTER` distinct unforgiven
  denials within `LONG_WINDOW`, every further one is worth more (+1x per `ESCALATE_STEP`, at most
  `ESCALATE_MAX`x), so a probe spread over hours still reaches `risk.blockAt`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from extauthz.risk.stages import PROBE, RECON

CHAIN_WINDOW = 3600.0        # seconds of evidence (sliding) a chain may rest on
CHAIN_MIN_DENIALS = 4        # distinct unforgiven recon/probe denials ...
CHAIN_MIN_POINTS = 36.0      # ... worth this much together (an honest agent's worst hour in the traces: 30)
LONG_WINDOW = 6 * 3600.0     # the horizon of escalation
ESCALATE_AFTER = 8           # distinct unforgiven denials in LONG_WINDOW before points escalate
ESCALATE_STEP = 4            # +1x per this many more
ESCALATE_MAX = 4.0


class Evidence(Protocol):
    at: float
    stage: str | None
    points: float
    seq: int


E = TypeVar("E", bound=Evidence)
T = TypeVar("T")


def escalation(evidence: Iterable[Evidence], now: float) -> float:
    """The multiplier for a new distinct denial, given the caller's scored evidence."""
    n = sum(1 for e in evidence if e.points > 0 and now - e.at <= LONG_WINDOW)
    if n < ESCALATE_AFTER:
        return 1.0
    return min(ESCALATE_MAX, 1.0 + (n - ESCALATE_AFTER + 1) / ESCALATE_STEP)


def live(evidence: Iterable[E], now: float, after_seq: int) -> dict[str, list[E]]:
    """The unforgiven recon and probe evidence a chain may use now (after the last alert)."""
    out: dict[str, list[E]] = {RECON: [], PROBE: []}
    for e in evidence:
        if e.points > 0 and e.seq > after_seq and now - e.at <= CHAIN_WINDOW and e.stage in out:
            out[e.stage].append(e)
    return out


def ready(stages: Mapping[str, Sequence[Evidence]]) -> bool:
    recon, probe = stages[RECON], stages[PROBE]
    if not recon or not probe or len(recon) + len(probe) < CHAIN_MIN_DENIALS:
        return False
    return sum(e.points for e in recon) + sum(e.points for e in probe) >= CHAIN_MIN_POINTS


def reported(events: list[T], keep: int) -> list[T]:
    """At most `keep` events of a stage for the alert: the first ones and the most recent."""
    return events if len(events) <= keep else [*events[:keep - 1], events[-1]]
