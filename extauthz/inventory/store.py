"""Inventory state fed from the Check path (O(1) per decision, no I/O), ext_proc and drift events.
Every table is bounded and drops its least recently used record; the bounds, what each record
costs and how `--workers` merges worker inventories: docs/inventory.md."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from extauthz.core.decision import Decision
from extauthz.core.reasons import Reason
from extauthz.mcp.kinds import BY_CAPABILITY_METHOD, spec_kind
from extauthz.mcp.request import HttpRequest
from extauthz.specs.store import DriftEvent

log = logging.getLogger("extauthz.inventory")

MAX_SERVERS = 512
MAX_SHADOW_SERVERS = 256
MAX_USAGE = 10000
MAX_PROBES = 1000
MAX_URIS_PER_SERVER = 256
MAX_CALLERS = 10000
MAX_CALLERS_PER_CAPABILITY = 20
MAX_CALLERS_PER_SERVER = 20
MAX_GROUP_SETS = 16            # distinct caller group sets that used one capability (for suggest-policy)
MAX_SUBJECTS = 16              # group-less callers that used one capability
MAX_SEEN = 8                   # authorities, paths, protocol versions per server
MAX_METHODS = 32
MAX_DRIFT = 256
MAX_NAME = 256                 # longer names (attacker-chosen) are kept truncated

_PROBE_REASONS = frozenset({Reason.UNKNOWN_CAPABILITY, Reason.MALFORMED_REQUEST})


def _clip(text: str) -> str:
    return text if len(text) <= MAX_NAME else text[: MAX_NAME - 1] + "\u2026"


def _bounded_add(d: dict[str, Any], key: str, value: Any = None, cap: int = MAX_SEEN) -> None:
    if key in d or len(d) < cap:
        d[key] = value


def _touch_recent(d: dict[str, float], key: str, when: float, cap: int) -> None:
    """Keep `d` as the last `cap` keys by use (insertion order = recency)."""
    if key in d:
        del d[key]
    d[key] = when
    if len(d) > cap:
        del d[next(iter(d))]


@dataclass(slots=True)
class ServerSeen:
    """Traffic to one server (a policy server by name, or `shadow:<authority><path>`)."""

    first: float
    last: float = 0.0
    requests: int = 0
    allowed: int = 0
    denied: int = 0
    authorities: dict[str, None] = field(default_factory=dict)
    paths: dict[str, None] = field(default_factory=dict)
    versions: dict[str, None] = field(default_factory=dict)
    methods: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)      # denials by reason
    callers: dict[str, float] = field(default_factory=dict)    # last callers -> last request
    uris: int = 0                                                # concrete resource URIs held

    def to_json(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "requests": self.requests, "allowed": self.allowed,
                "denied": self.denied, "authorities": list(self.authorities), "paths": list(self.paths),
                "versions": list(self.versions), "methods": dict(self.methods), "reasons": dict(self.reasons),
                "callers": dict(self.callers)}

    def merge(self, o: dict[str, Any]) -> None:
        self.first = min(self.first, o["first"]) if self.requests else o["first"]
        self.last = max(self.last, o["last"])
        self.requests += o["requests"]
        self.allowed += o["allowed"]
        self.denied += o["denied"]
        seen: tuple[tuple[Any, dict[str, None]], ...] = (
            (o["authorities"], self.authorities), (o["paths"], self.paths), (o["versions"], self.versions))
        for src, dst in seen:
            for v in src:
                _bounded_add(dst, str(v))
        counted: tuple[tuple[Any, dict[str, int]], ...] = ((o["methods"], self.methods), (o["reasons"], self.reasons))
        for src, counts in counted:
            for k, n in src.items():
                if k in counts or len(counts) < MAX_METHODS:
                    counts[k] = counts.get(k, 0) + int(n)
        for k, t in sorted(o["callers"].items(), key=lambda kv: kv[1]):
            if t >= self.callers.get(k, 0.0):
                _touch_recent(self.callers, k, t, MAX_CALLERS_PER_SERVER)


@dataclass(slots=True)
class Usage:
    """How one capability (as named in the calls: a tool, prompt or concrete resource URI) was used."""

    first: float
    last: float = 0.0
    allowed: int = 0
    denied: int = 0
    last_allowed: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    callers: dict[str, float] = field(default_factory=dict)            # caller key -> last use
    group_sets: dict[frozenset[str], int] = field(default_factory=dict)  # allowed uses by caller groups
    subjects: dict[str, int] = field(default_factory=dict)              # allowed uses, callers without groups
    responses: int = 0
    response_bytes: int = 0
    findings: dict[str, int] = field(default_factory=dict)              # sensitive-data type -> count

    def to_json(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "allowed": self.allowed, "denied": self.denied,
                "lastAllowed": self.last_allowed, "reasons": dict(self.reasons), "callers": dict(self.callers),
                "groupSets": [[sorted(g), n] for g, n in self.group_sets.items()], "subjects": dict(self.subjects),
                "responses": self.responses, "responseBytes": self.response_bytes, "findings": dict(self.findings)}

    def merge(self, o: dict[str, Any]) -> None:
        self.first = min(self.first, o["first"]) if (self.allowed or self.denied or self.responses) else o["first"]
        self.last = max(self.last, o["last"])
        self.allowed += o["allowed"]
        self.denied += o["denied"]
        self.last_allowed = max(self.last_allowed, o["lastAllowed"])
        for k, n in o["reasons"].items():
            self.reasons[k] = self.reasons.get(k, 0) + int(n)
        for k, t in sorted(o["callers"].items(), key=lambda kv: kv[1]):
            if t >= self.callers.get(k, 0.0):
                _touch_recent(self.callers, k, t, MAX_CALLERS_PER_CAPABILITY)
        for groups, n in o["groupSets"]:
            g = frozenset(groups)
            if g in self.group_sets or len(self.group_sets) < MAX_GROUP_SETS:
                self.group_sets[g] = self.group_sets.get(g, 0) + int(n)
        for k, n in o["subjects"].items():
            if k in self.subjects or len(self.subjects) < MAX_SUBJECTS:
                self.subjects[k] = self.subjects.get(k, 0) + int(n)
        self.responses += o["responses"]
        self.response_bytes += o["responseBytes"]
        for k, n in o["findings"].items():
            if k in self.findings or len(self.findings) < MAX_METHODS:
                self.findings[k] = self.findings.get(k, 0) + int(n)


@dataclass(slots=True)
class CallerSeen:
    key: str
    issuer: str
    subject: str
    client_id: str
    groups: frozenset[str]
    first: float
    last: float = 0.0
    allowed: int = 0
    denied: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "subject": self.subject, "clientId": self.client_id,
                "groups": sorted(self.groups), "first": self.first, "last": self.last,
                "allowed": self.allowed, "denied": self.denied}


@dataclass(frozen=True, slots=True)
class DriftRecord:
    time: float
    server: str
    kind: str
    name: str
    change: str
    quarantined: bool

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "server": self.server, "kind": self.kind, "name": self.name,
                "change": self.change, "quarantined": self.quarantined}


UsageKey = tuple[str, str, str]       # (server, spec kind, name or URI as called)


class Inventory:
    """Servers, capability use, callers and drift seen by this process (see the module doc)."""

    def __init__(self) -> None:
        self.servers: OrderedDict[str, ServerSeen] = OrderedDict()
        self.shadow: OrderedDict[str, ServerSeen] = OrderedDict()
        self.usage: OrderedDict[UsageKey, Usage] = OrderedDict()
        self.probes: OrderedDict[UsageKey, Usage] = OrderedDict()
        self.callers: OrderedDict[str, CallerSeen] = OrderedDict()
        self.drift: deque[DriftRecord] = deque(maxlen=MAX_DRIFT)
        self.evicted = 0          # records dropped by a bound (shown in views: "the view is partial")
        self.errors = 0           # decisions that could not be recorded (a bug: see the log)
        self._pending: dict[tuple[Any, ...], list[Any]] = {}     # key -> [count, decision, request]
        self.policy_doc_cache: tuple[str, dict[str, Any] | None] | None = None

    # -- the Check path: O(1) --------------------------------------------------------------------
    def record(self, d: Decision, http: HttpRequest) -> None:
        """Called once per Check with the decision (allowed or not). Never raises: the Check has
        been decided already, and an inventory bug must not turn it into a gRPC error.

        Decisions of one shape are aggregated here and recorded, with their count, by `flush`:
        App.record_pending calls it after each batch of answered Checks, and every view calls it
        first."""
        c = d.caller
        # Everything the record depends on: identical decisions within one flush are recorded once,
        # with their count (at 1,000 Checks/s most are repeats of a few shapes).
        key: tuple[Any, ...] = (d.server, d.method, d.name, d.reason, c.key if c is not None else "",
                                c.groups if c is not None else None, d.protocol_version, http.method,
                                http.authority, http.path)
        pending = self._pending
        try:
            hit = pending.get(key)
        except TypeError:           # an unhashable part (never from the decision core): on its own
            key, hit = ("unhashable", id(d)), None
        if hit is not None:
            hit[0] += 1
            return
        pending[key] = [1, d, http]

    def flush(self) -> None:
        """Record every queued decision."""
        pending, self._pending = self._pending, {}
        for n, d, http in pending.values():
            try:
                self._record(d, http, n)
            except Exception:       # noqa: BLE001 - counted and logged once; the decision stands
                self.errors += 1
                if self.errors == 1:
                    log.exception("inventory could not record a decision (further errors are only counted)")

    def _record(self, d: Decision, http: HttpRequest, n: int = 1) -> None:
        name = d.server
        if not name:
            return
        if len(name) > MAX_NAME:
            name = _clip(name)          # shadow:<authority><path>: both chosen by the client
        now = time.time()
        s = self._server(name, now)
        s.last = now
        s.requests += n
        allowed = d.reason is Reason.ALLOWED
        if allowed:
            s.allowed += n
        else:
            s.denied += n
            r = d.reason.value
            s.reasons[r] = s.reasons.get(r, 0) + n
        authorities = s.authorities
        if http.authority not in authorities and len(authorities) < MAX_SEEN:
            authorities[_clip(http.authority)] = None
        path = http.path
        if path not in s.paths and len(s.paths) < MAX_SEEN:
            path = path.split("?", 1)[0]
            if path not in s.paths:
                s.paths[_clip(path)] = None
        if d.protocol_version and d.protocol_version not in s.versions and len(s.versions) < MAX_SEEN:
            s.versions[_clip(d.protocol_version)] = None
        method = d.method or http.method
        if method in s.methods:
            s.methods[method] += n
        elif len(s.methods) < MAX_METHODS:
            s.methods[_clip(method)] = n
        c = d.caller
        key = ""
        if c is not None:
            rec = self.callers.get(c.key)
            if rec is None:
                rec = self.callers[c.key] = CallerSeen(c.key, c.issuer, c.subject, c.client_id, c.groups, now)
                if len(self.callers) > MAX_CALLERS:
                    self.callers.popitem(last=False)
                    self.evicted += 1
            else:
                self.callers.move_to_end(c.key)
                if rec.groups != c.groups:
                    rec.groups = c.groups
            rec.last = now
            if allowed:
                rec.allowed += n
            else:
                rec.denied += n
            key = rec.key           # the caller table's string: usage records share it
            _touch_recent(s.callers, key, now, MAX_CALLERS_PER_SERVER)
        k = BY_CAPABILITY_METHOD.get(method)
        if k is None or not d.name or type(d.name) is not str:
            return
        kind = k.value
        u = self._usage((name, kind, _clip(d.name)), now, probe=d.reason in _PROBE_REASONS)
        u.last = now
        if allowed:
            u.allowed += n
            u.last_allowed = now
            if c is not None:
                if c.groups:
                    g = c.groups
                    if g in u.group_sets:
                        u.group_sets[g] += n
                    elif len(u.group_sets) < MAX_GROUP_SETS:
                        u.group_sets[g] = n
                elif c.subject in u.subjects or len(u.subjects) < MAX_SUBJECTS:
                    u.subjects[c.subject] = u.subjects.get(c.subject, 0) + n
        else:
            u.denied += n
            r = d.reason.value
            u.reasons[r] = u.reasons.get(r, 0) + n
        if key:
            _touch_recent(u.callers, key, now, MAX_CALLERS_PER_CAPABILITY)

    def _server(self, name: str, now: float) -> ServerSeen:
        table = self.shadow if name.startswith("shadow:") else self.servers
        s = table.get(name)
        if s is None:
            s = table[name] = ServerSeen(now)
            if table is self.shadow:
                if len(table) > MAX_SHADOW_SERVERS:      # shadow traffic names no capability:
                    table.popitem(last=False)            # nothing else to forget
                    self.evicted += 1
            elif len(table) > MAX_SERVERS:               # policy servers: only a policy this big
                self._forget_server(table.popitem(last=False)[0])
                self.evicted += 1
        else:
            table.move_to_end(name)
        return s

    def _forget_server(self, name: str) -> None:
        for table in (self.usage, self.probes):
            for k in [k for k in table if k[0] == name]:    # rare: only when a server is evicted
                del table[k]

    def _usage(self, key: UsageKey, now: float, *, probe: bool) -> Usage:
        table = self.probes if probe else self.usage
        u = table.get(key)
        if u is not None:
            table.move_to_end(key)
            return u
        if not probe and key[1] == "resources":
            # Concrete URIs (crm://customers/c-1, c-2, ...) are unbounded: each server keeps a
            # bounded number; past it, reads of new URIs are counted under the server's overflow.
            s = self.servers.get(key[0]) or self.shadow.get(key[0])
            if s is not None:
                if s.uris >= MAX_URIS_PER_SERVER:
                    key = (key[0], "resources", "")
                    u = table.get(key)
                    if u is not None:
                        table.move_to_end(key)
                        return u
                s.uris += 1
        u = table[key] = Usage(now)
        if len(table) > (MAX_PROBES if probe else MAX_USAGE):
            old = table.popitem(last=False)[0]
            self.evicted += 1
            if old[1] == "resources" and (s := self.servers.get(old[0]) or self.shadow.get(old[0])) is not None:
                s.uris = max(0, s.uris - 1)
        return u

    # -- other feeds ------------------------------------------------------------------------------
    def record_drift(self, ev: DriftEvent) -> None:
        """A spec drift event (changed/added/removed capability), kept in a bounded ring."""
        self.drift.append(DriftRecord(time.time(), ev.server, ev.kind, ev.name, ev.change, ev.quarantined))

    def record_approval(self, server: str, kind: str, name: str) -> None:
        """An operator approved a quarantined capability (`/v1/approve`): part of its drift history."""
        self.drift.append(DriftRecord(time.time(), server, spec_kind(kind), name, "approved", False))

    def record_response(self, server: str, kind: str, name: str, findings: dict[str, int], size: int) -> None:
        """What a response to a capability call carried: counts of sensitive-data types, never values."""
        now = time.time()
        u = self._usage((server, spec_kind(kind), _clip(name)), now, probe=False)
        u.responses += 1
        u.response_bytes += max(0, int(size))
        for t, n in findings.items():
            if t in u.findings or len(u.findings) < MAX_METHODS:
                u.findings[t] = u.findings.get(t, 0) + int(n)

    # -- --workers: ship and merge ----------------------------------------------------------------
    def drain(self) -> dict[str, Any] | None:
        """Everything recorded since the last drain, as JSON-able data; resets the accumulator
        (drift stays: the supervisor detects drift itself). None when nothing happened."""
        self.flush()
        if not (self.servers or self.shadow or self.usage or self.probes or self.callers):
            return None
        out = {
            "servers": {k: v.to_json() for k, v in (*self.servers.items(), *self.shadow.items())},
            "usage": [[*k, v.to_json()] for k, v in self.usage.items()],
            "probes": [[*k, v.to_json()] for k, v in self.probes.items()],
            "callers": [[k, v.to_json()] for k, v in self.callers.items()],
        }
        self.servers, self.shadow = OrderedDict(), OrderedDict()
        self.usage, self.probes, self.callers = OrderedDict(), OrderedDict(), OrderedDict()
        return out

    def apply(self, change: Any) -> None:
        """A worker's InventoryDelta (extauthz.shared.changes): added into this inventory."""
        self.merge(change.delta)

    def merge(self, delta: dict[str, Any] | None) -> None:
        """Add a worker's `drain()` into this inventory (the supervisor's)."""
        if not delta:
            return
        try:
            self._merge(delta)
        except (KeyError, TypeError, ValueError, AttributeError) as e:    # never take the relay down
            log.error("inventory report from a worker ignored: %r", e)

    def _merge(self, delta: dict[str, Any]) -> None:
        for name, o in delta.get("servers", {}).items():
            s = self._server(str(name), float(o["first"]))
            s.merge(o)
        for probe, rows in ((False, delta.get("usage", [])), (True, delta.get("probes", []))):
            for server, kind, name, o in rows:
                self._usage((str(server), str(kind), str(name)), float(o["first"]), probe=probe).merge(o)
        for key, o in delta.get("callers", []):
            rec = self.callers.get(key)
            if rec is None:
                rec = self.callers[key] = CallerSeen(key, o["issuer"], o["subject"], o["clientId"],
                                                     frozenset(o["groups"]), o["first"])
                if len(self.callers) > MAX_CALLERS:
                    self.callers.popitem(last=False)
            else:
                self.callers.move_to_end(key)
            if o["last"] >= rec.last:
                rec.groups = frozenset(o["groups"])
            rec.first = min(rec.first, o["first"])
            rec.last = max(rec.last, o["last"])
            rec.allowed += o["allowed"]
            rec.denied += o["denied"]
