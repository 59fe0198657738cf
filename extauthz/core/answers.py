"""What a denied client reads: a JSON-RPC error it can surface cleanly (DESIGN.md "Decisions")."""

from __future__ import annotations

from typing import Any

import orjson

from extauthz.core.decision import Decision
from extauthz.core.reasons import Reason

# JSON-RPC codes: the spec's where one fits, else one server-defined code for policy denials (a
# body that is not JSON at all carries its own, extauthz.mcp.jsonrpc.PARSE_ERROR, in Decision.code).
_CODES = {
    Reason.MALFORMED_REQUEST: -32600,
    Reason.UNKNOWN_METHOD: -32601,
    Reason.SCHEMA_VIOLATION: -32602,
    Reason.HEADER_MISMATCH: -32001,
}
POLICY_DENIED = -32003

_MESSAGES = {
    Reason.UNAUTHENTICATED: "Authentication required",
    Reason.UNKNOWN_SERVER: "Unknown MCP server",
    Reason.UNKNOWN_METHOD: "Method not found",
    Reason.UNKNOWN_CAPABILITY: "Unknown capability",
    Reason.NOT_ALLOWED: "Not allowed",
    Reason.CONSTRAINT_VIOLATED: "Argument not allowed for this caller",
    Reason.SCHEMA_VIOLATION: "Invalid params",
    Reason.PAYLOAD_TOO_LARGE: "Payload too large",
    Reason.PARTIAL_BODY: "Request body incomplete",
    Reason.MALFORMED_REQUEST: "Invalid request",
    Reason.HEADER_MISMATCH: "Header mismatch",
    Reason.SESSION_HIJACK: "Session not valid for this caller",
    Reason.QUARANTINED: "Capability quarantined",
    Reason.RISK_BLOCKED: "Blocked",
    Reason.RATE_LIMITED: "Rate limited",
}


# An agent reads `message`, rarely `data`: where the detail describes only the published schema or
# the limits (nothing secret), it goes into the message so the agent can correct its call.
_SELF_CORRECTABLE = frozenset({Reason.SCHEMA_VIOLATION, Reason.PAYLOAD_TOO_LARGE})
MAX_MESSAGE_DETAIL = 300


def message_for(reason: Reason, detail: str) -> str:
    base = _MESSAGES.get(reason, "Denied")
    if detail and reason in _SELF_CORRECTABLE:
        return f"{base}: {detail[:MAX_MESSAGE_DETAIL]}"
    return base


def _error(mid: Any, reason: Reason, decision_id: str, detail: str, code: int | None = None) -> dict[str, Any]:
    if code is None:
        code = _CODES.get(reason, POLICY_DENIED)
    data: dict[str, Any] = {"reason": reason.value, "decisionId": decision_id}
    if detail and reason not in (Reason.UNAUTHENTICATED,):
        data["detail"] = detail
    return {"jsonrpc": "2.0", "id": mid, "error": {"code": code, "message": message_for(reason, detail),
                                                    "data": data}}


def denial_body(d: Decision) -> bytes:
    """A batch gets one error per element with its own id, each naming its own reason (or, for an
    element that was fine, the reason the batch as a whole was refused). Otherwise one error."""
    if d.form == "batch":
        out = []
        for i, mid in enumerate(d.ids):
            v = d.verdicts[i] if i < len(d.verdicts) else None
            reason = v.reason if v is not None and not v.allowed else d.reason
            detail = v.detail if v is not None and not v.allowed else (
                d.detail if v is None else f"batch refused: {d.reason.value}")
            out.append(_error(mid, reason, d.decision_id, detail, d.code if v is None else None))
        return orjson.dumps(out)
    mid = d.ids[0] if d.form == "single" and d.ids else None
    return orjson.dumps(_error(mid, d.reason, d.decision_id, d.detail, d.code))
