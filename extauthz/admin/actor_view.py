"""The actor view model: one caller's identity, risk, alerts, MCP and user sessions and timeline,
built from the facts of `extauthz.admin.actors` (one process or merged workers). The HTML page
(`actor_page`), `/v1/callers/{id}` and `extauthz investigate` all render this one value.

Raw strings stay raw here (names, session ids and details come from clients and servers):
escaping is the renderer's job, at the edge.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

STAGES = ("recon", "probe", "extract")
VERDICTS = ("allow", "deny")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '2h', '1d' -> seconds; ValueError otherwise."""
    m = _DURATION.match(text or "")
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 2h, 1d)")
    return float(m.group(1)) * _UNIT[m.group(2)]


def _wall(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


@dataclass(frozen=True, slots=True)
class Filters:
    session: str = ""       # an MCP session id, or "-" for requests outside any session
    server: str = ""
    verdict: str = ""       # allow | deny
    stage: str = ""         # recon | probe | extract | none
    user_session: str = ""
    since: float = 0.0      # seconds back from now (0: everything kept)
    decision: str = ""      # the step to land on (highlighted, not a filter)

    @classmethod
    def from_query(cls, q: Mapping[str, str]) -> Filters:
        """From query parameters; unknown values of a closed set filter to nothing (never ignored)."""
        since = 0.0
        if q.get("since"):
            since = parse_duration(q["since"])
        return cls(session=q.get("session", ""), server=q.get("server", ""), verdict=q.get("verdict", ""),
                   stage=q.get("stage", ""), user_session=q.get("user", ""), since=since,
                   decision=q.get("decision", ""))

    def query(self, **change: str) -> dict[str, str]:
        """These filters as query parameters, with `change` applied ("" removes one)."""
        cur = {"session": self.session, "server": self.server, "verdict": self.verdict, "stage": self.stage,
               "user": self.user_session, "since": f"{self.since:g}s" if self.since else ""}
        cur.update(change)
        return {k: v for k, v in cur.items() if v}

    def active(self) -> bool:
        return bool(self.session or self.server or self.verdict or self.stage or self.user_session or self.since)


@dataclass(frozen=True, slots=True)
class Step:
    """One decision on the timeline."""

    time: float
    decision_id: str
    session_id: str
    user_session: str
    server: str
    method: str
    name: str
    verdict: str            # allow | deny | monitor (denied, let through by monitor mode)
    reason: str
    detail: str
    stage: str | None
    points: float
    score: float            # points added so far (before decay), after this step
    worker: int | None
    chain: tuple[str, ...]  # e.g. ("alert 1: recon",): this step is evidence of that alert
    on_timeline: bool       # kept in the risk timeline (else only in the decision-log ring)
    # A corrected mistake (extauthz.risk.forgive): its points were refunded, so `points` is 0 and
    # it counts nowhere in `score`; `forgiven_by` names the allowed call that corrected it.
    forgiven_by: str = ""
    forgives: tuple[str, ...] = ()   # the mistakes this allowed call corrected
    replica: str = ""       # the replica that decided it, when read from the shared actor log (--redis)


@dataclass(frozen=True, slots=True)
class Presenter:
    caller: str
    session_id: str
    time: float
    reason: str
    decision_id: str


@dataclass(frozen=True, slots=True)
class McpSession:
    session_id: str
    owner: str              # who the session is bound to ("" when no longer registered)
    user_sessions: tuple[str, ...]
    servers: tuple[str, ...]
    protocol_version: str
    first_seen: float
    last_seen: float
    requests: int           # requests the registry counted (0 when no longer registered)
    steps: int              # of them, kept on this page
    denied: int
    others: tuple[Presenter, ...]   # other callers that presented this id (hijack attempts)
    ended: float            # when its owner ended it (an allowed DELETE kept here), else 0


@dataclass(frozen=True, slots=True)
class UserSession:
    user_session: str       # the token's `sid` claim ("" when the token had none)
    mcp_sessions: tuple[str, ...]   # "" stands for requests outside any MCP session
    first_seen: float
    last_seen: float
    steps: int


@dataclass(frozen=True, slots=True)
class AlertStep:
    stage: str
    decision_id: str
    session_id: str
    reason: str
    method: str
    name: str
    time: float
    on_page: bool


@dataclass(frozen=True, slots=True)
class Alert:
    index: int
    time: float
    summary: str
    sessions: tuple[str, ...]
    points: float
    steps: tuple[AlertStep, ...]


@dataclass(frozen=True, slots=True)
class Bounds:
    timeline_length: int    # risk timeline ring per caller (per process)
    decision_ring: int      # decision-log ring (per process, all callers)
    processes: int
    kept: int               # steps kept about this caller (before filters)
    shown: int
    recorded: int           # decisions on the caller's risk timeline ever (this process or the most)
    allowed: int            # totals from the inventory: every decision, beyond any ring
    denied: int
    missing: tuple[str, ...]   # processes that did not answer (their decisions are not here)
    shared: int = 0         # with --redis: decisions per caller kept over every replica (0: none)
    partial: str = ""       # why other replicas' decisions may be missing ("" when they are not)


@dataclass(frozen=True, slots=True)
class ActorView:
    caller: str
    issuer: str
    subject: str
    client_id: str
    groups: tuple[str, ...]
    score: float
    blocked: bool
    block_at: float
    chain: tuple[str, ...]          # stages of the chain in progress
    alerts: tuple[Alert, ...]
    mcp_sessions: tuple[McpSession, ...]
    user_sessions: tuple[UserSession, ...]
    steps: tuple[Step, ...]         # filtered, oldest first
    facets: dict[str, dict[str, int]] = field(hash=False)   # filter -> value -> steps kept
    bounds: Bounds = field(hash=False, default=None)  # type: ignore[assignment]
    filters: Filters = Filters()
    generated: float = 0.0

    def as_json(self, *, timeline: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not timeline:
            d.pop("steps")
        return d


def build(facts: Mapping[str, Any], filters: Filters = Filters(), now: float | None = None) -> ActorView:
    now = time.time() if now is None else now
    caller = str(facts.get("caller", ""))
    ident = facts.get("identity") or {}
    risk = facts.get("risk") or {}
    workers = {p["prefix"]: p["worker"] for p in facts.get("parts", []) if p.get("worker") is not None}
    registry = {s["sessionId"]: s for s in facts.get("sessions", [])}

    marks: dict[str, list[str]] = {}
    alerts = []
    alert_points: dict[str, float] = {}
    for i, a in enumerate(risk.get("alerts") or [], 1):
        evidence = []
        for stage in STAGES:
            for e in a.get("stages", {}).get(stage) or []:
                marks.setdefault(e["decisionId"], []).append(f"alert {i}: {stage}")
                evidence.append((stage, e))
        if evidence:
            last = evidence[-1][1]["decisionId"]
            alert_points[last] = alert_points.get(last, 0.0) + float(a.get("points", 0.0))
        alerts.append((i, a, evidence))

    # One row per decision id: the risk timeline (stage, points) joined with the decision-log
    # ring (user session, detail, monitor, worker).
    records = {r.get("decision_id", ""): r for r in facts.get("decisions", [])}
    events = {e["decisionId"]: e for e in facts.get("timeline", [])}
    rows = []
    for did in {**records, **events}:
        e, r = events.get(did), records.get(did)
        sid = (e or {}).get("sessionId") if e else (r or {}).get("mcp_session_id", "")
        reason = (e or r or {}).get("reason", "")
        if r is not None:
            verdict = "monitor" if r.get("monitor") else str(r.get("decision", ""))
        else:
            verdict = "allow" if reason == "allowed" else "deny"
        worker = r.get("worker") if r is not None and r.get("worker") is not None else workers.get(did[12:24])
        user = r.get("user_session", "") if r is not None else (registry.get(sid or "") or {}).get("userSession", "")
        rows.append(dict(time=_wall((e or r or {}).get("time")), decision_id=did, session_id=sid or "",
                         user_session=user or "", server=(e or r or {}).get("server", ""),
                         method=(e or r or {}).get("method", ""), name=(e or r or {}).get("name", ""),
                         verdict=verdict, reason=reason, detail=str((r or {}).get("detail", "")),
                         stage=(e or {}).get("stage"), points=float((e or {}).get("points", 0.0)),
                         worker=worker, chain=tuple(marks.get(did, ())), on_timeline=e is not None,
                         forgiven_by=str((e or {}).get("forgivenBy", "")),
                         forgives=tuple(str(x) for x in (e or {}).get("forgives") or ()),
                         replica=str((r or {}).get("replica", "")) if worker is None else ""))
    rows.sort(key=lambda x: (x["time"], x["decision_id"]))
    total = 0.0
    steps = []
    for x in rows:
        total += x["points"] + alert_points.get(x["decision_id"], 0.0)
        steps.append(Step(score=round(total, 2), **x))

    facets: dict[str, dict[str, int]] = {"session": {}, "server": {}, "verdict": {}, "stage": {}, "user": {}}
    for s in steps:
        for k, v in (("session", s.session_id or "-"), ("server", s.server), ("verdict", "deny" if s.verdict ==
                     "monitor" else s.verdict), ("stage", s.stage or "none"), ("user", s.user_session or "-")):
            facets[k][v] = facets[k].get(v, 0) + 1
    shown = tuple(s for s in steps if _keep(s, filters, now))

    on_page = {s.decision_id for s in steps}
    alert_views = tuple(Alert(i, float(a.get("time", 0.0)), str(a.get("summary", "")), tuple(a.get("sessions") or ()),
                              float(a.get("points", 0.0)),
                              tuple(AlertStep(stage, e["decisionId"], e.get("sessionId", ""), e.get("reason", ""),
                                              e.get("method", ""), e.get("name", ""), _wall(e.get("time")),
                                              e["decisionId"] in on_page)
                                    for stage, e in st))
                        for i, a, st in alerts)

    mcp = _mcp_sessions(caller, steps, registry, facts.get("presented") or [])
    return ActorView(
        caller=caller, issuer=str(ident.get("issuer", "")), subject=str(ident.get("subject", "")),
        client_id=str(ident.get("clientId", "")), groups=tuple(ident.get("groups") or ()),
        score=float(risk.get("score", 0.0)), blocked=bool(risk.get("blocked")),
        block_at=float(risk.get("blockAt", 0.0)), chain=tuple(risk.get("chain") or ()), alerts=alert_views,
        mcp_sessions=mcp, user_sessions=_user_sessions(steps, mcp), steps=shown, facets=facets,
        bounds=Bounds(timeline_length=int(facts.get("timelineLength", 0)),
                      decision_ring=int((facts.get("decisionRing") or {}).get("keep", 0)),
                      processes=int((facts.get("decisionRing") or {}).get("processes", 1)), kept=len(steps),
                      shown=len(shown), recorded=int(risk.get("events", 0)), allowed=int(ident.get("allowed", 0)),
                      denied=int(ident.get("denied", 0)), missing=tuple(facts.get("missing") or ()),
                      shared=int((facts.get("shared") or {}).get("keep", 0)), partial=str(facts.get("partial") or "")),
        filters=filters, generated=now)


def _keep(s: Step, f: Filters, now: float) -> bool:
    if f.session and (s.session_id or "-") != f.session:
        return False
    if f.server and s.server != f.server:
        return False
    if f.verdict and ("deny" if s.verdict == "monitor" else s.verdict) != f.verdict:
        return False
    if f.stage and (s.stage or "none") != f.stage:
        return False
    if f.user_session and (s.user_session or "-") != f.user_session:
        return False
    return not (f.since and s.time < now - f.since)


def _mcp_sessions(caller: str, steps: list[Step], registry: dict[str, dict[str, Any]],
                  presented: list[dict[str, Any]]) -> tuple[McpSession, ...]:
    by_id: dict[str, list[Step]] = {}
    for s in steps:
        if s.session_id:
            by_id.setdefault(s.session_id, []).append(s)
    for sid, reg in registry.items():
        if reg["owner"] == caller:
            by_id.setdefault(sid, [])
    others: dict[str, list[Presenter]] = {}
    for p in presented:
        e = p["event"]
        others.setdefault(e["sessionId"], []).append(
            Presenter(p["caller"], e["sessionId"], _wall(e.get("time")), e.get("reason", ""), e.get("decisionId", "")))
    out = []
    for sid, ss in by_id.items():
        reg = registry.get(sid) or {}
        times = [x.time for x in ss] + [t for t in (reg.get("firstSeen"), reg.get("lastSeen")) if t]
        users = dict.fromkeys([x.user_session for x in ss if x.user_session] +
                              ([reg["userSession"]] if reg.get("userSession") else []))
        servers = dict.fromkeys([x.server for x in ss if x.server] + ([reg["server"]] if reg.get("server") else []))
        out.append(McpSession(sid, str(reg.get("owner", "")), tuple(users), tuple(servers),
                              str(reg.get("protocolVersion", "")), min(times) if times else 0.0,
                              max(times) if times else 0.0, int(reg.get("requests", 0)), len(ss),
                              sum(1 for x in ss if x.verdict != "allow"),
                              tuple(sorted(others.get(sid, ()), key=lambda p: p.time)),
                              max((x.time for x in ss if x.method == "DELETE" and x.verdict == "allow"), default=0.0)))
    return tuple(sorted(out, key=lambda m: m.first_seen))


def _user_sessions(steps: list[Step], mcp: tuple[McpSession, ...]) -> tuple[UserSession, ...]:
    groups: dict[str, list[Step]] = {}
    sessions: dict[str, dict[str, None]] = {}
    for s in steps:
        groups.setdefault(s.user_session, []).append(s)
        sessions.setdefault(s.user_session, {})[s.session_id] = None
    for m in mcp:
        for u in m.user_sessions:
            groups.setdefault(u, [])
            sessions.setdefault(u, {})[m.session_id] = None
    out = []
    for u, ss in groups.items():
        times = [x.time for x in ss] or [m.first_seen for m in mcp if u in m.user_sessions]
        out.append(UserSession(u, tuple(sessions[u]), min(times) if times else 0.0, max(times) if times else 0.0,
                               len(ss)))
    return tuple(sorted(out, key=lambda x: x.first_seen))
