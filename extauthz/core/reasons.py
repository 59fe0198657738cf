"""Stable reason codes (DESIGN.md): used in decision logs, metrics and the reason header."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    ALLOWED = "allowed"
    UNAUTHENTICATED = "unauthenticated"
    UNKNOWN_SERVER = "unknown_server"
    UNKNOWN_METHOD = "unknown_method"
    UNKNOWN_CAPABILITY = "unknown_capability"
    NOT_ALLOWED = "not_allowed"
    CONSTRAINT_VIOLATED = "constraint_violated"
    SCHEMA_VIOLATION = "schema_violation"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    PARTIAL_BODY = "partial_body"
    MALFORMED_REQUEST = "malformed_request"
    HEADER_MISMATCH = "header_mismatch"
    SESSION_HIJACK = "session_hijack"
    QUARANTINED = "quarantined"
    RISK_BLOCKED = "risk_blocked"
    RATE_LIMITED = "rate_limited"


# The Check path reads these module constants, not `Reason.X`: reading an enum member off its class
# is a metaclass attribute lookup, ~120 ns on CPython 3.11 against ~10 ns for a global (bench/README.md
# "Decision records"); `reason._value_` is an instance attribute, where `reason.value` is a property
# (a Python call) on 3.11.
ALLOWED = Reason.ALLOWED
UNAUTHENTICATED = Reason.UNAUTHENTICATED
UNKNOWN_SERVER = Reason.UNKNOWN_SERVER
UNKNOWN_METHOD = Reason.UNKNOWN_METHOD
UNKNOWN_CAPABILITY = Reason.UNKNOWN_CAPABILITY
NOT_ALLOWED = Reason.NOT_ALLOWED
CONSTRAINT_VIOLATED = Reason.CONSTRAINT_VIOLATED
SCHEMA_VIOLATION = Reason.SCHEMA_VIOLATION
PAYLOAD_TOO_LARGE = Reason.PAYLOAD_TOO_LARGE
PARTIAL_BODY = Reason.PARTIAL_BODY
MALFORMED_REQUEST = Reason.MALFORMED_REQUEST
HEADER_MISMATCH = Reason.HEADER_MISMATCH
SESSION_HIJACK = Reason.SESSION_HIJACK
QUARANTINED = Reason.QUARANTINED
RISK_BLOCKED = Reason.RISK_BLOCKED
RATE_LIMITED = Reason.RATE_LIMITED
