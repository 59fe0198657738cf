"""Everything a decision reads, swapped whole on a policy reload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from extauthz.mcp.jsonrpc import Limits
from extauthz.sessions.registry import SessionRegistry
from extauthz.sessions.visibility import Visibility
from extauthz.specs.store import SpecStore
from extauthz.specs.validators import ValidatorCache


@dataclass(slots=True)
class Context:
    """Everything a decision reads. Swapped whole on a policy reload."""

    policy: Any                 # extauthz.policy.model.Policy
    specs: SpecStore
    sessions: SessionRegistry
    validators: ValidatorCache
    limits: Limits              # the policy's limits (same fields as extauthz.mcp.jsonrpc.Limits)
    visibility: Visibility | None = None   # what each session was listed (sessions.visibilityBinding)
    risk: Any = None            # extauthz.risk.engine.RiskEngine: per-caller score (risk.enabled)
    links: Any = None           # extauthz.sessions.links.LinkGrants: resource links returned to a session
    shared_claims: bool = False  # session owners live in a shared store (--redis, --workers)
