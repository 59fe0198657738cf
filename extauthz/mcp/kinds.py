"""The four kinds of capability an MCP server publishes, and everything spelled after them.

One `Kind` knows its spec kind (the list result's field, the spec store's key: "tools"), the rule
kind that covers it ("tool"), the member naming an item ("name"), the method listing it
("tools/list") and the method using it ("tools/call"). The wire and JSON strings are the values:
a `Kind` compares and hashes as its string, but write `.value` where it becomes a JSON object key
(orjson accepts only exact `str` keys).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Literal

RuleKind = Literal["tool", "resource", "prompt"]


class Kind(StrEnum):
    rule_kind: RuleKind
    key_field: str
    list_method: str
    call_method: str
    singular: str       # in denial details ("resourceTemplate 'x' is quarantined"): kept as it was
    label: str          # in prose ("resource template")

    def __new__(cls, value: str, rule_kind: RuleKind, key_field: str, list_method: str, call_method: str,
                label: str) -> Kind:
        member = str.__new__(cls, value)
        member._value_ = value
        member.rule_kind, member.key_field = rule_kind, key_field
        member.list_method, member.call_method = list_method, call_method
        member.singular, member.label = value[:-1], label
        return member

    if TYPE_CHECKING:   # what a call does: `Kind("tools")` looks a member up (__new__ builds them)
        def __init__(self, value: str) -> None: ...

    # templates are matched by resource rules, and used by reading a resource
    TOOLS = ("tools", "tool", "name", "tools/list", "tools/call", "tool")
    RESOURCES = ("resources", "resource", "uri", "resources/list", "resources/read", "resource")
    RESOURCE_TEMPLATES = ("resourceTemplates", "resource", "uriTemplate", "resources/templates/list",
                          "resources/read", "resource template")
    PROMPTS = ("prompts", "prompt", "name", "prompts/list", "prompts/get", "prompt")


# The spec kinds as plain strings, in this order (lists, counts and reports follow it).
KIND_NAMES: tuple[str, ...] = tuple(k.value for k in Kind)

# Lookups by method: plain dicts, which nothing writes to (a MappingProxyType lookup costs about
# twice as much, and these are read on every Check).
# list method -> the kind its result lists ("tools/list" -> TOOLS)
BY_LIST_METHOD: dict[str, Kind] = {k.list_method: k for k in Kind}

# Requests that name one capability -> its kind (subscriptions name a resource like a read).
BY_CAPABILITY_METHOD: dict[str, Kind] = {
    "tools/call": Kind.TOOLS, "prompts/get": Kind.PROMPTS, "resources/read": Kind.RESOURCES,
    "resources/subscribe": Kind.RESOURCES, "resources/unsubscribe": Kind.RESOURCES}

# Calls whose results are observed (sampled): response size and sensitive-data counts, never values.
BY_OBSERVED_METHOD: dict[str, Kind] = {k.call_method: k for k in (Kind.TOOLS, Kind.RESOURCES, Kind.PROMPTS)}

# The members as module constants for the Check path: `Kind.TOOLS` is a lookup through the enum's
# metaclass (~0.25 µs a read on Python 3.11).
TOOLS, RESOURCES, RESOURCE_TEMPLATES, PROMPTS = Kind.TOOLS, Kind.RESOURCES, Kind.RESOURCE_TEMPLATES, Kind.PROMPTS

_BY_ANY_NAME = {**{k.value: k for k in Kind}, **{k.singular: k for k in Kind}, "template": Kind.RESOURCE_TEMPLATES}


def spec_kind(name: str) -> str:
    """'tool' / 'tools' / 'template' -> 'tools' ... (the spec store's kinds); anything else as given."""
    k = _BY_ANY_NAME.get(name)
    return k.value if k is not None else name
