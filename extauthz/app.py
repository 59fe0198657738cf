"""The service's state and the Check pipeline around the pure decision core.

`App` owns the policy holder, learned specs, sessions, validators, metrics and the decision log.
A policy reload swaps one `Context` object; a Check reads whichever context was current when it
started, so no request ever sees half a policy.
"""

from __future__ import annotations

import logging
import time
from typing import IO, Any

import orjson

from extauthz.core.answers import denial_body
from extauthz.core.decide import Context, decide
from extauthz.core.decision import Decision, new_decision_id
from extauthz.core.reasons import Reason
from extauthz.decisionlog import DecisionLog
from extauthz.identity.caller import Caller
from extauthz.identity.sources import BadIdentity, resolve_caller
from extauthz.inventory.classify import classify_capability, scan_response
from extauthz.inventory.store import Inventory
from extauthz.mcp.request import HttpRequest
from extauthz.metrics import Metrics
from extauthz.policy.holder import PolicyHolder
from extauthz.policy.listview import visible_to
from extauthz.policy.model import Policy, default_policy, load_policy
from extauthz.risk.engine import RiskEngine
from extauthz.risk.stages import EXTRACT, USE_METHODS, stage_of
from extauthz.sessions.registry import SessionRegistry
from extauthz.sessions.visibility import Visibility
from extauthz.specs.learn import LIST_KINDS, OBSERVE_METHODS, LearnEntry, Learner, View
from extauthz.specs.store import DriftEvent, SpecStore
from extauthz.specs.validators import ValidatorCache

log = logging.getLogger("extauthz")

OBSERVE_FIRST = 3                # sampled: the first calls of each capability ...
OBSERVE_EVERY = 200              # ... then 1 in this many ...
OBSERVE_PER_SECOND = 10          # ... and at most this many observed calls a second in all
OBSERVE_RISKY_PER_SECOND = 50    # calls of callers with a risk score: every one, up to this rate
SCAN_BYTES = 16 * 1024           # of string data scanned per observed response (sizes are counted whole)


class App:
    def __init__(self, policy_path: str | None, *, decision_out: IO[bytes] | None = None,
                 background_log: bool = False) -> None:
        self.specs = SpecStore(on_drift=self._on_drift)
        self.sessions = SessionRegistry()
        self.validators = ValidatorCache()
        self.inventory = Inventory()
        self.visibility = Visibility()
        self.risk = RiskEngine()
        self.risk.on_alert = self._on_alert
        self._sensitive: dict[tuple[str, str, str], bool] = {}     # (server, method, name) -> sensitive
        self._sensitive_version = -1
        self._observed: dict[tuple[str, str], int] = {}            # sampling counters for observed calls
        self._observe_budget = [0, 0, 0]                            # [second, sampled, risky] observed
        self.discovery: Any = None      # extauthz.discovery: set by `serve` when servers have an upstream
        self.metrics = Metrics(self.specs.servers, lambda: len(self.sessions))
        self.decisions = DecisionLog(decision_out, background=background_log)
        self.learner = Learner(self.specs, lambda: self.ctx.policy.defaults.on_drift if self.ctx else "quarantine",
                               on_session=self._on_session)
        self.learner.list_view = self._list_view
        self.learner.on_listed = self.visibility.listed_page
        self.learner.on_result = self._on_result
        self.ctx: Context | None = None
        self.draining = False
        self.last_check = 0.0      # monotonic time of the last Check: the drain waits for quiet
        self._pinned: dict[str, str] = {}
        if policy_path is None:
            self.holder = PolicyHolder("<embedded>", policy=default_policy())
        else:
            self.holder = PolicyHolder(policy_path, on_reload=self._on_reload)
            self.holder.reload()
        if self.holder.policy is not None and self.ctx is None:
            self._install(self.holder.policy)

    # -- policy ---------------------------------------------------------------------------------
    def _on_reload(self, result: str) -> None:
        self.metrics.reloads.labels(result).inc()
        policy = self.holder.policy
        if result == "ok" and policy is not None and (self.ctx is None or self.ctx.policy is not policy):
            self._install(policy)

    def _install(self, policy: Policy) -> None:
        self._pin_specs(policy)
        self.sessions.idle_ttl = float(policy.sessions.idle_ttl_seconds)
        self.sessions.max_sessions = policy.sessions.max_sessions
        r = policy.risk
        self.risk.configure(block_at=r.block_at, decay_per_minute=r.decay_per_minute, enabled=r.enabled,
                            volume_per_minute=r.volume_per_minute, timeline=r.timeline_length,
                            max_callers=r.max_callers)
        self.risk.calls_per_minute = r.calls_per_minute
        self._sensitive.clear()
        self.ctx = Context(policy, self.specs, self.sessions, self.validators, policy.limits,
                           visibility=self.visibility, risk=self.risk if r.enabled else None)
        log.info("policy installed: %s (%s, %d servers)", policy.source, policy.digest[:12], len(policy.servers))

    def _pin_specs(self, policy: Policy) -> None:
        for server in policy.servers:
            path = server.spec_file
            if not path:
                continue
            try:
                with open(path, "rb") as f:
                    data = f.read()
                digest = str(hash(data))
                if self._pinned.get(server.name) == digest:
                    continue
                snapshot = orjson.loads(data)
                if isinstance(snapshot, dict) and "servers" in snapshot and isinstance(snapshot["servers"], list):
                    snapshot = snapshot["servers"][0] if snapshot["servers"] else {}
                if isinstance(snapshot, dict) and isinstance(snapshot.get("spec"), dict):
                    snapshot = snapshot["spec"]
                self.specs.pin(server.name, snapshot if isinstance(snapshot, dict) else {})
                self._pinned[server.name] = digest
            except (OSError, orjson.JSONDecodeError) as e:
                log.error("pinned spec for %s unreadable (%s): keeping what we had", server.name, e)

    def _on_session(self, server: str, caller: str, session_id: str) -> None:
        """The server issued a session id on initialize: bind it to the caller who asked for it, so
        that nobody else can use it even before its owner's first follow-up request."""
        if caller and caller != "-":
            self.sessions.touch(session_id, caller, server)

    def _on_alert(self, alert: dict[str, Any]) -> None:
        self.metrics.risk_alerts.inc()
        log.warning("risk alert for %s: %s (sessions %s)", alert["caller"], alert["summary"], ", ".join(alert["sessions"]))

    def _list_view(self, server: str, view: View) -> Any:
        """keep(kind, item) for a caller's lists, or None when lists are not filtered."""
        ctx = self.ctx
        if ctx is None or ctx.policy.monitor or not ctx.policy.defaults.filter_lists:
            return None
        sp = ctx.policy.server_by_name(server)
        if sp is None:
            return None
        return visible_to(sp, Caller(view.issuer, view.subject, view.client_id, frozenset(view.groups), {}))

    def _on_result(self, server: str, caller: str, session_id: str, entry: LearnEntry,
                   result: dict[str, Any] | None, size: int) -> None:
        """An observed call's result (ext_proc): scanned for sensitive data, then recorded.

        The scan runs inline on the event loop, bounded to `SCAN_BYTES` of strings (2-8 ms at
        worst; observation itself is rate-bounded). A worker thread was tried first: under load
        its GIL hand-offs stalled Checks far longer than the scan itself (bench/through_envoy.py:
        added p99 at 1,000/s went from ~3 ms to 11-33 ms; inline it is back to ~3 ms)."""
        findings = scan_response(result, max_bytes=SCAN_BYTES) if result is not None else {}
        self._record_result(server, caller, session_id, entry, findings, size)

    def _record_result(self, server: str, caller: str, session_id: str, entry: LearnEntry,
                       findings: dict[str, int], size: int) -> None:
        kind = OBSERVE_METHODS[entry.method]
        self.inventory.record_response(server, kind, entry.name, findings, size)
        if not caller or caller == "-" or self.ctx is None:
            return
        large = size >= self.ctx.policy.risk.large_response_bytes
        sensitive = {k: n for k, n in findings.items() if k.split(".", 1)[0] in ("pii", "secret", "financial", "health")}
        if large or sensitive:
            what = ", ".join(f"{n} {k}" for k, n in sorted(sensitive.items())[:5])
            why = f"response of {size} bytes" + (f" carrying {what}" if what else "")
            alert = self.risk.record(caller, decision_id="", session_id=session_id, server=server, method=entry.method,
                                     name=entry.name, reason=why, stage=EXTRACT, points=0.0)
            if alert is not None:
                self.decisions.emit_alert(alert)

    def _on_drift(self, ev: DriftEvent) -> None:
        self.metrics.drift.labels(ev.server).inc()
        self.inventory.record_drift(ev)

    ready_check: Any = None      # the supervisor of --workers adds "and every worker is ready"

    @property
    def ready(self) -> bool:
        ok = self.ctx is not None and not self.draining
        return ok and (self.ready_check is None or bool(self.ready_check()))

    # -- the Check path -------------------------------------------------------------------------
    def check(self, http: HttpRequest) -> Decision:
        """Decide, then record. Never raises: an internal error is a deny (fail closed)."""
        ctx = self.ctx
        t0 = time.perf_counter()
        self.last_check = time.monotonic()
        if ctx is None:
            d = Decision(new_decision_id(), Reason.MALFORMED_REQUEST, "no policy loaded", status=503, form="bare")
        else:
            try:
                d = decide(http, ctx)
            except Exception as e:      # a bug must never become an allow
                log.exception("decision failed; denying")
                d = Decision(new_decision_id(), Reason.MALFORMED_REQUEST, f"internal error: {type(e).__name__}",
                             status=400, form="bare")
            self._after(d, ctx)
            if d.caller is None and not d.allowed and d.reason is not Reason.UNAUTHENTICATED:
                d.caller = _best_effort_caller(http, ctx)     # denied before identity: still attribute it
            if d.caller is not None:
                self._score(d, ctx)
        d.latency = time.perf_counter() - t0
        self.metrics.observe(d.server, d.method, d.allowed, d.reason.value, d.latency)
        self.inventory.record(d, http)
        self.decisions.emit(d)
        return d

    def _after(self, d: Decision, ctx: Context) -> None:
        """Session bookkeeping for allowed requests (sessions are bound on first use)."""
        if d.legacy_sse:
            if d.learn and d.wire_allowed:
                self.learner.expect(d.server, d.session_id, d.learn)   # the result comes on the stream
                d.learn = []
            elif not d.wire_allowed and d.ids and d.reason is not Reason.SESSION_HIJACK:
                # The 2024-11-05 client reads answers only from its event stream: put it there too
                # (never into a stream that belongs to somebody else).
                self.learner.inject(d.server, d.session_id, b"event: message\r\ndata: " + denial_body(d) + b"\r\n\r\n")
        if d.allowed and (d.learn or d.learn_stream) and d.caller is not None:
            self._mark_learn(d, ctx)
        if not d.allowed or not d.session_id or d.caller is None:
            return
        if d.http_method == "DELETE":
            self.sessions.end(d.session_id)
            self.visibility.end_session(d.server, d.session_id)
            return
        c = d.caller
        self.sessions.touch(d.session_id, c.key, d.server, user_session=c.user_session, client_id=c.client_id,
                            protocol_version=d.protocol_version)


    def _mark_learn(self, d: Decision, ctx: Context) -> None:
        """Filtered lists need to know who is asking (ext_proc shares no state with Check)."""
        policy = ctx.policy
        if policy.defaults.filter_lists and not policy.monitor and not d.server.startswith("shadow:") \
                and (d.learn_stream or any(e[1] in LIST_KINDS for e in d.learn)):
            c = d.caller
            assert c is not None
            d.view = View(c.issuer, c.subject, c.client_id, tuple(sorted(c.groups)))

    def _observe(self, d: Decision, ctx: Context) -> None:
        """Ask ext_proc to show us this call's result. Every observed call costs an ext_proc stream
        (the expensive part of the Python path), so `sampled` is bounded twice: per capability (its
        first calls, then 1 in `OBSERVE_EVERY`) and overall (`OBSERVE_PER_SECOND`). Calls of a
        caller with a risk score skip the per-capability sampling (their extraction is what the
        risk engine must see) but share a budget of their own. `all` observes every call."""
        mode = ctx.policy.audit.observe_responses
        if mode == "off" or d.legacy_sse or len(d.ids) != 1 or not d.name:
            return
        assert d.caller is not None
        if mode == "sampled":
            risky = self.risk.score(d.caller.key) > 0
            if not risky:
                key = (d.server, d.name)
                n = self._observed.get(key, 0) + 1
                if key in self._observed or len(self._observed) < 50_000:
                    self._observed[key] = n
                if n > OBSERVE_FIRST and n % OBSERVE_EVERY:
                    return
            second = int(time.monotonic())
            budget = self._observe_budget
            if budget[0] != second:
                budget[:] = [second, 0, 0]
            slot = 2 if risky else 1
            if budget[slot] >= (OBSERVE_RISKY_PER_SECOND if risky else OBSERVE_PER_SECOND):
                return
            budget[slot] += 1
        d.learn.append([d.ids[0], d.method, d.name])

    def _score(self, d: Decision, ctx: Context) -> None:
        """Every decision goes on its caller's timeline; evidence of an attack stage is scored."""
        c = d.caller
        assert c is not None
        sensitive = d.allowed and d.method in USE_METHODS and self._is_sensitive(ctx, d)
        stage, points = stage_of(d.reason, d.method, sensitive)
        if d.reason is Reason.RISK_BLOCKED:
            self.metrics.risk_blocks.inc()
        alert = self.risk.record(c.key, decision_id=d.decision_id, session_id=d.session_id, server=d.server,
                                 method=d.method, name=d.name, reason=d.reason.value, stage=stage, points=points,
                                 signature=hash((d.server, d.method, d.name, d.reason, d.detail)) if points else None)
        if alert is not None:
            d.alert = alert
        if d.allowed and d.method in OBSERVE_METHODS:
            self._observe(d, ctx)

    def _is_sensitive(self, ctx: Context, d: Decision) -> bool:
        """A rule marked `sensitive: true`, or a capability whose published definition the
        classifier finds personal, secret, financial or health data in. Cached per name."""
        if self._sensitive_version != self.specs.version:
            self._sensitive.clear()
            self._sensitive_version = self.specs.version
        key = (d.server, d.method, d.name)
        hit = self._sensitive.get(key)
        if hit is None:
            hit = self._classify(ctx, d)
            if len(self._sensitive) < 50_000:
                self._sensitive[key] = hit
        return hit

    def _classify(self, ctx: Context, d: Decision) -> bool:
        kind = OBSERVE_METHODS.get(d.method, "resources")
        sp = ctx.policy.server_by_name(d.server)
        spec = self.specs.get(d.server)
        entry: Any = None
        if kind == "resources":
            entry = spec.resources.get(d.name) if spec else None
            if entry is None and spec is not None:
                entry = spec.template_for(d.name)
                kind = "resourceTemplates" if entry is not None else kind
        elif spec is not None:
            entry = spec.table(kind).get(d.name)
        if sp is not None:
            rule_kind = {"tools": "tool", "prompts": "prompt"}.get(kind, "resource")
            rule = sp.rule_for(rule_kind, d.name)
            if rule is None and kind == "resourceTemplates":
                rule = sp.rule_for("resource", entry.uri_template)
            if rule is not None and rule.sensitive:
                return True
        if entry is None:
            return False
        return bool(classify_capability(kind, entry.raw))


def _best_effort_caller(http: HttpRequest, ctx: Context) -> Caller | None:
    try:
        return resolve_caller(http, ctx.policy.identity)
    except BadIdentity:
        return None


def load_app(policy_path: str | None, *, background_log: bool = True) -> App:
    """Build the app, or raise PolicyError listing every problem of the first load."""
    if policy_path is not None:
        load_policy(policy_path)
    return App(policy_path, background_log=background_log)
