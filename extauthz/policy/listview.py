"""What a caller may see in a `*/list` result (`defaults.filterLists`): exactly what the policy
lets it call, and nothing quarantined (a changed or instruction-carrying capability cannot be
called until approved, so its text is not passed on to the agent either). The unfiltered list is
still what the service learns and enforces against."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from extauthz.identity.caller import Caller
from extauthz.mcp.kinds import Kind

_KIND = {k.value: k for k in Kind}


def visible_to(server: Any, caller: Caller | None,
               quarantine: Callable[[], Any] | None = None) -> Callable[[str, Any], bool]:
    """keep(kind, item) for one server policy and caller; unknown kinds and odd items are dropped,
    and so is what `quarantine()` holds ((kind, key) -> why). It is asked per item, not once: the
    response being filtered may itself be what quarantined a capability (first contact with a
    poisoned tool, or a rug pull learned from this very list)."""
    def keep(kind: str, item: Any) -> bool:
        k = _KIND.get(kind)
        if k is None or not isinstance(item, dict):
            return False
        key = item.get(k.key_field)
        if not isinstance(key, str):
            return False
        if quarantine is not None and (kind, key) in quarantine():
            return False
        rule = server.rule_for(k.rule_kind, key)
        return rule is not None and rule.allow.permits(caller)
    return keep
