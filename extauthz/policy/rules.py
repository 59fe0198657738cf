"""Compiled ACL pieces: who may call (`Allow`), with which values (`Constraint`), and the `Rule`.

Everything is decided here with set membership and exact comparisons: no regex, no parsing
on the hot path. Re-exported by `extauthz.policy.model`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from extauthz.identity.caller import Caller
from extauthz.mcp.kinds import RuleKind

ConstraintOp = Literal["inClaim", "equalsClaim"]

_INDEX = re.compile(r"0|[1-9][0-9]*")
_ABSENT = object()


def pointer_tokens(pointer: str) -> tuple[str, ...]:
    """RFC 6901: '' is the whole document; '/a~1b/~0c' -> ('a/b', '~c'). Raises ValueError."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"JSON Pointer must start with '/': {pointer!r}")
    tokens = []
    for raw in pointer[1:].split("/"):
        if re.search(r"~(?![01])", raw):
            raise ValueError(f"bad '~' escape in JSON Pointer {pointer!r}")
        tokens.append(raw.replace("~1", "/").replace("~0", "~"))
    return tuple(tokens)


def resolve_pointer(document: Any, tokens: tuple[str, ...]) -> Any:
    """The value at `tokens`, or `_ABSENT`. Array indices only in canonical decimal ('01' is absent)."""
    value = document
    for token in tokens:
        if isinstance(value, dict):
            if token not in value:
                return _ABSENT
            value = value[token]
        elif isinstance(value, list):
            if not _INDEX.fullmatch(token) or int(token) >= len(value):
                return _ABSENT
            value = value[int(token)]
        else:
            return _ABSENT
    return value


def json_scalar_equal(a: Any, b: Any) -> bool:
    """Type-exact JSON equality for scalars used in authorization.

    "42" is not 42, true is not 1, null never matches anything; 1 and 1.0 are the same JSON
    number. Objects and arrays are never equal here: a constraint ties one value to a claim.
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return False


@dataclass(frozen=True, slots=True)
class Allow:
    """Who may use a capability; every form given must hold. No caller is never permitted."""

    groups: frozenset[str] | None = None
    authenticated: bool = False
    subjects: frozenset[str] | None = None
    clients: frozenset[str] | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Allow:
        def as_set(key: str) -> frozenset[str] | None:
            return frozenset(doc[key]) if key in doc else None
        return cls(as_set("groups"), bool(doc.get("authenticated", False)),
                   as_set("subjects"), as_set("clients"))

    def permits(self, caller: Caller | None) -> bool:
        if caller is None:
            return False
        if self.groups is not None and self.groups.isdisjoint(caller.groups):
            return False
        if self.subjects is not None and caller.subject not in self.subjects:
            return False
        if self.clients is not None and caller.client_id not in self.clients:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Constraint:
    """Ties one argument value (JSON Pointer) to a caller claim, compared type-exactly."""

    argument: str
    tokens: tuple[str, ...]
    op: ConstraintOp
    claim: str
    optional: bool = False

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Constraint:
        op: ConstraintOp = "inClaim" if "inClaim" in doc else "equalsClaim"
        return cls(doc["argument"], pointer_tokens(doc["argument"]), op, doc[op],
                   bool(doc.get("optional", False)))

    def check(self, arguments: object, caller: Caller | None) -> bool:
        """True when the argument satisfies the claim; an absent argument -> `optional`."""
        if caller is None:
            return False
        value = resolve_pointer(arguments, self.tokens)
        if value is _ABSENT:
            return self.optional
        if isinstance(value, (dict, list)) or value is None:
            return False
        claim = caller.claims.get(self.claim, _ABSENT) if isinstance(caller.claims, dict) else _ABSENT
        if claim is _ABSENT:
            return False
        if self.op == "equalsClaim":
            return json_scalar_equal(value, claim)
        if isinstance(claim, list):
            return any(json_scalar_equal(value, item) for item in claim)
        return json_scalar_equal(value, claim)


@dataclass(frozen=True, slots=True)
class Rule:
    """One ACL entry. `rule_id` (`crm.tools[1]`) names it in decision logs."""

    kind: RuleKind
    pattern: str
    allow: Allow
    constraints: tuple[Constraint, ...] = ()
    schema_strictness: str | None = None
    rule_id: str = ""
    sensitive: bool = False        # use of it is data extraction (risk: extract stage)

