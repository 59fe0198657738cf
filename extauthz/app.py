"""The service's state and the Check pipeline around the pure decision core.

`App` owns the policy holder, learned specs, sessions, validators, metrics and the decision log,
and wires the per-caller parts: risk (extauthz.risk), visibility (extauthz.sessions.visibility),
the inventory and which call results it observes (extauthz.inventory). `App.check` decides
(extauthz.core.decide), runs the planned effects (extauthz.effects), plans the answer
(extauthz.core.plan) and hands the answered decision to the recorder (extauthz.recorder).
A policy reload swaps one `Context` object; a Check reads whichever context was current when it
started, so no request ever sees half a policy.
"""

from __future__ import annotations

import logging
import time
from typing import IO, Any

import orjson

from extauthz.core.decide import Context, attributed_caller, decide
from extauthz.core.decision import NO_PLAN, Decision, new_decision_id
from extauthz.core.plan import answer_plan, effects_of
from extauthz.core.reasons import ALLOWED, MALFORMED_REQUEST, UNKNOWN_CAPABILITY
from extauthz.decisionlog import DecisionLog
from extauthz.detect.assess import Assessor
from extauthz.effects import EffectRunner
from extauthz.identity.caller import Caller
from extauthz.identity.sources import resolve_caller
from extauthz.inventory.observation import Observer
from extauthz.inventory.store import Inventory
from extauthz.mcp.kinds import Kind
from extauthz.mcp.request import HttpRequest
from extauthz.metrics import Metrics
from extauthz.policy.holder import PolicyHolder
from extauthz.policy.listview import visible_to
from extauthz.policy.model import Policy, default_policy, load_policy
from extauthz.recorder import Recorder
from extauthz.risk.engine import Clock, RiskEngine
from extauthz.risk.faults import OwnFaults
from extauthz.risk.sensitive import SensitiveUse
from extauthz.sessions.links import LinkGrants
from extauthz.sessions.registry import SessionRegistry
from extauthz.sessions.visibility import Visibility
from extauthz.shared.seam import SharedState
from extauthz.specs.learn import Learner
from extauthz.specs.listfilter import FAILURES, View
from extauthz.specs.store import DriftEvent, SpecStore
from extauthz.specs.validators import ValidatorCache

log = logging.getLogger("extauthz")


class App:
    def __init__(self, policy_path: str | None, *, decision_out: IO[bytes] | None = None,
                 background_log: bool = False, clock: Clock | None = None) -> None:
        self.specs = SpecStore(on_drift=self._on_drift, screen=self._screen)
        self.sessions = SessionRegistry()
        self.validators = ValidatorCache()
        self.inventory = Inventory()
        self.assessor = Assessor()          # shared by the inventory view and the quarantine screen
        self.visibility = Visibility()
        self.risk = RiskEngine(clock=clock, on_alert=self._on_alert)   # clock: simulated time in replay, calibration
        self.sensitive = SensitiveUse(self.specs)
        self.own_faults = OwnFaults(self.specs, self.validators)
        # extauthz.shared: where session owners and learned state are shared (Redis, or the
        # --workers supervisor); None for one process on its own
        self.shared: SharedState | None = None
        self.metrics = Metrics(self.specs.servers, lambda: len(self.sessions), lambda: self.sessions.refused)
        self.decisions = DecisionLog(decision_out, background=background_log)
        self.observer = Observer(self.inventory, self.risk, self.decisions, lambda: self.ctx)
        self.learner = Learner(self.specs, lambda: self.ctx.policy.defaults.on_drift if self.ctx else "quarantine",
                               on_session=self._on_session, list_view=self._list_view,
                               resolve_view=self._caller_view, filtering=self._filters_lists,
                               on_filter_failure=self._on_filter_failure, on_listed=self.visibility.listed_page,
                               on_result=self._on_result, on_session_end=self._on_session_end)
        self.links = LinkGrants()
        self.effects = EffectRunner(learner=self.learner, sessions=self.sessions, risk=self.risk,
                                    sensitive=self.sensitive, own_faults=self.own_faults, observer=self.observer,
                                    links=self.links, metrics=self.metrics, share=self._share)
        self.recorder = Recorder(self.metrics, self.inventory, self.decisions)
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
        self.sensitive.clear()
        self.ctx = Context(policy, self.specs, self.sessions, self.validators, policy.limits,
                           visibility=self.visibility, risk=self.risk if r.enabled else None,
                           links=self.links if policy.defaults.unknown_capability == "deny" else None,
                           shared_claims=self.shared is not None and self.shared.remote)
        log.info("policy installed: %s (%s, %d servers)", policy.source, policy.digest[:12], len(policy.servers))

    def use_shared(self, shared: SharedState) -> None:
        """Share state through `shared` (extauthz.shared.redis.RedisShared or the workers' claims):
        every store publishes its changes there, and unknown session ids are claimed there."""
        self.shared = shared
        for store in (self.specs, self.sessions, self.visibility, self.risk, self.links):
            store.on_change = shared.publish
        if self.ctx is not None:
            self._install(self.ctx.policy)

    async def confirm_claim(self, http: HttpRequest, d: Decision) -> Decision:
        """Settle a Check that waits on the shared store (`d.pending`), then decide it again: for
        its session's owner (Redis away: `sessions.sharedStateDown` says), then, for a deny our own
        feed lag may explain (`d.recheck`), by reading that state through once."""
        if d.claim:
            d = await self._claim(http, d)
        if d.recheck:
            # Decided again whatever the read found (the feed may have brought it meanwhile); never
            # read again: nothing newer, or Redis away, and the deny stands, scored once.
            rt = self.shared.readthrough if self.shared is not None else None
            assert rt is not None       # (only App._lagging asks for a recheck, and only with one)
            await rt.read(list(d.recheck))
            return self._decided_again(http, settled=True)
        return d

    async def _claim(self, http: HttpRequest, d: Decision) -> Decision:
        from extauthz.shared.redis import SharedUnavailable
        ctx, caller, shared = self.ctx, d.caller, self.shared
        assert ctx is not None and caller is not None and shared is not None and d.claim
        meta = {"u": caller.user_session, "i": caller.client_id, "v": d.protocol_version}
        try:
            owner, ended = await shared.claim(d.claim, caller.key, d.server, meta)
        except SharedUnavailable as e:
            if ctx.policy.sessions.shared_state_down == "local":
                owner = caller.key          # decided here alone; written to the store once it is back
                self.sessions.touch(d.claim, owner, d.server, user_session=caller.user_session,
                                    client_id=caller.client_id, protocol_version=d.protocol_version)
                return self._decided_again(http)
            shared.claims_denied += 1
            d = d.settled(f"shared state unavailable, so this session's owner cannot be confirmed ({e})"[:300],
                          "sessions.sharedStateDown")
            self.recorder.enqueue(d, http)
            return d
        from extauthz.shared.changes import SessionBound, SessionEnded
        if ended:                       # reserved to its former owner: decided like any ended id here
            self.sessions.apply(SessionEnded(d.claim, owner))
            return self._decided_again(http)
        if owner == caller.key:         # won (or already held): the other replicas hear of it on the feed
            self.sessions.touch(d.claim, owner, d.server, user_session=caller.user_session,
                                client_id=caller.client_id, protocol_version=d.protocol_version)
        else:                           # somebody else's: known here, not news for anybody
            self.sessions.apply(SessionBound(d.claim, owner, d.server, protocol_version=d.protocol_version))
        return self._decided_again(http)

    def _decided_again(self, http: HttpRequest, *, settled: bool = False) -> Decision:
        d = self.check(http, settled=settled)
        if d.claim:                    # idle past the TTL in between: never an allow without an owner
            d = d.settled(d.detail, d.rule)
            self.recorder.enqueue(d, http)
        return d

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

    def _on_session_end(self, server: str, session_id: str, outcome: str) -> None:
        """The server answered an owner's DELETE (over ext_proc): only its confirmation ("ended",
        "not_found") ends the binding; a refused DELETE leaves a live session, still its owner's."""
        self.metrics.session_ends.labels(outcome).inc()
        if outcome == "refused":
            log.info("server %s refused the DELETE of a session: its binding stays", server)
            return
        self.sessions.end(session_id)            # relayed to every worker (op "end")
        self.visibility.end_session(server, session_id)

    def _on_alert(self, alert: dict[str, Any]) -> None:
        self.metrics.risk_alerts.inc()
        log.warning("risk alert for %s: %s (sessions %s)", alert["caller"], alert["summary"],
                    ", ".join(alert["sessions"]))

    def _list_view(self, server: str, view: View) -> Any:
        """keep(kind, item) for a caller's lists, or None when lists are not filtered."""
        ctx = self.ctx
        if ctx is None:
            return lambda kind, item: False         # no policy: nothing is shown
        if ctx.policy.monitor or not ctx.policy.defaults.filter_lists:
            return None
        sp = ctx.policy.server_by_name(server)
        if sp is None:
            return None
        specs = self.specs

        def quarantine() -> Any:
            spec = specs.get(server)
            return spec.quarantined if spec is not None else {}
        caller = None if view.anonymous else Caller(view.issuer, view.subject, view.client_id,
                                                     frozenset(view.groups), {})
        return visible_to(sp, caller, quarantine)

    def _caller_view(self, identity: Any) -> View:
        """The caller of a request ext_proc sees, from the identity Envoy forwards to it (headers,
        and the jwt_authn claims in its metadata), by the policy's own identity sources."""
        ctx = self.ctx
        if ctx is None:
            raise LookupError("no policy loaded")
        headers, metadata = identity
        http = HttpRequest(method="", path="", authority="", headers=headers, metadata=metadata)
        return View.of(resolve_caller(http, ctx.policy.identity))

    def _filters_lists(self, server: str) -> bool:
        ctx = self.ctx
        if ctx is None:
            return True
        if ctx.policy.monitor or not ctx.policy.defaults.filter_lists:
            return False
        return not server or ctx.policy.server_by_name(server) is not None

    def _on_filter_failure(self, server: str, reason: str) -> None:
        self.metrics.list_filter_failures.inc(reason if reason in FAILURES else "internal_error")

    def _screen(self, kind: str, entry: Any) -> str | None:
        """defaults.hiddenInstructions: quarantine: a capability whose published text carries
        high-confidence hidden instructions (detect/hidden.py `hold_reason`) is held until an
        operator approves it, and filtered lists no longer show it, so the text never reaches an
        agent through us. Weaker findings are only flagged in the inventory."""
        ctx = self.ctx
        if ctx is None or ctx.policy.defaults.hidden_instructions != "quarantine":
            return None
        why = self.assessor.assess(kind, entry).hold
        key = getattr(entry, "uri", None) or getattr(entry, "uri_template", None) or entry.name
        return f"hidden instructions in {Kind(kind).label} {key[:80]!r}: {why}"[:300] if why else None

    def _on_drift(self, ev: DriftEvent) -> None:
        self.metrics.drift.labels(ev.server).inc()
        self.inventory.record_drift(ev)

    ready_check: Any = None      # the supervisor of --workers adds "and every worker is ready"

    @property
    def ready(self) -> bool:
        ok = self.ctx is not None and not self.draining
        if self.shared is not None and not self.shared.loaded.is_set():
            return False                # a new replica decides only once it has the shared state
        return ok and (self.ready_check is None or bool(self.ready_check()))

    # -- the Check path -------------------------------------------------------------------------
    def check(self, http: HttpRequest, *, settled: bool = False) -> Decision:
        """Decide, run the decision's effects, plan the answer, record. Never raises: an internal
        error is a deny (fail closed). A pending decision (`d.pending`) has no effects and is not
        recorded yet: `confirm_claim` settles it (`settled`: never pending for a read-through)."""
        ctx = self.ctx
        t0 = time.perf_counter()
        self.last_check = time.monotonic()
        if ctx is None:
            d = Decision(new_decision_id(), MALFORMED_REQUEST, "no policy loaded", status=503, form="bare")
            d = d.answered(NO_PLAN, None, time.perf_counter() - t0)
            self.recorder.enqueue(d, http)
            return d
        fault = False               # the denial is ours, not the caller's: it never scores
        try:
            d = decide(http, ctx)
        except Exception as e:      # a bug must never become an allow
            log.exception("decision failed; denying")
            d = Decision(new_decision_id(), MALFORMED_REQUEST, f"internal error: {type(e).__name__}",
                         status=400, form="bare", caller=attributed_caller(http, ctx.policy.identity))
            fault = True
        if d.claim:
            return d                # the transport awaits the claim and decides again (confirm_claim)
        if d.reason is UNKNOWN_CAPABILITY and not settled and not fault and self.shared is not None:
            recheck = self._lagging(d, ctx)
            if recheck:
                return d.awaiting(recheck)      # ... or reads through what the feed lags behind on
        done: tuple[bool, bool, bool, dict[str, Any] | None] = (False, False, False, None)
        try:
            done = self.effects.run(d, ctx, effects_of(d, ctx), fault, http)
        except Exception:  # noqa: BLE001 - bookkeeping must never turn a decision into an error
            log.exception("session/risk bookkeeping failed; the decision stands")
        try:
            plan = answer_plan(d, ctx, end_session=done[0], observed=done[1], await_result=done[2])
        except Exception as e:  # an answer whose lists could not be filtered must not go out: deny
            log.exception("answer plan failed; denying")
            d, plan = Decision(new_decision_id(), MALFORMED_REQUEST, f"internal error: {type(e).__name__}",
                               status=400, form="bare", caller=d.caller), NO_PLAN
        d = d.answered(plan, done[3], time.perf_counter() - t0)
        self.recorder.enqueue(d, http)
        return d

    def _lagging(self, d: Decision, ctx: Context) -> tuple[tuple[str, ...], ...]:
        """What to read before an `unknown_capability` deny that the Redis feed's lag may explain
        stands (extauthz.shared.readthrough); empty: nothing not read a moment ago, or Redis away."""
        shared = self.shared
        rt = shared.readthrough if shared is not None else None
        if shared is None or rt is None or d.monitor or d.server.startswith("shadow:"):
            return ()                   # without --redis (or in monitor mode, answered allowed): as before
        # (a batch's decision is its first denial's)
        unseen = next((v.unseen for v in d.verdicts if v.reason is not ALLOWED), False)
        keys = rt.keys(d.server, d.session_id, d.caller.key if d.caller is not None else "", unseen=unseen,
                       visibility=bool(ctx.policy.sessions.visibility_binding))
        if keys and not shared.connected:
            rt.counts["down"] += 1      # the deny stands at once, no wait
            return ()
        return tuple(keys)

    def record_pending(self) -> None:
        """Metrics, inventory and decision log for the Checks answered since the last call
        (extauthz.recorder): every admin view and workers-bus report calls this first."""
        self.recorder.record_pending()

    def _share(self, op: str, payload: dict[str, Any]) -> None:
        if self.shared is not None:
            self.shared.publish(op, payload)

    def _on_result(self, server: str, caller: str, session_id: str, entry: Any, result: Any, size: int) -> None:
        links = self.ctx is not None and self.ctx.links is not None
        self.effects.on_result(server, caller, session_id, entry, result, size, links=links)


def load_app(policy_path: str | None, *, background_log: bool = True) -> App:
    """Build the app, or raise PolicyError listing every problem of the first load."""
    if policy_path is not None:
        load_policy(policy_path)
    return App(policy_path, background_log=background_log)
