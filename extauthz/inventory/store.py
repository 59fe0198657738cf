"""Inventory state fed from the Check path (cheap, O(1) per decision) and from ext_proc."""

from __future__ import annotations

from typing import Any

from extauthz.core.decision import Decision
from extauthz.mcp.request import HttpRequest
from extauthz.specs.store import DriftEvent


class Inventory:
    """Skeleton: filled in by the inventory work (issue 8)."""

    def record(self, d: Decision, http: HttpRequest) -> None:
        """Called once per Check with the decision (allowed or not). Must stay O(1), no I/O."""

    def record_drift(self, ev: DriftEvent) -> None:
        """A spec drift event (changed/added/removed capability)."""

    def record_response(self, server: str, kind: str, name: str, findings: dict[str, int], size: int) -> None:
        """What a response to a capability call carried: counts of sensitive-data types, never values."""

    def snapshot(self, app: Any) -> dict[str, Any]:
        return {"servers": []}
