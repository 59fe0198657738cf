"""Which attack stage a decision is evidence of, and how many risk points it is worth.

Three stages an attacker goes through:

* recon: finding out what exists: asking for names or methods that do not exist (6 points each),
  requests to servers nobody configured (3), a burst of listing across many servers and sessions
  (`LIST_BURST_POINTS`, once per burst window). Listing itself is not recon: every client lists at
  every session start and reconnect;
* probe: testing what the checks let through: schema, constraint, ACL and header denials (8 each),
  malformed bodies (4), presenting another caller's session id (25);
* extract: taking data: using a sensitive capability, a large or sensitive response seen over
  ext_proc (0 points on their own: support staff use sensitive tools all day), or a volume of
  sensitive use above `risk.volumePerMinute` (20 points per minute above it).

Points come only from what a benign client does not do, once per distinct denial (what was asked,
and why it was refused): a client retrying a call it lost the right to is not probing. A mistake the
caller then corrects (a `CORRECTABLE` denial followed by an allowed call of the same capability) is
forgiven (extauthz.risk.forgive). Denials that are not the caller's doing (quarantine, policy
outage, a truncated body from Envoy, internal errors, a published schema the product cannot use)
and `risk_blocked` itself score nothing, so a blocked caller's score can decay. How the points add
up to a chain and a block: extauthz.risk.chain.
"""

from __future__ import annotations

from extauthz.core.reasons import ALLOWED, Reason
from extauthz.mcp.kinds import BY_LIST_METHOD

RECON, PROBE, EXTRACT = "recon", "probe", "extract"
ORDER = (RECON, PROBE, EXTRACT)
CHAIN_POINTS = 40.0
VOLUME_POINTS = 20.0
LIST_BURST_POINTS = 6.0

LIST_METHODS = frozenset(BY_LIST_METHOD)
USE_METHODS = frozenset({"tools/call", "resources/read", "prompts/get", "resources/subscribe"})
# denials an agent makes by mistake and fixes from the error message (DESIGN.md: their message
# says what is wrong with the arguments)
CORRECTABLE = frozenset({Reason.SCHEMA_VIOLATION.value, Reason.PAYLOAD_TOO_LARGE.value})

# reason -> (stage, points) for denials
DENIAL_STAGE: dict[Reason, tuple[str, float]] = {
    Reason.UNKNOWN_CAPABILITY: (RECON, 6.0),
    Reason.UNKNOWN_METHOD: (RECON, 6.0),
    Reason.UNKNOWN_SERVER: (RECON, 3.0),
    Reason.SCHEMA_VIOLATION: (PROBE, 8.0),
    Reason.CONSTRAINT_VIOLATED: (PROBE, 8.0),
    Reason.NOT_ALLOWED: (PROBE, 8.0),
    Reason.HEADER_MISMATCH: (PROBE, 8.0),
    Reason.PAYLOAD_TOO_LARGE: (PROBE, 8.0),
    Reason.MALFORMED_REQUEST: (PROBE, 4.0),
    Reason.SESSION_HIJACK: (PROBE, 25.0),
}


def stage_of(reason: Reason, method: str, sensitive: bool) -> tuple[str | None, float]:
    """(stage or None, points) for one decision (listing bursts are the engine's: they need history)."""
    if reason is ALLOWED:
        if sensitive and method in USE_METHODS:
            return EXTRACT, 0.0
        return None, 0.0
    return DENIAL_STAGE.get(reason, (None, 0.0))
