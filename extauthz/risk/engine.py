"""One actor across MCP sessions: a per-caller timeline, risk score and attack-chain detector.

Every decision is appended to its caller's timeline (all the caller's MCP sessions, and its
stateless traffic, in one ring buffer). Decisions that are evidence of an attack stage add points
(`extauthz.risk.stages`); the score decays linearly (`risk.decayPerMinute`). A corrected mistake is
forgiven (`extauthz.risk.forgive`); many distinct denials over hours escalate, and enough recon and
probe evidence followed by extraction is a chain (`extauthz.risk.chain`): an alert, logged with the
decision that completed it, counted in metrics, and kept with the events that made it (decision
ids, sessions, reasons). At `risk.blockAt` every request of the caller is denied `risk_blocked`
until the score decays below it.

Deterministic and explainable: no learning, no randomness; each alert names its events. Time comes
from the `clock` given to the constructor (`SystemClock` in the service, a simulated one in replay
and calibration). Bounded: `max_callers` callers (least recently active evicted first), `timeline`
events each, `MAX_EVIDENCE` scored events each.
Cost on the Check path: one dict lookup for the block check, one tuple appended per decision.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from extauthz.risk import chain as chains
from extauthz.risk.forgive import Corrections
from extauthz.risk.stages import (
    CHAIN_POINTS,
    CORRECTABLE,
    EXTRACT,
    LIST_BURST_POINTS,
    LIST_METHODS,
    ORDER,
    PROBE,
    RECON,
    USE_METHODS,
    VOLUME_POINTS,
)
from extauthz.shared.changes import RateCounts, RiskEvent, RiskScore, Sink, emit

CHAIN_WINDOW = chains.CHAIN_WINDOW
EVIDENCE_PER_STAGE = 5         # events per stage an alert reports
MAX_EVIDENCE = 64              # scored events remembered per caller (chain and escalation)
MAX_SESSIONS_PER_CALLER = 32
MAX_ALERTS_PER_CALLER = 8
MAX_SIGNATURES = 64           # distinct scored denials remembered per caller
LIST_BURST_WINDOW = 60.0       # seconds: listing on this many distinct (server, session) pairs ...
LIST_BURST_PAIRS = 12          # ... within the window is a burst (an IDE reconnecting 5 servers is not)


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def time(self) -> float: ...


class RiskStore(Protocol):
    """The seam: per-caller risk as the Check path and the transports use it."""
    on_change: Sink | None

    def score(self, caller: str) -> float: ...
    def report_counts(self) -> list[dict[str, Any]]: ...
    def apply(self, change: RiskEvent | RiskScore | RateCounts) -> None: ...


class SystemClock:
    """The real clocks (looked up on each call, so a test may patch this module's `time`)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


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
    seq: int = 0               # the caller's event number
    forgiven_by: str = ""      # the allowed call that corrected this mistake
    forgives: tuple[str, ...] = ()   # the mistakes this allowed call corrected

    def as_json(self) -> dict[str, Any]:
        out = {"time": round(self.at, 3), "decisionId": self.decision_id, "sessionId": self.session_id,
               "server": self.server, "method": self.method, "name": self.name, "reason": self.reason,
               "stage": self.stage, "points": self.points}
        if self.forgiven_by:
            out["forgivenBy"] = self.forgiven_by
        if self.forgives:
            out["forgives"] = list(self.forgives)
        return out


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
    # scored recon/probe events, oldest first (at most MAX_EVIDENCE): chain and escalation evidence
    evidence: list[Event] = field(default_factory=list)
    chain_seq: int = 0                        # evidence up to this event number went into an alert
    alerts: list[dict[str, Any]] = field(default_factory=list)
    corrections: Corrections | None = None    # made on the first correctable mistake (most callers: never)
    lists: deque[tuple[float, str, str]] = field(default_factory=deque)   # recent listing, for bursts
    list_pairs: dict[tuple[str, str], int] = field(default_factory=dict)  # (server, session) -> entries in `lists`
    burst_at: float = float("-inf")
    # per wall-clock minute (every replica's minute is the same one): this process's calls and
    # sensitive uses plus the other replicas' reported ones (RiskEngine.add_counts)
    volume_minute: int = 0
    volume_count: int = 0
    volume_scored: int = -1                   # the minute whose volume points were added (here or elsewhere)
    blocked_since: float | None = None
    rate_minute: int = 0
    rate_count: int = 0
    # signatures of denials already scored: a client retrying the same denied call is not probing
    scored: OrderedDict[int | str, None] = field(default_factory=OrderedDict)

    def decayed(self, now: float, per_minute: float) -> float:
        return max(0.0, self.score - per_minute * (now - self.updated) / 60.0)


@dataclass(slots=True)
class _Unreported:
    """Counts of one minute not yet reported to the other replicas, at most max_callers each (a
    flood of distinct callers beyond that is still counted here, only not reported)."""

    minute: int
    calls: dict[str, int] = field(default_factory=dict)
    uses: dict[str, int] = field(default_factory=dict)

    def call(self, caller: str, cap: int) -> None:
        _bump(self.calls, caller, cap)

    def use(self, caller: str, cap: int) -> None:
        _bump(self.uses, caller, cap)

    def record(self) -> dict[str, Any]:
        return {"minute": self.minute, "calls": self.calls, "uses": self.uses}


def _new_minute(minute: int, counted: int) -> bool:
    """Does `minute` start a new count? A later minute does; the minute before the counted one
    does not (another replica's clock is a moment ahead: its count stands); a clock set back does."""
    return minute > counted or minute < counted - 1


def _bump(counts: dict[str, int], key: str, cap: int) -> None:
    n = counts.get(key)
    if n is not None:
        counts[key] = n + 1
    elif len(counts) < cap:
        counts[key] = 1


class RiskEngine:
    def __init__(self, *, block_at: float = 100.0, decay_per_minute: float = 1.0, enabled: bool = True,
                 volume_per_minute: int = 600, timeline: int = 32, max_callers: int = 10_000,
                 clock: Clock | None = None, on_alert: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._callers: OrderedDict[str, CallerRisk] = OrderedDict()
        self.configure(block_at=block_at, decay_per_minute=decay_per_minute, enabled=enabled,
                       volume_per_minute=volume_per_minute, timeline=timeline, max_callers=max_callers)
        self.calls_per_minute = 0         # risk.callsPerMinute (0: no limit)
        self.alerts_total = 0
        self.blocks_total = 0
        self.on_alert = on_alert
        # A chain completed by an event another replica relayed is that replica's alert to log and
        # count (the supervisor of --workers shows the sum of its workers' counts), so relayed
        # completions are not announced unless this is set.
        self.announce_replicated = False
        self.on_block: Callable[[str], None] | None = None
        # (op, payload) for other replicas: scored, forgiving and chain events only (the workers bus)
        self.on_change: Sink | None = None
        # calls and sensitive uses counted here and not yet reported to the other replicas
        self._out = _Unreported(-1)
        self._out_full: list[_Unreported] = []        # a minute that ended before its report went out

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
        score = st.decayed(self.clock.monotonic(), self.decay)
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
        # (a count one minute ahead is a replica whose clock is a little ahead: it counts)
        if st is None or st.rate_count < limit or st.rate_minute < int(self.clock.time() // 60):
            return ""
        return f"more than {limit} requests this minute"

    def record(self, caller: str, *, decision_id: str, session_id: str, server: str, method: str, name: str,
               reason: str, stage: str | None, points: float, at: float | None = None,
               signature: int | None = None) -> dict[str, Any] | None:
        """Append one decision to the caller's timeline and score it. Returns an alert if this event
        completed an attack chain. `signature` identifies a denial (what was asked and why it was
        refused): the same denial again scores nothing (a retry loop is not a probe), a different
        one scores in full, escalated past the caller's usual share of denials. A scored, forgiving
        or chain event is published as a RiskEvent."""
        return self._record(caller, decision_id, session_id, server, method, name, reason, stage, points,
                            at, signature, (), None, relayed=False)

    def apply(self, change: RiskEvent | RiskScore | RateCounts) -> dict[str, Any] | None:
        """What another replica decided or counted, applied as sent (never published again). A
        RiskEvent carries its final points, the decision ids it `forgives` and, when its points
        include the volume points of a minute, that `volume_minute`; returns the alert it completed."""
        if isinstance(change, RiskEvent):
            c = change
            return self._record(c.caller, c.decision_id, c.session_id, c.server, c.method, c.name, c.reason,
                                c.stage, c.points, c.time, c.signature, c.forgives, c.volume_minute, relayed=True)
        if isinstance(change, RiskScore):
            self.restore(change.caller, change.score)
        elif isinstance(change, RateCounts):
            self.add_counts(change.minute, change.calls, change.uses, totals=change.totals)
        else:
            raise TypeError(f"not a risk change: {change!r}")
        return None

    def _record(self, caller: str, decision_id: str, session_id: str, server: str, method: str, name: str,
                reason: str, stage: str | None, points: float, at: float | None, signature: int | str | None,
                forgives: tuple[str, ...] | list[str], volume_minute: int | None, *,
                relayed: bool) -> dict[str, Any] | None:
        now = self.clock.monotonic()
        clock_time = self.clock.time()
        wall = clock_time if at is None else at
        st = self._state(caller, now)
        if signature is not None and points:
            if signature in st.scored:
                points = 0.0
            else:
                st.scored[signature] = None
                if len(st.scored) > MAX_SIGNATURES:
                    st.scored.popitem(last=False)
        if points > 0 and not relayed and stage in (RECON, PROBE):
            points = round(points * chains.escalation(st.evidence, wall), 2)
        st.events += 1
        ev = Event(wall, decision_id, session_id, server, method, name, reason, stage, points, st.events)
        st.timeline.append(ev)
        minute = int(clock_time // 60)      # wall clock: the same minute on every replica
        if _new_minute(minute, st.rate_minute):
            st.rate_minute, st.rate_count = minute, 0
        if not relayed:                # a relayed event's call was counted where it was made
            st.rate_count += 1
            if self.calls_per_minute:
                self._unreported(minute).call(caller, self.max_callers)
        st.last_seen = wall
        if session_id:
            st.sessions[session_id] = None
            st.sessions.move_to_end(session_id)
            if len(st.sessions) > MAX_SESSIONS_PER_CALLER:
                st.sessions.popitem(last=False)
        refund = 0.0
        if relayed:
            refund = self._forgive_ids(st, forgives, decision_id)
        elif reason == "allowed" and method in USE_METHODS:
            refund = self._corrected(st, ev, wall)
        elif reason == "allowed" and method in LIST_METHODS:
            self._list_burst(st, ev, wall)
        if ev.points > 0 and ev.stage in (RECON, PROBE):
            st.evidence.append(ev)
            del st.evidence[:-MAX_EVIDENCE]
            if reason in CORRECTABLE:       # relayed too: the correction may reach another worker
                if st.corrections is None:
                    st.corrections = Corrections()
                st.corrections.mistake((server, method, name), ev)
        if ev.stage is None and ev.points == 0.0 and not ev.forgives:
            return None
        alert = None
        changed = ev.points > 0.0 or bool(ev.forgives)
        volume = False
        if ev.stage == EXTRACT:
            if not relayed:                         # relayed uses arrive counted (add_counts)
                volume = self._volume(st, ev, wall)
                changed |= volume
            elif volume_minute is not None:
                if st.volume_scored == volume_minute:  # both scored that minute before hearing of
                    ev.points = max(0.0, round(ev.points - VOLUME_POINTS, 2))   # each other: once
                st.volume_scored = max(st.volume_scored, volume_minute)
            alert = self._chain(st, ev, wall, announce=not relayed or self.announce_replicated)
            changed |= alert is not None
        if refund:
            self._add(st, -refund, now)
        if ev.points:
            self._add(st, ev.points, now)
        if alert is not None:
            self._add(st, CHAIN_POINTS, now)
        if changed and not relayed:
            emit(self.on_change, RiskEvent(caller, round(ev.at, 3), ev.decision_id, ev.session_id, ev.server, ev.method,
                                           ev.name, ev.reason, ev.stage, ev.points, signature, tuple(ev.forgives),
                                           ev.forgiven_by or None, st.volume_scored if volume else None))
        return alert

    # -- global counts: what the other replicas counted (risk.callsPerMinute, risk.volumePerMinute) ---
    def report_counts(self) -> list[dict[str, Any]]:
        """The calls and sensitive uses counted here since the last report, one record per minute
        ({minute, calls: {caller: n}, uses: {caller: n}}), for the other replicas' add_counts."""
        out = [u.record() for u in self._out_full if u.calls or u.uses]
        self._out_full = []
        if self._out.calls or self._out.uses:
            out.append(self._out.record())
            self._out = _Unreported(self._out.minute)
        return out

    def add_counts(self, minute: int, calls: dict[str, int], uses: dict[str, int], *, totals: bool = False) -> None:
        """Another replica's report: its counts join each caller's minute here. A report for a
        minute already over here is ignored; one for a minute this caller has not reached starts it.
        `totals`: the counts are the minute's global totals so far (a replica loading them), not news."""
        now = self.clock.monotonic()
        for kind, counts in (("rate", calls), ("volume", uses)):
            for caller, n in counts.items():
                if not isinstance(caller, str) or not isinstance(n, int) or n <= 0:
                    continue
                st = self._state(caller, now)
                if kind == "rate":
                    if _new_minute(minute, st.rate_minute):
                        st.rate_minute, st.rate_count = minute, 0
                    if minute == st.rate_minute:
                        st.rate_count = max(st.rate_count, n) if totals else st.rate_count + n
                else:
                    if _new_minute(minute, st.volume_minute):
                        st.volume_minute, st.volume_count = minute, 0
                    if minute == st.volume_minute:
                        st.volume_count = max(st.volume_count, n) if totals else st.volume_count + n

    def minute_counts(self) -> dict[str, Any]:
        """Every caller's count of the current minute, as a record for add_counts: what a
        (re)started worker is sent, so it does not start the minute from zero."""
        minute = int(self.clock.time() // 60)
        return {"minute": minute,
                "calls": {c: st.rate_count for c, st in self._callers.items()
                          if st.rate_minute == minute and st.rate_count},
                "uses": {c: st.volume_count for c, st in self._callers.items()
                         if st.volume_minute == minute and st.volume_count}}

    def _unreported(self, minute: int) -> _Unreported:
        out = self._out
        if out.minute != minute:
            if (out.calls or out.uses) and len(self._out_full) < 4:
                self._out_full.append(out)
            out = self._out = _Unreported(minute)
        return out

    def restore(self, caller: str, score: float) -> None:
        """Set a caller's current score (a restarted worker catching up; no timeline, no chain)."""
        now = self.clock.monotonic()
        st = self._state(caller, now)
        st.score, st.updated = max(st.decayed(now, self.decay), score), now

    # -- internals ---------------------------------------------------------------------------------
    def _state(self, caller: str, now: float) -> CallerRisk:
        st = self._callers.get(caller)
        if st is None:
            st = self._callers[caller] = CallerRisk(caller, deque(maxlen=self.timeline_len), updated=now,
                                                   first_seen=self.clock.time())
            while len(self._callers) > self.max_callers:
                self._callers.popitem(last=False)
        else:
            self._callers.move_to_end(caller)
        return st

    def _add(self, st: CallerRisk, points: float, now: float) -> None:
        st.score = max(0.0, st.decayed(now, self.decay) + points)
        st.updated = now
        if st.score >= self.block_at and st.blocked_since is None and self.enabled:
            st.blocked_since = self.clock.time()
            self.blocks_total += 1
            if self.on_block is not None:
                self.on_block(st.caller)

    def _corrected(self, st: CallerRisk, ev: Event, wall: float) -> float:
        """An allowed use: forgive the mistakes it corrects. Returns the points to refund."""
        if st.corrections is None:
            return 0.0
        refund = 0.0
        # an oversized body is refused before it is parsed, so its method and name are unknown:
        # the next allowed use on that server is its correction
        forgiven = st.corrections.use((ev.server, ev.method, ev.name), wall, (ev.server, "", ""))
        for e in forgiven:
            refund += e.points
            e.points, e.forgiven_by = 0.0, ev.decision_id
        ev.forgives = tuple(e.decision_id for e in forgiven)
        return refund

    def _forgive_ids(self, st: CallerRisk, ids: list[str] | tuple[str, ...], by: str) -> float:
        """Another replica's correction: forgive the same events here."""
        if not ids:
            return 0.0
        wanted, refund = set(ids), 0.0
        for e in st.evidence:
            if e.decision_id in wanted and e.points > 0:
                refund += e.points
                e.points, e.forgiven_by = 0.0, by
        st.timeline[-1].forgives = tuple(ids)
        return refund

    def _list_burst(self, st: CallerRisk, ev: Event, wall: float) -> None:
        """Listing on many servers and sessions at once is recon; listing at session start is not."""
        # The distinct pairs are counted as entries come and go: a caller that lists all the time
        # would otherwise rebuild a set of up to 48 pairs on every list (bench/README.md).
        lists, pairs = st.lists, st.list_pairs
        pair = (ev.server, ev.session_id)
        lists.append((wall, *pair))
        pairs[pair] = pairs.get(pair, 0) + 1
        while lists and (wall - lists[0][0] > LIST_BURST_WINDOW or len(lists) > 4 * LIST_BURST_PAIRS):
            _, server, sid = lists.popleft()
            key = (server, sid)
            if pairs[key] == 1:
                del pairs[key]
            else:
                pairs[key] -= 1
        if wall - st.burst_at <= LIST_BURST_WINDOW or len(lists) < LIST_BURST_PAIRS:
            return
        if len(pairs) >= LIST_BURST_PAIRS:
            st.burst_at = wall
            ev.stage, ev.points = RECON, LIST_BURST_POINTS
            ev.reason = f"{ev.reason}; listing on {len(pairs)} servers/sessions within {LIST_BURST_WINDOW:.0f}s"

    def _volume(self, st: CallerRisk, ev: Event, wall: float) -> bool:
        """Sensitive use above risk.volumePerMinute (counted over every replica): points once a minute."""
        minute = int(wall // 60)
        if _new_minute(minute, st.volume_minute):
            st.volume_minute, st.volume_count = minute, 0
        st.volume_count += 1
        self._unreported(minute).use(st.caller, self.max_callers)
        if st.volume_count > self.volume_per_minute and st.volume_scored != minute:
            st.volume_scored = minute
            ev.points += VOLUME_POINTS
            ev.reason = f"{ev.reason}; volume above {self.volume_per_minute}/min"
            return True
        return False

    def _chain(self, st: CallerRisk, ev: Event, wall: float, *, announce: bool = True) -> dict[str, Any] | None:
        """A sensitive use: does it complete a chain on the live evidence?"""
        if not st.evidence:
            return None
        stages = chains.live(st.evidence, wall, st.chain_seq)
        if not chains.ready(stages):
            return None
        st.chain_seq = ev.seq
        return self._alert(st, wall, {**stages, EXTRACT: [ev]}, announce)

    def _alert(self, st: CallerRisk, wall: float, chain: dict[str, list[Event]],
               announce: bool = True) -> dict[str, Any]:
        shown = {s: chains.reported(chain[s], EVIDENCE_PER_STAGE) for s in ORDER}
        sessions: list[str] = []
        for s in ORDER:
            for e in shown[s]:
                if e.session_id and e.session_id not in sessions:
                    sessions.append(e.session_id)
        stages = {s: [e.as_json() for e in shown[s]] for s in ORDER}
        last = {s: chain[s][-1] for s in ORDER}
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
        return 0.0 if st is None else st.decayed(self.clock.monotonic(), self.decay)

    def chain(self, st: CallerRisk) -> list[str]:
        """The stages the caller's live evidence has reached (a chain in progress)."""
        stages = chains.live(st.evidence, self.clock.time(), st.chain_seq)
        return [s for s in (RECON, PROBE) if stages[s]]

    def summary(self, st: CallerRisk) -> dict[str, Any]:
        score = st.decayed(self.clock.monotonic(), self.decay)
        return {"caller": st.caller, "score": round(score, 2), "blocked": self.enabled and score >= self.block_at,
                "blockAt": self.block_at, "events": st.events, "sessions": list(st.sessions),
                "firstSeen": round(st.first_seen, 3), "lastSeen": round(st.last_seen, 3),
                "chain": self.chain(st), "alerts": st.alerts}

    def timeline(self, st: CallerRisk) -> dict[str, Any]:
        return {**self.summary(st), "timeline": [e.as_json() for e in st.timeline]}

    def callers(self, limit: int = 1000) -> list[CallerRisk]:
        return list(self._callers.values())[-limit:]
