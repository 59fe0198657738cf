"""Everything a decision reads, swapped whole on a policy reload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from extauthz.mcp.jsonrpc import Limits
from extauthz.policy.model import Policy
from extauthz.sessions.links import Links
from extauthz.sessions.registry import SessionRegistry
from extauthz.sessions.visibility import Visibility
from extauthz.specs.store import SpecStore
from extauthz.specs.validators import ValidatorCache


class RiskGate(Protocol):
    """What a decision asks of the risk engine (extauthz.risk.engine.RiskEngine): why this caller
    is blocked or rate-limited, or ""."""

    def blocked(self, caller: str) -> str: ...
    def limited(self, caller: str) -> str: ...


@dataclass(slots=True)
class Context:
    """Everything a decision reads. Swapped whole on a policy reload."""

    policy: Policy
    specs: SpecStore
    sessions: SessionRegistry
    validators: ValidatorCache
    limits: Limits              # the policy's limits (same fields as extauthz.mcp.jsonrpc.Limits)
    visibility: Visibility | None = None   # what each session was listed (sessions.visibilityBinding)
    risk: RiskGate | None = None    # per-caller score and rate (risk.enabled)
    links: Links | None = None      # resource links returned to a session (unknownCapability: deny)
    shared_claims: bool = False  # session owners live in a shared store (--redis, --workers)
