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


# The Check path compares with these module constants: reading an enum member off its class
# (`Reason.ALLOWED`) is a metaclass attribute lookup, ~70 ns on CPython 3.11 against ~10 ns for a
# global (bench/README.md "Decision records"); `reason._value_` is an instance attribute, where
# `reason.value` is a property (a Python call) on 3.11.
ALLOWED = Reason.ALLOWED
RISK_BLOCKED = Reason.RISK_BLOCKED
