"""What a Check decided, as values nothing changes once built; mapped to the wire only at the edge.

`Verdict` answers one JSON-RPC message; `Decision` answers the HTTP request (a message, a batch, a
GET or a DELETE); `AnswerPlan` is what ext_proc must learn or observe from the response.
`Decision` and `AnswerPlan` are frozen `msgspec.Struct`s: built in C and read like `__slots__`
(a Check reads ~50 of their fields); a frozen dataclass pays one `object.__setattr__` per field
and a NamedTuple field read is not specialized by CPython 3.11 (bench/README.md "Decision
records"). The small per-message records stay NamedTuples, built with `tuple.__new__`.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from extauthz.core.reasons import ALLOWED, Reason
from extauthz.identity.caller import Caller
from extauthz.specs.listfilter import ViewRef

_PROCESS = os.urandom(6).hex()
# The hot constructions call tuple.__new__ (C) with the fields in order: half the cost of a
# NamedTuple's generated __new__ (a Python function).
new = tuple.__new__
_counter = itertools.count()
replace = msgspec.structs.replace


def new_decision_id() -> str:
    """Unique across replicas and restarts, sortable within a process, cheap: 48-bit ms time,
    a random per-process prefix, and a counter (no syscall per decision)."""
    return f"{int(time.time() * 1000):012x}{_PROCESS}{next(_counter) & 0xFFFFFFFF:08x}"


class Verdict(NamedTuple):
    """The answer for one JSON-RPC message (a NamedTuple: one is built per message)."""

    reason: Reason
    detail: str = ""
    rule: str = ""
    name: str = ""
    # sessions.visibilityBinding: the server publishes it, this session was never listed it (the
    # read-through then also reads what the session was listed: extauthz.shared.readthrough)
    unseen: bool = False

    @property
    def allowed(self) -> bool:
        return self.reason is ALLOWED


ALLOW = Verdict(ALLOWED)


class Learn(NamedTuple):
    """A request whose result ext_proc learns the spec from (a list, initialize, server/discover)."""

    id: Any
    method: str
    first: bool             # no cursor: the page starts a new snapshot


class Observe(NamedTuple):
    """A call whose result ext_proc observes (sampled, or read for the resource links it returns)."""

    id: Any
    method: str
    name: str


class AnswerPlan(msgspec.Struct, frozen=True):
    """What the allowed answer tells ext_proc (extauthz.mcp.learnheader), built by one function
    (extauthz.core.plan.answer_plan)."""

    entries: tuple[Learn | Observe, ...] = ()
    stream: bool = False            # a 2024-11-05 GET event stream: results arrive on it
    view: ViewRef | None = None     # filter this caller's lists (extauthz.specs.listfilter)
    end_session: bool = False       # an owner's DELETE: ext_proc sees whether the server ended it
    await_result: bool = False      # read the result on the learn route (Envoy waits): it may carry links

    @property
    def observe_only(self) -> bool:
        """Only observed calls, nothing awaited or filtered: the observability-mode route."""
        return bool(self.entries) and self.view is None and not self.await_result \
            and all(type(e) is Observe for e in self.entries)

    @property
    def learns(self) -> bool:
        return bool(self.entries) or self.stream or self.view is not None


NO_PLAN = AnswerPlan()


class Decision(msgspec.Struct, frozen=True):
    """What was decided for one HTTP request, in groups: the verdict, what was asked and by whom,
    the answer's shape (from parsing), what ext_proc learns from the response, what the decision
    waits on, and what `answered` adds once (the answer plan and the audit data)."""

    # the verdict
    decision_id: str
    reason: Reason
    detail: str = ""
    status: int = 200                  # HTTP status of the denial on the wire
    rule: str = ""
    www_authenticate: str = ""
    code: int | None = None            # a JSON-RPC code other than the reason's (a parse error)
    monitor: bool = False              # answered allowed whatever the reason (logged as decided)
    # what was asked, by whom
    server: str = ""
    method: str = ""
    name: str = ""
    caller: Caller | None = None
    session_id: str = ""
    http_method: str = "POST"
    protocol_version: str = ""
    arguments: Any = None              # kept only when audit.logArguments is on
    # the answer's shape, and each message's verdict
    form: str = "single"               # single | batch | bare (no JSON-RPC id to answer)
    ids: Sequence[Any] = ()            # JSON-RPC ids, in body order
    verdicts: Sequence[Verdict] = ()
    # what ext_proc learns from the response
    learn: tuple[Learn, ...] = ()      # the allowed requests whose results are learned from
    learn_stream: bool = False         # a 2024-11-05 GET event stream: results arrive on it
    resumed: bool = False              # a GET with Last-Event-ID: the server may replay list results
    legacy_sse: bool = False           # a 2024-11-05 POST (session in the query, result on the stream)
    # what the decision waits on: the session id the shared store must be asked about (a replica
    # that never saw it; a deny until the claim settles it), or the shared-state keys to read
    # before a deny our own feed lag may explain stands (extauthz.shared.readthrough; not scored
    # until read through)
    claim: str = ""
    recheck: tuple[tuple[str, ...], ...] = ()
    # added once, when answered
    plan: AnswerPlan = NO_PLAN
    alert: dict[str, Any] | None = None  # a risk alert this decision completed
    latency: float = 0.0

    @property
    def allowed(self) -> bool:
        """What the policy decided (monitor mode does not change this)."""
        return self.reason is ALLOWED

    @property
    def wire_allowed(self) -> bool:
        """What Envoy is told: monitor mode turns a deny into a logged allow, never the reverse."""
        return self.reason is ALLOWED or self.monitor

    def answered(self, plan: AnswerPlan, alert: dict[str, Any] | None, latency: float) -> Decision:
        """The decision as answered: its plan and its audit data."""
        return replace(self, plan=plan, alert=alert, latency=latency)

    def awaiting(self, recheck: tuple[tuple[str, ...], ...]) -> Decision:
        """The same deny, pending a read-through of these shared-state keys."""
        return replace(self, recheck=recheck)

    def settled(self, detail: str, rule: str) -> Decision:
        """A claim that could not be settled: the same deny, saying why, waiting on nothing."""
        return replace(self, detail=detail, rule=rule, claim="", recheck=())

    @property
    def pending(self) -> bool:
        """The transport awaits `App.confirm_claim` before answering."""
        return bool(self.claim or self.recheck)
