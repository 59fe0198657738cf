"""The MCP methods a client may send, by what the decision core must check for each."""

from __future__ import annotations

from types import MappingProxyType

from extauthz.mcp.kinds import BY_LIST_METHOD

# Methods that name a capability: extauthz.mcp.kinds.BY_CAPABILITY_METHOD (their kind's key_field
# is the params member holding the name).

# Requests that touch no single capability: lifecycle, listing, housekeeping.
FREE_METHODS = frozenset({
    "initialize", "ping", "server/discover", "logging/setLevel", *BY_LIST_METHOD,
    "tasks/get", "tasks/result", "tasks/list", "tasks/cancel",
})

# Responses we learn the spec from, over ext_proc (the lists: BY_LIST_METHOD).
LEARN_METHODS = frozenset({"initialize", "server/discover", *BY_LIST_METHOD})

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
