"""Is this use of a capability sensitive (extraction evidence for the risk engine)?

A rule marked `sensitive: true`, or a capability whose published definition the classifier finds
personal, secret, financial or health data in. Cached per (server, method, name); the cache is
dropped whenever the learned specs change (and by the app on a policy reload)."""

from __future__ import annotations

from typing import Any

from extauthz.core.decision import Decision
from extauthz.detect.capability import classify_capability
from extauthz.mcp.kinds import BY_OBSERVED_METHOD, Kind
from extauthz.specs.store import SpecStore

MAX_CACHED = 50_000


class SensitiveUse:
    def __init__(self, specs: SpecStore) -> None:
        self.specs = specs
        self._cache: dict[tuple[str, str, str], bool] = {}
        self._version = -1

    def clear(self) -> None:
        self._cache.clear()

    def __call__(self, ctx: Any, d: Decision) -> bool:
        if self._version != self.specs.version:
            self._cache.clear()
            self._version = self.specs.version
        key = (d.server, d.method, d.name)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._classify(ctx, d)
            if len(self._cache) < MAX_CACHED:
                self._cache[key] = hit
        return hit

    def _classify(self, ctx: Any, d: Decision) -> bool:
        kind = BY_OBSERVED_METHOD.get(d.method, Kind.RESOURCES).value
        sp = ctx.policy.server_by_name(d.server)
        spec = self.specs.get(d.server)
        entry: Any = None
        if kind == "resources":
            entry = spec.resources.get(d.name) if spec else None
            if entry is None and spec is not None:
                entry = spec.template_for(d.name)
                kind = "resourceTemplates" if entry is not None else kind
        elif spec is not None:
            entry = spec.table(kind).get(d.name)
        if sp is not None:
            rule = sp.rule_for(Kind(kind).rule_kind, d.name)
            if rule is None and kind == "resourceTemplates":
                rule = sp.rule_for("resource", entry.uri_template)
            if rule is not None and rule.sensitive:
                return True
        if entry is None:
            return False
        return bool(classify_capability(kind, entry.raw))
