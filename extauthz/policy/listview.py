"""What a caller may see in a `*/list` result (`defaults.filterLists`): exactly what the policy
lets it call. The unfiltered list is still what the service learns and enforces against."""

from __future__ import annotations

from typing import Any, Callable

from extauthz.identity.caller import Caller

_RULE_KIND = {"tools": ("tool", "name"), "prompts": ("prompt", "name"),
              "resources": ("resource", "uri"), "resourceTemplates": ("resource", "uriTemplate")}


def visible_to(server: Any, caller: Caller) -> Callable[[str, Any], bool]:
    """keep(kind, item) for one server policy and caller; unknown kinds and odd items are dropped."""
    def keep(kind: str, item: Any) -> bool:
        spec = _RULE_KIND.get(kind)
        if spec is None or not isinstance(item, dict):
            return False
        key = item.get(spec[1])
        if not isinstance(key, str):
            return False
        rule = server.rule_for(spec[0], key)
        return rule is not None and rule.allow.permits(caller)
    return keep
