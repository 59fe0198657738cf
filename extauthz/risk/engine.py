"""One actor across MCP sessions: a per-caller timeline, risk score and attack-chain detector.

Every decision is appended to its caller's timeline (all the caller's MCP sessions, and its
stateless traffic, in one ring buffer). Decisions that are evidence of an attack stage add points
(`extauthz.risk.stages`); the score decays linearly (`risk.decayPerMinute`). When a caller has gone
recon -> probe -> extract in that order (across any of its sessions, within `CHAIN_WINDOW`), the
chain is an alert: logged with the decision that completed it, counted in metrics, and kept with the
events that made it (decision ids, sessions, reasons). At `risk.blockAt` every request of the
caller is denied `risk_blocked` until the score decays below it.

Deterministic and explainable: no learning, no randomness; each alert names its events.
Bounded: `max_callers` callers (least recently active evicted first), `timeline` events each.
Cost on the Check path: one dict lookup for the block check, one tuple appended per decision.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from extauthz.risk.stages import CHAIN_POINTS, EXTRACT, ORDER, PROBE, RECON, VOLUME_POINTS

CHAIN_WINDOW = 3600.0          # seconds from the first recon event to the extract completing a chain
EVIDENCE_PER_STAGE = 5
MAX_SESSIONS_PER_CALLER = 32
MAX_ALERTS_PER_CALLER = 8
MAX_SIGNATURES = 64           # distinct scored denials remembered per caller


@dataclass(slots=True)
class Event:
    """One timeline entry: what the caller did and what it meant."""

    at: float                  # wall-clock seconds
    decision_id: str
    session_id: str
    server: str
    method: str
    name: str
    reason: str
    stage: str | None
    points: float

    def as_json(self) -> dict[str, Any]:
        return {"time": round(self.at, 3), "decisionId": self.decision_id, "sessionId": self.session_id,
                "server": self.server, "method": self.method, "name": self.name, "reason": self.reason,
                "stage": self.stage, "points": self.points}


@dataclass(slots=True)
class CallerRisk:
    caller: str
    timeline: deque[Event]
    score: float = 0.0
    updated: float = 0.0                      # monotonic time of the last score update
    first_seen: float = 0.0
    last_seen: float = 0.0
    events: int = 0
    sessions: OrderedDict[str, None] = field(default_factory=OrderedDict)
    # the chain in progress: evidence per stage (recon first, then probe after it, then extract)
    chain: dict[str, list[Event]] = field(default_factory=dict)
    chain_started: float = 0.0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    volume_minute: int = 0
    volume_count: int = 0
    blocked_since: float | None = None
    rate_minute: int = 0
    rate_count: int = 0
    # signatures of denials already scored: a client retrying the same denied call is not probing
    scored: OrderedDict[int, None] = field(default_factory=OrderedDict)

    def decayed(self, now: float, per_minute: float) -> float:
        return max(0.0, self.score - per_minute * (now - self.updated) / 60.0)


class RiskEngine:
    def __init__(self, *, block_at: float = 100.0, decay_per_minute: float = 1.0, enabled: bool = True,
                 volume_per_minute: int = 600, timeline: int = 32, max_callers: int = 10_000) -> None:
        self._callers: OrderedDict[str, CallerRisk] = OrderedDict()
        self.configure(block_at=block_at, decay_per_minute=decay_per_minute, enabled=enabled,
                       volume_per_minute=volume_per_minute, timeline=timeline, max_callers=max_callers)
        self.calls_per_minute = 0         # risk.callsPerMinute (0: no limit)
        self.alerts_total = 0
        self.blocks_total = 0
        self.on_alert: Callable[[dict[str, Any]], None] | None = None
        # A chain completed by an event another replica relayed is that replica's alert to log and
        # count; only the supervisor of --workers (which decides nothing itself) announces those.
        self.announce_replicated = False
        self.on_block: Callable[[str], None] | None = None
        # (op, payload) for other replicas: scored and chain events only (set by the workers bus)
        self.on_change: Callable[[str, dict[str, Any]], None] | None = None

    def configure(self, *, block_at: float, decay_per_minute: float, enabled: bool, volume_per_minute: int,
                  timeline: int, max_callers: int) -> None:
        self.block_at, self.decay = float(block_at), float(decay_per_minute)
        self.enabled, self.volume_per_minute = enabled, int(volume_per_minute)
        self.timeline_len, self.max_callers = int(timeline), int(max_callers)

    def __len__(self) -> int:
        return len(self._callers)

    # -- the Check path ----------------------------------------------------------------------------
    def blocked(self, caller: str) -> str:
        """Why this caller is blocked, or "" (the common case: one dict lookup)."""
        st = self._callers.get(caller)
        if st is None or st.score < self.block_at or not self.enabled:
            return ""
        score = st.decayed(time.monotonic(), self.decay)
        if score < self.block_at:
            st.blocked_since = None
            return ""
        last = st.alerts[-1]["summary"] if st.alerts else "accumulated denials"
        return f"risk score {score:.0f} >= {self.block_at:.0f} ({last})"

    def limited(self, caller: str) -> str:
        """Why this caller is over `risk.callsPerMinute` in the current minute, or ""."""
        limit = self.calls_per_minute
        if not limit:
            return ""
        st = self._callers.get(caller)
        if st is None or st.rate_count < limit or st.rate_minute != int(time.monotonic() // 60):
            return ""
        return f"more than {limit} requests this minute"

    def record(self, caller: str, *, decision_id: str, session_id: str, server: str, method: str, name: str,
               reason: str, stage: str | None, points: float, replicated: bool = False,
               at: float | None = None, signature: int | None = None) -> dict[str, Any] | None:
        """Append one decision to the caller's timeline and score it. Returns an alert if this event
        completed an attack chain. `signature` identifies a denial (what was asked and why it was
        refused): the same denial again scores nothing (a retry loop is not a probe), a different
        one scores in full."""
        now = time.monotonic()
        wall = time.time() if at is None else at
        st = self._state(caller, now)
        if signature is not None and points:
            if signature in st.scored:
                points = 0.0
            else:
                st.scored[signature] = None
                if len(st.scored) > MAX_SIGNATURES:
                    st.scored.popitem(last=False)
        ev = Event(wall, decision_id, session_id, server, method, name, reason, stage, points)
        st.timeline.append(ev)
        st.events += 1
        minute = int(now // 60)
        if minute != st.rate_minute:
            st.rate_minute, st.rate_count = minute, 0
        st.rate_count += 1
        st.last_seen = wall
        if session_id:
            st.sessions[session_id] = None
            st.sessions.move_to_end(session_id)
            if len(st.sessions) > MAX_SESSIONS_PER_CALLER:
                st.sessions.popitem(last=False)
        if stage is None and points == 0.0:
            return None
        alert = None
        changed = points > 0.0
        if stage == EXTRACT:
            changed |= self._volume(st, ev, now)
        if stage is not None:
            alert, moved = self._chain(st, ev, wall, announce=not replicated or self.announce_replicated)
            changed |= moved
        if points:
            self._add(st, points, now)
        if alert is not None:
            self._add(st, CHAIN_POINTS, now)
        if changed and self.on_change is not None and not replicated:
            self.on_change("risk", {"caller": caller, **ev.as_json(), "signature": signature})
        return alert

    def restore(self, caller: str, score: float) -> None:
        """Set a caller's current score (a restarted worker catching up; no timeline, no chain)."""
        now = time.monotonic()
        st = self._state(caller, now)
        st.score, st.updated = max(st.decayed(now, self.decay), score), now

    # -- internals ---------------------------------------------------------------------------------
    def _state(self, caller: str, now: float) -> CallerRisk:
        st = self._callers.get(caller)
        if st is None:
            st = self._callers[caller] = CallerRisk(caller, deque(maxlen=self.timeline_len), updated=now,
                                                   first_seen=time.time())
            while len(self._callers) > self.max_callers:
                self._callers.popitem(last=False)
        else:
            self._callers.move_to_end(caller)
        return st

    def _add(self, st: CallerRisk, points: float, now: float) -> None:
        st.score = st.decayed(now, self.decay) + points
        st.updated = now
        if st.score >= self.block_at and st.blocked_since is None and self.enabled:
            st.blocked_since = time.time()
            self.blocks_total += 1
            if self.on_block is not None:
                self.on_block(st.caller)

    def _volume(self, st: CallerRisk, ev: Event, now: float) -> bool:
        minute = int(now // 60)
        if minute != st.volume_minute:
            st.volume_minute, st.volume_count = minute, 0
        st.volume_count += 1
        if st.volume_count == self.volume_per_minute + 1:
            ev.points += VOLUME_POINTS
            ev.reason = f"{ev.reason}; volume above {self.volume_per_minute}/min"
            self._add(st, VOLUME_POINTS, now)
            return True
        return False

    def _chain(self, st: CallerRisk, ev: Event, wall: float, *,
               announce: bool = True) -> tuple[dict[str, Any] | None, bool]:
        """Advance the recon -> probe -> extract chain. (alert or None, whether the chain moved)."""
        chain = st.chain
        if chain and wall - st.chain_started > CHAIN_WINDOW:
            chain.clear()
        stage = ev.stage
        assert stage is not None
        have = [s for s in ORDER if s in chain]
        reached = ORDER.index(have[-1]) if have else -1
        idx = ORDER.index(stage)
        if idx > reached + 1:
            return None, False              # out of order: not (yet) a chain
        if stage == RECON and not chain:
            st.chain_started = wall
        evidence = chain.setdefault(stage, [])
        moved = not evidence
        if len(evidence) < EVIDENCE_PER_STAGE and (ev.points > 0 or not evidence):
            evidence.append(ev)
        elif ev.points > 0 and len(evidence) == EVIDENCE_PER_STAGE:
            evidence[-1] = ev             # keep the most recent scored event too
        if stage != EXTRACT or PROBE not in chain:
            return None, moved
        alert = self._alert(st, wall, announce)
        chain.clear()
        return alert, True

    def _alert(self, st: CallerRisk, wall: float, announce: bool = True) -> dict[str, Any]:
        sessions: list[str] = []
        for s in ORDER:
            for e in st.chain.get(s, ()):
                if e.session_id and e.session_id not in sessions:
                    sessions.append(e.session_id)
        stages = {s: [e.as_json() for e in st.chain.get(s, ())] for s in ORDER}
        last = {s: st.chain[s][-1] for s in ORDER if st.chain.get(s)}
        summary = ("chain recon -> probe -> extract: "
                   + "; ".join(f"{s} {e.reason}{' ' + e.name if e.name else ''}" for s, e in last.items()))
        alert = {"alert": "attack_chain", "caller": st.caller, "time": round(wall, 3), "sessions": sessions,
                 "stages": stages, "points": CHAIN_POINTS, "summary": summary[:300]}
        st.alerts.append(alert)
        del st.alerts[:-MAX_ALERTS_PER_CALLER]
        self.alerts_total += 1
        if self.on_alert is not None and announce:
            self.on_alert(alert)
        return alert

    # -- views -------------------------------------------------------------------------------------
    def get(self, caller: str) -> CallerRisk | None:
        return self._callers.get(caller)

    def find(self, ident: str) -> list[CallerRisk]:
        """A caller by its key (iss|sub|client), else every caller with that subject."""
        st = self._callers.get(ident)
        if st is not None:
            return [st]
        return [s for k, s in self._callers.items() if k.split("|")[1:2] == [ident]]

    def score(self, caller: str) -> float:
        st = self._callers.get(caller)
        return 0.0 if st is None else st.decayed(time.monotonic(), self.decay)

    def summary(self, st: CallerRisk) -> dict[str, Any]:
        score = st.decayed(time.monotonic(), self.decay)
        return {"caller": st.caller, "score": round(score, 2), "blocked": self.enabled and score >= self.block_at,
                "blockAt": self.block_at, "events": st.events, "sessions": list(st.sessions),
                "firstSeen": round(st.first_seen, 3), "lastSeen": round(st.last_seen, 3),
                "chain": [s for s in ORDER if s in st.chain], "alerts": st.alerts}

    def timeline(self, st: CallerRisk) -> dict[str, Any]:
        return {**self.summary(st), "timeline": [e.as_json() for e in st.timeline]}

    def callers(self, limit: int = 1000) -> list[CallerRisk]:
        return list(self._callers.values())[-limit:]
