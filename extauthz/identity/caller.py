"""The authenticated caller: who is asking, as the policy and the logs see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Caller:
    """A caller keyed by issuer + subject + client id (never a token hash: tokens rotate)."""

    issuer: str
    subject: str
    client_id: str
    groups: frozenset[str]
    claims: dict[str, Any] = field(hash=False, compare=False)
    source: str = "jwt"          # jwt | header | mtls
    key: str = field(init=False, compare=False)   # built once: every session record shares it

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.issuer}|{self.subject}|{self.client_id}")

    @property
    def user_session(self) -> str:
        sid = self.claims.get("sid")
        return sid if isinstance(sid, str) else ""
