"""What follows a decision, run in the order `extauthz.core.plan.effects_of` planned it: the
2024-11-05 event stream, the session binding, the risk timeline, result sampling and the resource
links a call's result may carry. Each effect reads the frozen Decision and changes only its own
store; `run` returns what the answer plan needs to know of them."""

from __future__ import annotations

import base64
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from extauthz.core.answers import denial_body
from extauthz.core.context import Context
from extauthz.core.decision import Decision
from extauthz.core.plan import NONE as NO_EFFECTS
from extauthz.core.plan import Effects
from extauthz.core.reasons import ALLOWED, CONSTRAINT_VIOLATED, RISK_BLOCKED, SESSION_HIJACK
from extauthz.inventory.observation import Observer
from extauthz.mcp.request import HttpRequest
from extauthz.metrics import Metrics
from extauthz.risk.engine import RiskEngine
from extauthz.risk.faults import OwnFaults
from extauthz.risk.sensitive import SensitiveUse
from extauthz.risk.stages import USE_METHODS, stage_of
from extauthz.sessions.links import LinkGrants
from extauthz.sessions.registry import SessionRegistry
from extauthz.specs.learn import Learner

MAX_LINK_ONLY = 10_000  # results read for their links only (not sampled), awaiting their answer
Share = Callable[[str, dict[str, Any]], None]      # (op, payload) to the other workers and replicas


class EffectRunner:
    def __init__(self, *, learner: Learner, sessions: SessionRegistry, risk: RiskEngine, sensitive: SensitiveUse,
                 own_faults: OwnFaults, observer: Observer, links: LinkGrants, metrics: Metrics,
                 share: Share) -> None:
        self.learner, self.sessions, self.risk, self.sensitive = learner, sessions, risk, sensitive
        self.own_faults, self.observer, self.links, self.metrics = own_faults, observer, links, metrics
        self.share = share
        self._link_only: OrderedDict[tuple[str, str, str, Any], None] = OrderedDict()   # read for links only

    def run(self, d: Decision, ctx: Context, fx: Effects, fault: bool,
            http: HttpRequest) -> tuple[bool, bool, bool, dict[str, Any] | None]:
        """(end_session, observed, await_result, the risk alert the decision completed)."""
        if fx is NO_EFFECTS:
            return False, False, False, None
        end_session = sampled = await_result = False
        alert = None
        if fx.sse:
            self._legacy_sse(d, fx.sse)
        if fx.session:
            end_session = self._touch_session(d, http.path)
        if fx.score:
            alert = self._score(d, ctx, fault, http)
        if fx.observe:
            sampled = self.observer.sample(d, ctx)
        if fx.links and self.links.wants(d.server, d.name):
            # Its result is read on the learn route (Envoy waits for us), so the link is granted
            # before the client can ask for it (extauthz.sessions.links).
            await_result = True
            if not sampled:
                assert d.caller is not None
                self._link_only[(d.server, d.session_id, d.caller.key, _id(d.ids[0]))] = None
                if len(self._link_only) > MAX_LINK_ONLY:     # results that never came (errors, resets)
                    self._link_only.popitem(last=False)
        return end_session, sampled or await_result, await_result, alert

    def on_result(self, server: str, caller: str, session_id: str, entry: Any, result: Any, size: int,
                  *, links: bool) -> None:
        """An observed call's result (the learner's hook): its resource links (`links`: granted
        under this policy), then, unless it was read only for those, the sampled inventory and
        risk observation."""
        if links and entry.method == "tools/call":
            self.links.observed(server, session_id, caller, entry.name, result)
        if self._link_only and self._link_only.pop((server, session_id, caller, _id(entry.id)), 0) is None:
            return
        self.observer.on_result(server, caller, session_id, entry, result, size)

    def _legacy_sse(self, d: Decision, op: str) -> None:
        """A 2024-11-05 POST: the stream may be served by another worker or replica, so what it
        needs goes there too (extauthz.workers.bus apply_change "expect"/"inject"); a list it
        carries before the entries arrive is still filtered by its shape, only not learned from."""
        if op == "expect":
            self.learner.expect(d.server, d.session_id, d.learn)   # the result comes on the stream
            self.share("expect", {"server": d.server, "sid": d.session_id, "entries": [list(e) for e in d.learn]})
            return
        # The 2024-11-05 client reads answers only from its event stream: put it there too (never
        # into a stream that belongs to somebody else: effects_of leaves session_hijack out).
        event = b"event: message\r\ndata: " + denial_body(d) + b"\r\n\r\n"
        self.learner.inject(d.server, d.session_id, event)
        self.share("inject", {"server": d.server, "sid": d.session_id,
                              "event": base64.b64encode(event).decode("ascii")})

    def _touch_session(self, d: Decision, path: str) -> bool:
        """Sessions are bound on first use. True for an owner's DELETE where the session was used:
        ext_proc then sees whether the server ended it."""
        c = d.caller
        assert c is not None
        endpoint = path.split("?", 1)[0]
        delete = d.http_method == "DELETE"
        info = self.sessions.touch(d.session_id, c.key, d.server, user_session=c.user_session, client_id=c.client_id,
                                   protocol_version=d.protocol_version, path="" if delete else endpoint)
        # Not ended here: the server may refuse (405, a redirect), and only its confirmation ends
        # the binding (extauthz.sessions.ending). A DELETE elsewhere than where the session was used
        # cannot confirm anything about it: nothing is marked.
        return delete and info is not None and info.caller == c.key and info.path in ("", endpoint)

    def _score(self, d: Decision, ctx: Context, fault: bool, http: HttpRequest) -> dict[str, Any] | None:
        """Every decision goes on its caller's timeline; evidence of an attack stage is scored,
        unless the denial may be the product's own doing (extauthz.risk.faults)."""
        c = d.caller
        assert c is not None
        reason, method = d.reason, d.method
        sensitive = reason is ALLOWED and method in USE_METHODS and self.sensitive(ctx, d)
        stage, points = stage_of(reason, method, sensitive)
        if points and (fault or self.own_faults(ctx, d)):
            stage, points = None, 0.0
        if reason is RISK_BLOCKED:
            self.metrics.risk_blocks.inc()
        return self.risk.record(c.key, decision_id=d.decision_id, session_id=d.session_id, server=d.server,
                                method=method, name=d.name, reason=reason._value_, stage=stage, points=points,
                                signature=_signature(d, http) if points else None)


def _id(value: Any) -> tuple[str, Any]:
    """JSON-RPC ids compare by type: 2 and "2" are different requests."""
    return (type(value).__name__, value)


def _signature(d: Decision, http: HttpRequest | None) -> int:
    """What was asked and why it was refused: the same denial again is a retry, not a probe. A
    constraint denial says which argument, not which value, so the arguments are part of it (one
    customer id after another is enumeration); another caller's session id, the id itself."""
    extra: Any = ""
    if d.reason is SESSION_HIJACK:
        extra = d.session_id
    elif d.reason is CONSTRAINT_VIOLATED and http is not None:
        try:
            body = orjson.loads(http.body)
            params = body.get("params") if isinstance(body, dict) else None
            extra = orjson.dumps(params.get("arguments") if isinstance(params, dict) else body,
                                 option=orjson.OPT_SORT_KEYS)
        except (orjson.JSONDecodeError, TypeError):
            extra = http.body
    # crc32, not hash(): str hashes are salted per process, and replicas compare signatures
    return zlib.crc32(repr((d.server, d.method, d.name, d.reason._value_, d.detail, extra)).encode())
