"""The MCP methods a client may send, by what the decision core must check for each."""

from __future__ import annotations

from types import MappingProxyType

# Methods that name a capability: method -> (spec kind, params key holding the name)
CAPABILITY_METHODS = MappingProxyType({
    "tools/call": ("tools", "name"),
    "prompts/get": ("prompts", "name"),
    "resources/read": ("resources", "uri"),
    "resources/subscribe": ("resources", "uri"),
    "resources/unsubscribe": ("resources", "uri"),
})

# Requests that touch no single capability: lifecycle, listing, housekeeping.
FREE_METHODS = frozenset({
    "initialize", "ping", "server/discover", "logging/setLevel",
    "tools/list", "resources/list", "resources/templates/list", "prompts/list",
    "tasks/get", "tasks/result", "tasks/list", "tasks/cancel",
})

# Responses we learn the spec from, over ext_proc: method -> result key holding the items.
LIST_METHODS = MappingProxyType({
    "tools/list": "tools",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
    "prompts/list": "prompts",
})
LEARN_METHODS = frozenset({"initialize", "server/discover", *LIST_METHODS})

NOTIFICATIONS = frozenset({
    "notifications/initialized", "notifications/cancelled", "notifications/progress",
    "notifications/roots/list_changed", "notifications/tasks/status",
})

# Params members each method may carry; anything else is an undeclared field.
ALLOWED_PARAMS = MappingProxyType({
    "tools/call": frozenset({"name", "arguments", "_meta", "task"}),
    "prompts/get": frozenset({"name", "arguments", "_meta"}),
    "resources/read": frozenset({"uri", "_meta"}),
    "resources/subscribe": frozenset({"uri", "_meta"}),
    "resources/unsubscribe": frozenset({"uri", "_meta"}),
    "completion/complete": frozenset({"ref", "argument", "context", "_meta"}),
    "subscriptions/listen": frozenset({"notifications", "_meta"}),
})

# Protocol versions that allow JSON-RPC batches (added 2025-03-26, removed 2025-06-18).
BATCH_VERSIONS = frozenset({"2025-03-26"})
MODERN_VERSIONS = frozenset({"2026-07-28"})
KNOWN_VERSIONS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"})
