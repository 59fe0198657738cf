"""One result object per Check, mapped to the wire only at the edge."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

from extauthz.core.reasons import Reason
from extauthz.identity.caller import Caller


_PROCESS = os.urandom(6).hex()
_counter = itertools.count()


def new_decision_id() -> str:
    """Unique across replicas and restarts, sortable within a process, cheap: 48-bit ms time,
    a random per-process prefix, and a counter (no syscall per decision)."""
    return f"{int(time.time() * 1000):012x}{_PROCESS}{next(_counter) & 0xFFFFFFFF:08x}"


@dataclass(slots=True)
class Verdict:
    """The answer for one JSON-RPC message."""

    reason: Reason
    detail: str = ""
    rule: str = ""
    name: str = ""

    @property
    def allowed(self) -> bool:
        return self.reason is Reason.ALLOWED


ALLOW = Verdict(Reason.ALLOWED)


@dataclass(slots=True)
class Decision:
    """What was decided for one HTTP request (one JSON-RPC message, a batch, a GET or a DELETE)."""

    decision_id: str
    reason: Reason
    detail: str = ""
    status: int = 200                  # HTTP status of the denial on the wire
    server: str = ""
    method: str = ""
    name: str = ""
    rule: str = ""
    caller: Caller | None = None
    session_id: str = ""
    http_method: str = "POST"
    form: str = "single"               # single | batch | bare (no JSON-RPC id to answer)
    ids: list[Any] = field(default_factory=list)        # JSON-RPC ids, in body order
    verdicts: list[Verdict] = field(default_factory=list)
    learn: list[list[Any]] = field(default_factory=list)  # [[id, method, first]] for ext_proc
    learn_stream: bool = False         # a 2024-11-05 GET event stream: results arrive on it
    resumed: bool = False              # a GET with Last-Event-ID: the server may replay list results
    legacy_sse: bool = False           # a 2024-11-05 POST (session in the query, result on the stream)
    end_session: bool = False          # an owner's DELETE: ext_proc sees whether the server ended it
    await_result: bool = False         # read the result on the learn route (Envoy waits): it may carry links
    monitor: bool = False
    protocol_version: str = ""
    www_authenticate: str = ""
    arguments: Any = None              # kept only when audit.logArguments is on
    view: Any = None                   # extauthz.specs.learn.View: filter this caller's lists
    alert: dict[str, Any] | None = None  # a risk alert this decision completed
    # The session id the shared store must be asked about before this request can be decided (a
    # replica that never saw it). Such a decision is a deny until the claim settles it.
    claim: str = ""
    # A deny the shared state's feed lag may have caused (extauthz.shared.readthrough): "spec" (an
    # unknown name) or "vis" (never listed to this session). Not scored until read through.
    recheck: str = ""
    recheck_keys: list[Any] = field(default_factory=list)
    latency: float = 0.0

    @property
    def pending(self) -> bool:
        """The transport awaits `App.confirm_claim` before answering."""
        return bool(self.claim or self.recheck)

    @property
    def allowed(self) -> bool:
        """What the policy decided (monitor mode does not change this)."""
        return self.reason is Reason.ALLOWED

    @property
    def wire_allowed(self) -> bool:
        """What Envoy is told: monitor mode turns a deny into a logged allow, never the reverse."""
        return self.reason is Reason.ALLOWED or self.monitor
