"""Sensitive-data findings and hidden-instruction flags for a discovered spec.

The judgement is the inventory's (`extauthz.detect.capability.classify_capability` and
`extauthz.detect.hidden.hidden_instructions`); this module only walks the published entries
and lays the answers out per capability:

    {"tools": {"lookup_customer": {"sensitive": [{"category", "type", "where"}, ...],
                                   "hiddenInstructions": [{"flag", "where"}, ...]}},
     "server": {"hiddenInstructions": [...]}}          # the server's own `instructions`

Capabilities without findings are left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from extauthz.mcp.kinds import KIND_NAMES as KINDS

MAX_TEXTS_PER_ENTRY = 512           # description strings walked per entry (schemas can be huge)


def entry_key(kind: str, entry: dict[str, Any]) -> str:
    """The name a capability is known by (the spec store's key)."""
    key = entry.get("uri") if kind == "resources" else entry.get("uriTemplate") if kind == "resourceTemplates" \
        else entry.get("name")
    return key if isinstance(key, str) else ""


def texts(kind: str, entry: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, text) for every human-readable string a model would read in this entry: its title
    and description, every description/title inside a tool's schemas, a prompt's argument
    descriptions."""
    for field in ("title", "description"):
        v = entry.get(field)
        if isinstance(v, str) and v:
            yield field, v
    n = 0
    if kind == "tools":
        for schema_field in ("inputSchema", "outputSchema"):
            for where, v in _schema_texts(entry.get(schema_field), schema_field):
                n += 1
                if n > MAX_TEXTS_PER_ENTRY:
                    return
                yield where, v
    elif kind == "prompts":
        for i, arg in enumerate(entry.get("arguments") or ()):
            if isinstance(arg, dict):
                for field in ("title", "description"):
                    v = arg.get(field)
                    if isinstance(v, str) and v:
                        yield f"arguments/{i}/{field}", v


def _schema_texts(node: Any, path: str) -> Iterator[tuple[str, str]]:
    stack: list[tuple[str, Any, int]] = [(path, node, 0)]
    while stack:
        where, cur, depth = stack.pop()
        if depth > 32:
            continue
        if isinstance(cur, dict):
            for k, v in cur.items():
                if k in ("description", "title") and isinstance(v, str) and v:
                    yield f"{where}/{k}", v
                elif isinstance(v, (dict, list)):
                    stack.append((f"{where}/{k}", v, depth + 1))
        elif isinstance(cur, list):
            for i, v in enumerate(cur):
                if isinstance(v, (dict, list)):
                    stack.append((f"{where}/{i}", v, depth + 1))


def findings(lists: dict[str, list[dict[str, Any]]], instructions: str | None = None) -> dict[str, Any]:
    """Findings per kind and capability name (see the module docstring)."""
    from extauthz.detect.capability import classify_capability
    from extauthz.detect.hidden import hidden_instructions

    out: dict[str, Any] = {}
    for kind in KINDS:
        per: dict[str, Any] = {}
        for entry in lists.get(kind, ()):
            name = entry_key(kind, entry)
            if not name:
                continue
            sensitive = [{"category": f.category, "type": f.type, "where": f.where}
                         for f in classify_capability(kind, entry)]
            hidden = [{"flag": flag, "where": where}
                      for where, text in texts(kind, entry) for flag in hidden_instructions(text)]
            found: dict[str, Any] = {}
            if sensitive:
                found["sensitive"] = sensitive
            if hidden:
                found["hiddenInstructions"] = hidden
            if found:
                per[name] = found
        if per:
            out[kind] = per
    if instructions:
        flags = hidden_instructions(instructions)
        if flags:
            out["server"] = {"hiddenInstructions": [{"flag": f, "where": "instructions"} for f in flags]}
    return out
