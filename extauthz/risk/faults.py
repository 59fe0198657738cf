"""Denials that may be the product's own doing, not the caller's: they are logged, never scored.

* a `schema_violation` because the tool's published input schema cannot be compiled (the caller
  cannot make any call of that tool right, whatever it sends);
* an `unknown_capability` for a resource URI under the literal prefix of a published URI template
  whose expressions may span segments or carry a query (an operator or an explode modifier:
  `kb://articles/{path*}` and `kb://articles/billing/refunds.md`, `{+path}`, `{/path*}`, `{?q}`):
  the server expands it one way, our matcher may another. A simple `{id}` cannot contain `/`, so
  `crm://customers/{id}` and a read of `crm://customers/c-1/notes` is a real unknown and scores;
* internal errors, a truncated body from Envoy, quarantine and policy outages (the app and
  `extauthz.risk.stages` already leave those unscored).

Cached per spec version, like extauthz.risk.sensitive.
"""

from __future__ import annotations

import re
from typing import Any

from extauthz.core.decision import Decision
from extauthz.core.reasons import Reason
from extauthz.specs.store import SpecStore
from extauthz.specs.validators import Invalid, ValidatorCache

MAX_CACHED = 10_000
_EXPRESSION = re.compile(r"\{([^}]*)\}")


def _spans(template: str) -> bool:
    """Does any expression of the template have an RFC 6570 operator or an explode modifier?"""
    return any((e[:1] != "" and e[0] in "+#./;?&") or "*" in e for e in _EXPRESSION.findall(template))


class OwnFaults:
    def __init__(self, specs: SpecStore, validators: ValidatorCache) -> None:
        self.specs, self.validators = specs, validators
        self._prefixes: dict[str, tuple[str, ...]] = {}
        self._version = -1

    def __call__(self, ctx: Any, d: Decision) -> bool:
        if d.reason is Reason.SCHEMA_VIOLATION and d.method == "tools/call":
            return self._unusable_schema(ctx, d)
        if d.reason is Reason.UNKNOWN_CAPABILITY and d.method in ("resources/read", "resources/subscribe"):
            return any(d.name.startswith(p) for p in self._template_prefixes(d.server))
        return False

    def _unusable_schema(self, ctx: Any, d: Decision) -> bool:
        spec = self.specs.get(d.server)
        tool = spec.tools.get(d.name) if spec is not None else None
        if tool is None:
            return False
        sp = ctx.policy.server_by_name(d.server)
        strict = ctx.policy.strictness_for(sp, d.name) == "strict"
        return isinstance(self.validators.get(tool.input_schema, strict, tool.schema_hash), Invalid)

    def _template_prefixes(self, server: str) -> tuple[str, ...]:
        if self._version != self.specs.version:
            self._prefixes.clear()
            self._version = self.specs.version
        hit = self._prefixes.get(server)
        if hit is None:
            spec = self.specs.get(server)
            found = set()
            for t in (spec.templates if spec is not None else {}):
                literal = t.split("{", 1)[0]
                # a prefix that says something: scheme://x at least (never "{+uri}" or "file://")
                if "://" in literal and literal.split("://", 1)[1] and _spans(t):
                    found.add(literal)
            hit = tuple(sorted(found))
            if len(self._prefixes) < MAX_CACHED:
                self._prefixes[server] = hit
        return hit
