"""What follows a decision: the effects App.check runs, and the answer plan for ext_proc.

`effects_of` says which effects a decision has (pure); App.check runs them in this order:
  sse      2024-11-05 POST: its learnable requests are expected on the event stream ("expect"), or
           its denial is injected into that stream ("inject"), the only place that client reads
  session  an allowed request in a session binds it to the caller (an owner's DELETE may end it)
  score    the decision goes on its caller's risk timeline
  observe  an allowed call may be sampled for its result (extauthz.inventory.observation)
  links    an allowed tools/call whose result may carry resource links is awaited
then `answer_plan` builds, once, what the answer tells ext_proc.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from extauthz.core.context import Context
from extauthz.core.decision import NO_PLAN, AnswerPlan, Decision, Learn, Observe, new
from extauthz.core.reasons import ALLOWED, SESSION_HIJACK
from extauthz.mcp.kinds import BY_LIST_METHOD, BY_OBSERVED_METHOD
from extauthz.specs.listfilter import view_ref


@dataclass(frozen=True, slots=True)
class Effects:
    sse: str = ""               # "" | "expect" | "inject"
    session: bool = False
    score: bool = False
    observe: bool = False
    links: bool = False


# Every combination, built once: a Check looks its effects up instead of allocating them.
_ALL = {(sse, *flags): Effects(sse, *flags) for sse in ("", "expect", "inject")
        for flags in itertools.product((False, True), repeat=4)}
NONE = _ALL["", False, False, False, False]


def effects_of(d: Decision, ctx: Context) -> Effects:
    # (fields read once into locals and the verdict compared inline: a property is a Python call;
    # bench/README.md "Decision records")
    sse = ""
    reason = d.reason
    legacy_sse = d.legacy_sse
    if legacy_sse:
        wire_allowed = reason is ALLOWED or d.monitor
        if d.learn and wire_allowed:
            sse = "expect"
        elif not wire_allowed and d.ids and reason is not SESSION_HIJACK:
            sse = "inject"
    if d.caller is None:
        return _ALL[sse, False, False, False, False]
    if reason is not ALLOWED:
        return _ALL[sse, False, True, False, False]
    method = d.method
    return _ALL[sse, bool(d.session_id), True, method in BY_OBSERVED_METHOD,
                method == "tools/call" and ctx.links is not None and not legacy_sse and len(d.ids) == 1
                and bool(d.name)]


def answer_plan(d: Decision, ctx: Context, *, end_session: bool, observed: bool, await_result: bool) -> AnswerPlan:
    """The one place the answer plan is built. `observed`: the call's result is read (sampled, or
    awaited for its links); `await_result`: the learn route, where Envoy waits for us. A 2024-11-05
    POST's entries are expected on its event stream instead (effects "expect")."""
    allowed = d.reason is ALLOWED
    learn_stream = d.learn_stream
    learn: tuple[Learn, ...] = () if d.legacy_sse and (allowed or d.monitor) else d.learn
    view = None
    if allowed and (learn or learn_stream or d.resumed):
        # Filtered lists need to know who is asking (ext_proc shares no state with Check): the
        # fingerprint of the caller's view, which ext_proc resolves again from what Envoy forwards
        # (extauthz.specs.listfilter); an anonymous caller (unauthenticated: allow) is filtered too.
        policy = ctx.policy
        if policy.defaults.filter_lists and not policy.monitor and not d.server.startswith("shadow:") \
                and (learn_stream or d.resumed or any(e.method in BY_LIST_METHOD for e in learn)):
            view = view_ref(d.caller)
    if not learn and not observed and view is None and not end_session and not learn_stream:
        return NO_PLAN
    entries: tuple[Learn | Observe, ...] = learn
    if observed:
        entries = (*learn, new(Observe, (d.ids[0], d.method, d.name)))
    return AnswerPlan(entries, learn_stream, view, end_session, await_result)
