"""What App needs of the shared state: Redis (extauthz.shared.redis.RedisShared) or, under
`--workers` without Redis, the supervisor's claims (extauthz.workers.claims.BusClaims)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from extauthz.shared.readthrough import ReadThrough


class SharedState(Protocol):
    remote: bool                    # session owners live elsewhere: an unknown id is claimed there
    loaded: asyncio.Event           # the catch-up has been applied: the replica may decide
    connected: bool
    claims_denied: int              # claims that failed closed (App.confirm_claim counts them)

    @property
    def readthrough(self) -> ReadThrough | None: ...   # Redis only: reads behind a lagging feed

    def publish(self, op: str, payload: dict[str, Any]) -> None: ...
    async def claim(self, sid: str, caller: str, server: str, meta: dict[str, str]) -> tuple[str, bool]: ...
