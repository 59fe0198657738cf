"""Sensitivity and hidden-instruction flags for published capabilities, cached by the entry's digest
(a published entry never changes under the same digest, so each is classified once)."""

from __future__ import annotations

import hashlib
from typing import Any, Iterator

from extauthz.inventory.classify import categories, classify_capability
from extauthz.inventory.hidden import Finding, hidden_instructions, hold_reason, scan

MAX_CACHED = 20000
MAX_TEXTS = 256         # model-read strings looked at per entry (real servers: at most 65, firecrawl_scrape)


def descriptions(raw: Any, where: str = "", depth: int = 0) -> Iterator[tuple[str, str]]:
    """(where, text) for every string in a published entry that the model reads: `description` /
    `title`, the capability's own, then its arguments' (parameter descriptions are read by the
    model too, so instructions hide there as well), and schema values (`default`, `const`, and
    `enum` / `examples` joined one per line): full-schema poisoning puts payloads there.
    `where` is a JSON Pointer into the entry."""
    if depth > 16 or not isinstance(raw, (dict, list)):
        return
    items = raw.items() if isinstance(raw, dict) else enumerate(raw)
    for k, v in items:
        ptr = f"{where}/{str(k).replace('~', '~0').replace('/', '~1')}"
        if k in ("description", "title", "default", "const") and isinstance(v, str):
            yield ptr, v
        elif k in ("enum", "examples") and isinstance(v, list) and any(isinstance(x, str) for x in v):
            yield ptr, "\n".join(x for x in v if isinstance(x, str))
        elif isinstance(v, (dict, list)):
            yield from descriptions(v, ptr, depth + 1)


def judge(raw: Any) -> tuple[list[str], str | None]:
    """(every hidden-instruction flag, why to hold or None) for one published entry: its own and
    its arguments' descriptions are judged together, since a payload may be split across them."""
    flags: list[str] = []
    seen: list[tuple[str, Finding]] = []
    for i, (where, text) in enumerate(descriptions(raw)):
        if i >= MAX_TEXTS:      # bounded work per entry; say so rather than pass it as clean
            flags.append(f"more than {MAX_TEXTS} description texts: the rest were not scanned")
            break
        for f in scan(text):
            seen.append((where.lstrip("/"), f))
            flag = f.flag if where == "/description" else f"{where}: {f.flag}"
            if flag not in flags:
                flags.append(flag)
    return flags, hold_reason(seen)


def assess(inv: Any, kind: str, entry: Any) -> dict[str, Any]:
    """{sensitivity: [categories], findings: [{category, type, where}], hidden: [flags], hold: why or
    None} for a spec entry (ToolSpec, ResourceSpec, TemplateSpec, PromptSpec), cached on
    `inv.classified`. `hidden` lists every hidden-instruction finding (the inventory shows them);
    `hold` is set only when they corroborate each other enough to hold the entry at first sight."""
    cache: dict[str, Any] = inv.classified
    hit = cache.get(entry.digest)
    if hit is not None:
        return hit
    try:
        found = tuple(classify_capability(kind, entry.raw))
    except Exception:           # documented never to raise; a bug must still not take the view down
        found = ()
    flags, hold = judge(entry.raw)
    hit = {
        "sensitivity": categories(found) if found else [],
        "findings": [{"category": f.category, "type": f.type, "where": f.where} for f in found],
        "hidden": flags,
        "hold": hold,
    }
    if len(cache) >= MAX_CACHED:
        cache.clear()
    cache[entry.digest] = hit
    return hit


def text_flags(inv: Any, text: Any) -> list[str]:
    """Hidden-instruction flags for one published text (a server's `instructions`), cached."""
    if not isinstance(text, str) or not text:
        return []
    key = "text:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    hit = inv.classified.get(key)
    if hit is None:
        hit = hidden_instructions(text)
        if len(inv.classified) >= MAX_CACHED:
            inv.classified.clear()
        inv.classified[key] = hit
    return list(hit)


def response_categories(findings: dict[str, int]) -> list[str]:
    """Categories of what responses carried (counts by type -> category names)."""
    if not findings:
        return []
    return categories(findings)
