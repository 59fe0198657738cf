"""Shared helpers for the policy tests (imported as tests.unit.policy.policy_helpers)."""

from __future__ import annotations

import textwrap
from typing import Any

from extauthz.identity.caller import Caller

HEADER = "apiVersion: mcp-extauthz/v1\nkind: Policy\n"


def policy_yaml(body: str = "") -> str:
    """A valid header plus `body` (dedented), so line numbers in tests are easy to count."""
    return HEADER + textwrap.dedent(body).lstrip("\n")


def caller(groups: tuple[str, ...] = (), subject: str = "alice", client_id: str = "agent",
           **claims: Any) -> Caller:
    return Caller(issuer="https://idp.example", subject=subject, client_id=client_id,
                  groups=frozenset(groups), claims=dict(claims))
