"""Which published capabilities touch sensitive data: `classify_capability(kind, entry)` looks at
what an MCP server publishes about a tool, resource, resource template or prompt (names, titles,
descriptions, URIs, schema property names and `format`, prompt arguments). Total: never raises."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from extauthz.detect.values import ValueMatcher
from extauthz.detect.vocabulary import MAX_TEXT, path_hits, term_hits
from extauthz.schemawalk import subschemas

__all__ = ["Finding", "categories", "classify_capability"]


@dataclass(frozen=True, slots=True)
class Finding:
    category: str   # "pii" | "secret" | "financial" | "health"
    type: str       # "email", "payment_card", "api_token", "salary", "diagnosis", ...
    where: str      # "name" | "description" | "title" | "uri" | "property:/properties/a" | "format:/properties/a"
                    # | "output-property:..." | "output-format:..." | "argument:NAME" | "response"


_MAX_SCHEMA_NODES = 2000
_MAX_SCHEMA_DEPTH = 24
_MAX_WHERE = 256
_FORMATS = {"email": ("pii", "email"), "idn-email": ("pii", "email"), "phone": ("pii", "phone"),
            "tel": ("pii", "phone"), "password": ("secret", "password"), "iban": ("pii", "iban"),
            "credit-card": ("pii", "payment_card"), "creditcard": ("pii", "payment_card")}


def _ptr_token(s: str) -> str:
    s = s.replace("~", "~0").replace("/", "~1")
    return "".join(c if c.isprintable() else "?" for c in s[:64])


def _secret_values(text: str) -> set[tuple[str, str]]:
    """Secrets written into published text (a key pasted into a description)."""
    counts = ValueMatcher().text(text[:MAX_TEXT])
    return {tuple(k.split(".", 1)) for k in counts if k.startswith("secret.")}  # type: ignore[misc]


_RECORD_WHERE = frozenset({"name", "title", "description", "uri"})


def _text(out: set[Finding], value: Any, where: str, *, name: bool = False, uri: bool = False) -> None:
    if not isinstance(value, str) or not value:
        return
    hits = term_hits(value, whole_name=name)
    if where not in _RECORD_WHERE:
        hits.discard(("pii", "personal_record"))     # a `customer_id` property is a key, not a record
    if uri or name:
        hits |= path_hits(value)
    else:
        hits |= path_hits(value) | _secret_values(value)
    out.update(Finding(c, t, where[:_MAX_WHERE]) for c, t in hits)


def _schema(out: set[Finding], schema: Any, prefix: str) -> None:
    fmt_prefix = "output-format:" if prefix.startswith("output") else "format:"
    stack: list[tuple[Any, str, int]] = [(schema, "", 0)]
    budget = _MAX_SCHEMA_NODES
    while stack and budget > 0:
        node, ptr, depth = stack.pop()
        budget -= 1
        if not isinstance(node, dict) or depth > _MAX_SCHEMA_DEPTH:
            continue
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt.lower() in _FORMATS:
            c, t = _FORMATS[fmt.lower()]
            out.add(Finding(c, t, (fmt_prefix + ptr)[:_MAX_WHERE]))
        where = prefix + ptr
        _text(out, node.get("description"), where)
        _text(out, node.get("title"), where, name=True)
        for kw, key, sub in subschemas(node, limit=budget):
            if key is None:
                stack.append((sub, f"{ptr}/{kw}", depth + 1))
            elif isinstance(key, int):
                stack.append((sub, f"{ptr}/{kw}/{key}", depth + 1))
            elif isinstance(key, str):
                child = f"{ptr}/{kw}/{_ptr_token(key)}"
                if kw == "properties":
                    _text(out, key, prefix + child, name=True)
                stack.append((sub, child, depth + 1))


def classify_capability(kind: str, entry: dict[str, Any]) -> tuple[Finding, ...]:
    """Sensitive-data findings for one published tool, resource, resource template or prompt.
    `kind` is "tools" | "resources" | "resourceTemplates" | "prompts"; every field is optional and
    any JSON shape is accepted. Deterministic, deduplicated, sorted; never raises."""
    out: set[Finding] = set()
    if not isinstance(entry, dict):
        return ()
    _text(out, entry.get("name"), "name", name=True)
    _text(out, entry.get("title"), "title", name=True)
    ann = entry.get("annotations")
    if isinstance(ann, dict):
        _text(out, ann.get("title"), "title", name=True)
    _text(out, entry.get("description"), "description")
    for key in ("uri", "uriTemplate"):
        _text(out, entry.get(key), "uri", uri=True)
    _schema(out, entry.get("inputSchema"), "property:")
    _schema(out, entry.get("outputSchema"), "output-property:")
    args = entry.get("arguments")
    if isinstance(args, list):
        for arg in args[:_MAX_SCHEMA_NODES]:
            if isinstance(arg, dict) and isinstance(arg.get("name"), str):
                where = "argument:" + _ptr_token(arg["name"])
                _text(out, arg["name"], where, name=True)
                _text(out, arg.get("title"), where, name=True)
                _text(out, arg.get("description"), where)
    return tuple(sorted(out, key=lambda f: (f.category, f.type, f.where)))


def categories(findings: Iterable[Finding] | dict[str, int]) -> list[str]:
    """Sorted distinct categories of findings, or of `scan_response` counts (those above zero)."""
    if isinstance(findings, dict):
        return sorted({k.split(".", 1)[0] for k, n in findings.items()
                       if isinstance(k, str) and isinstance(n, int) and n > 0})
    return sorted({f.category for f in findings if isinstance(f, Finding)})
