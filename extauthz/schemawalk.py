"""Where a JSON Schema holds subschemas (2020-12, 2019-09 and draft-07 keywords), for every walker
of published schemas: closing them (specs/validators.py) and classifying them (detect/capability.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["SCHEMA_LISTS", "SCHEMA_MAPS", "SCHEMA_ONE", "subschemas"]

# keyword -> {name: subschema}
SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
# keyword -> one subschema
SCHEMA_ONE = ("items", "additionalProperties", "unevaluatedProperties", "unevaluatedItems", "contains",
              "not", "if", "then", "else", "propertyNames", "additionalItems", "contentSchema")
# keyword -> [subschema, ...] (`items` too: draft-07's tuple form)
SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems", "items")

Key = str | int | None      # a map's key, a list's index, or None for a single subschema


def subschemas(node: Mapping[str, Any], limit: int | None = None) -> Iterator[tuple[str, Key, Any]]:
    """(keyword, key, value) for every place in `node` that holds a subschema, in keyword order.
    Values of maps and lists come as found (booleans and malformed values included: a caller skips
    what it cannot use); a single subschema only when it is an object. `limit`: at most this many
    entries of each map or list."""
    for kw in SCHEMA_MAPS:
        sub = node.get(kw)
        if isinstance(sub, dict):
            for i, (k, v) in enumerate(sub.items()):
                if limit is not None and i >= limit:
                    break
                yield kw, k, v
    for kw in SCHEMA_ONE:
        sub = node.get(kw)
        if isinstance(sub, dict):
            yield kw, None, sub
    for kw in SCHEMA_LISTS:
        sub = node.get(kw)
        if isinstance(sub, list):
            for i, v in enumerate(sub if limit is None else sub[:limit]):
                yield kw, i, v
