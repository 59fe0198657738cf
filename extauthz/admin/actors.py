"""Where the actor view (`/callers/{id}`, `extauthz investigate`) gets its data.

`ActorSource` is the whole interface: `find(query)` (which callers a subject, client id, MCP
session id, user session id or decision id points at) and `facts(caller)` (what is kept about
that caller). `LocalActors` reads this process. The supervisor of `serve --workers N` asks every
worker the same two questions over the bus and merges the answers with `merge`
(`extauthz.workers.supervisor.WorkerActors`); a shared store (Redis, a later issue) implements the
same two methods. Facts are plain JSON (they cross the bus), gathered from the engine's public
read methods only: risk summary and timeline, the session registry, the decision-log ring, the
inventory's caller record.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from extauthz.core.decision import new_decision_id

if TYPE_CHECKING:
    from extauthz.app import App

DECISION_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_HITS = 50
CHUNK = 500        # callers or sessions read between two turns of the event loop


@dataclass(frozen=True, slots=True)
class Hit:
    """A caller a query points at, and how (`via`): caller, subject, client, session, userSession,
    decision (then `decision_id` is the step to land on)."""

    caller: str
    via: str
    decision_id: str = ""

    def as_json(self) -> dict[str, str]:
        return {"caller": self.caller, "via": self.via, "decisionId": self.decision_id}


class ActorSource(Protocol):
    async def find(self, query: str) -> list[Hit]: ...

    async def facts(self, caller: str) -> dict[str, Any]: ...


class LocalActors:
    """This process's view (one process, or one worker answering the supervisor)."""

    def __init__(self, app: App, worker: int | None = None) -> None:
        self.app, self.worker = app, worker

    async def find(self, query: str) -> list[Hit]:
        return await find_async(self.app, query)

    async def facts(self, caller: str) -> dict[str, Any]:
        return await gather_async(self.app, caller, self.worker)


def process_prefix() -> str:
    """The per-process part of this process's decision ids (tells which worker made a decision)."""
    return new_decision_id()[12:24]


def caller_key(rec: dict[str, Any]) -> str:
    c = rec.get("caller")
    if not isinstance(c, dict):
        return ""
    return f"{c.get('iss', '')}|{c.get('sub', '')}|{c.get('client_id', '')}"


def _split(key: str) -> list[str]:
    parts = key.split("|")
    return parts if len(parts) == 3 else ["", key, ""]


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def _drive(steps: Iterator[None]) -> None:
    for _ in steps:
        pass


async def _drive_async(steps: Iterator[None]) -> None:
    """Between chunks the event loop runs other work (Checks, in a single process): a search
    over 10,000 callers is many short pauses, not one long one."""
    for _ in steps:
        await asyncio.sleep(0)


def find(app: App, query: str) -> list[Hit]:
    """Every caller `query` points at, most specific first (one caller per hit)."""
    hits: dict[str, Hit] = {}
    _drive(_find(app, query, hits))
    return list(hits.values())


async def find_async(app: App, query: str) -> list[Hit]:
    hits: dict[str, Hit] = {}
    await _drive_async(_find(app, query, hits))
    return list(hits.values())


def _find(app: App, query: str, hits: dict[str, Hit]) -> Iterator[None]:
    q = query.strip()
    if not q:
        return

    def add(caller: str, via: str, decision_id: str = "") -> None:
        if caller and caller not in hits and len(hits) < MAX_HITS:
            hits[caller] = Hit(caller, via, decision_id)

    risk, inventory = app.risk, app.inventory
    if risk.get(q) is not None or q in inventory.callers:
        add(q, "caller")
    ring = list(app.decisions.recent)
    if DECISION_ID.match(q):
        for rec in ring:
            if rec.get("decision_id") == q:
                add(caller_key(rec), "decision", q)
        if not hits:
            # Not in the decision ring: the timelines. A decision id starts with its time in ms,
            # so only callers active around then are read.
            at = int(q[:12], 16) / 1000.0
            for chunk in _chunks(risk.callers(limit=risk.max_callers)):
                for st in chunk:
                    s = risk.summary(st)
                    if s["firstSeen"] - 1 <= at <= s["lastSeen"] + 1 and any(
                            e["decisionId"] == q for e in risk.timeline(st)["timeline"]):
                        add(st.caller, "decision", q)
                yield
    for chunk in _chunks(app.sessions.snapshot(limit=app.sessions.max_sessions)):
        for s in chunk:
            if s.session_id == q:
                add(s.caller, "session")
            elif s.user_session == q:
                add(s.caller, "userSession")
        yield
    for rec in ring:
        if rec.get("mcp_session_id") == q:
            add(caller_key(rec), "session")
        elif rec.get("user_session") == q:
            add(caller_key(rec), "userSession")
    for chunk in _chunks(risk.callers(limit=risk.max_callers)):
        for st in chunk:
            _, sub, client = _split(st.caller)
            if sub == q:
                add(st.caller, "subject")
            elif client == q:
                add(st.caller, "client")
            elif q in risk.summary(st)["sessions"]:
                add(st.caller, "session")
        yield
    for key, c in list(inventory.callers.items()):
        if c.subject == q:
            add(key, "subject")
        elif c.client_id == q:
            add(key, "client")


def gather(app: App, caller: str, worker: int | None = None) -> dict[str, Any]:
    """What this process keeps about one caller, as JSON (see the module doc)."""
    out: dict[str, Any] = {}
    _drive(_gather(app, caller, worker, out))
    return out


async def gather_async(app: App, caller: str, worker: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    await _drive_async(_gather(app, caller, worker, out))
    return out


def _gather(app: App, caller: str, worker: int | None, out: dict[str, Any]) -> Iterator[None]:
    risk = app.risk
    st = risk.get(caller)
    summary = risk.timeline(st) if st is not None else None
    timeline = summary.pop("timeline") if summary else []
    used = set(summary["sessions"]) if summary else set()
    used.update(e["sessionId"] for e in timeline if e["sessionId"])
    mono_to_wall = time.time() - time.monotonic()

    sessions: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(app.sessions.snapshot(limit=app.sessions.max_sessions)):
        for s in chunk:
            if s.caller == caller or s.session_id in used:
                sessions[s.session_id] = {
                    "sessionId": s.session_id, "owner": s.caller, "server": s.server, "userSession": s.user_session,
                    "clientId": s.client_id, "protocolVersion": s.protocol_version, "requests": s.requests,
                    "firstSeen": round(s.first_seen + mono_to_wall, 3),
                    "lastSeen": round(s.last_seen + mono_to_wall, 3)}
        yield
    mine = {sid for sid, s in sessions.items() if s["owner"] == caller} | used

    decisions: list[dict[str, Any]] = []
    presented: dict[tuple[str, str], dict[str, Any]] = {}
    ring = app.decisions.recent
    for rec in ring:
        who = caller_key(rec)
        if worker is not None:
            rec.setdefault("worker", worker)
        if who == caller:
            decisions.append(rec)
        elif rec.get("mcp_session_id") in mine:
            presented[(who, rec.get("decision_id", ""))] = {"caller": who, "event": _event_of(rec)}

    # Others who presented this caller's session ids (hijack attempts): their risk timelines
    # name the session ids they used.
    for chunk in _chunks(risk.callers(limit=risk.max_callers) if mine else []):
        for other in chunk:
            if other.caller == caller or not mine.intersection(risk.summary(other)["sessions"]):
                continue
            for e in risk.timeline(other)["timeline"]:
                if e["sessionId"] in mine:
                    presented[(other.caller, e["decisionId"])] = {"caller": other.caller, "event": e}
        yield

    seen = app.inventory.callers.get(caller)
    iss, sub, client = _split(caller)
    identity = {"issuer": iss, "subject": sub, "clientId": client, "groups": [], "allowed": 0, "denied": 0}
    if seen is not None:      # its own fields: a subject may itself contain "|"
        identity.update(issuer=seen.issuer, subject=seen.subject, clientId=seen.client_id, groups=sorted(seen.groups),
                        allowed=seen.allowed, denied=seen.denied, first=seen.first, last=seen.last)
    out.update({"caller": caller, "known": st is not None or seen is not None or bool(decisions),
            "parts": [{"worker": worker, "prefix": process_prefix()}], "missing": [],
            "identity": identity, "risk": summary, "timeline": timeline, "timelineLength": risk.timeline_len,
            "decisions": decisions, "decisionRing": {"held": len(ring), "keep": ring.keep, "processes": 1},
            "sessions": list(sessions.values()), "presented": list(presented.values())})


def _event_of(rec: dict[str, Any]) -> dict[str, Any]:
    """A decision record in the shape of a timeline event (no stage: the ring does not know it)."""
    return {"time": rec.get("time"), "decisionId": rec.get("decision_id", ""),
            "sessionId": rec.get("mcp_session_id", ""), "server": rec.get("server", ""),
            "method": rec.get("method", ""), "name": rec.get("name", ""), "reason": rec.get("reason", ""),
            "stage": None, "points": 0.0}


def merge(parts: list[dict[str, Any]], missing: list[str] | None = None) -> dict[str, Any]:
    """The facts of several processes about one caller as one (deduplicated by decision id)."""
    known = [p for p in parts if p.get("known")]
    if not parts:
        return {"caller": "", "known": False, "parts": [], "missing": list(missing or [])}
    base = dict(known[0] if known else parts[0])
    out: dict[str, Any] = {**base, "known": bool(known), "parts": [x for p in parts for x in p["parts"]],
                           "missing": [*(m for p in parts for m in p.get("missing", [])), *(missing or [])]}
    ident = dict(base["identity"])
    for p in known[1:]:
        o = p["identity"]
        ident["groups"] = sorted(set(ident["groups"]) | set(o["groups"]))
        # The supervisor's inventory already sums its workers' reports (a worker keeps only
        # what it has not reported yet), so the largest count is the total, at most a tick late.
        ident["allowed"] = max(ident["allowed"], o["allowed"])
        ident["denied"] = max(ident["denied"], o["denied"])
    out["identity"] = ident
    risks = [p["risk"] for p in known if p.get("risk")]
    if risks:
        top = max(risks, key=lambda r: r["score"])
        alerts: dict[tuple[str, ...], dict[str, Any]] = {}
        for r in risks:
            for a in r["alerts"]:
                key = tuple(e["decisionId"] for s in ("recon", "probe", "extract") for e in a["stages"].get(s, ()))
                alerts.setdefault(key, a)
        out["risk"] = {**top, "alerts": sorted(alerts.values(), key=lambda a: a["time"]),
                       "events": max(r["events"] for r in risks),
                       "sessions": list(dict.fromkeys(s for r in risks for s in r["sessions"]))}
    out["timeline"] = _dedup([e for p in known for e in p["timeline"]], "decisionId")
    out["decisions"] = _dedup([d for p in known for d in p["decisions"]], "decision_id")
    sessions: dict[str, dict[str, Any]] = {}
    for p in known:
        for s in p["sessions"]:
            have = sessions.get(s["sessionId"])
            if have is None:
                sessions[s["sessionId"]] = dict(s)
            else:
                have["firstSeen"] = min(have["firstSeen"], s["firstSeen"])
                have["lastSeen"] = max(have["lastSeen"], s["lastSeen"])
                have["requests"] = max(have["requests"], s["requests"])
                have["protocolVersion"] = have["protocolVersion"] or s["protocolVersion"]
    out["sessions"] = list(sessions.values())
    seen_p: set[tuple[str, str]] = set()
    out["presented"] = []
    for p in known:
        for x in p["presented"]:
            k = (x["caller"], x["event"]["decisionId"])
            if k not in seen_p:
                seen_p.add(k)
                out["presented"].append(x)
    rings = [p["decisionRing"] for p in parts]
    out["decisionRing"] = {"held": max(r["held"] for r in rings), "keep": max(r["keep"] for r in rings),
                           "processes": len(rings)}
    return out


def _dedup(items: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for it in items:
        k = it.get(key) or ""
        have = seen.get(k)
        # a correction is relayed after the mistake: the copy that knows it was forgiven is newer
        if have is None or ("worker" not in have and "worker" in it) or (
                "forgivenBy" in it and "forgivenBy" not in have):
            seen[k] = it
    return list(seen.values())
