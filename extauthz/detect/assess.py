"""One published entry's sensitivity and hidden-instruction judgement, cached by the entry's digest
(a published entry never changes under the same digest, so each is judged once). The inventory
shows an `Assessment`; the quarantine screen holds an entry on its `hold`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from extauthz.detect.capability import Finding, categories, classify_capability
from extauthz.detect.hidden import Finding as HiddenFinding
from extauthz.detect.hidden import hidden_instructions, hold_reason, scan

__all__ = ["Assessment", "Assessor", "Published", "descriptions", "judge"]

MAX_CACHED = 20000
MAX_TEXTS = 256         # model-read strings looked at per entry (docs/detection.md: real servers use 65 at most)


class Published(Protocol):
    """A learned spec entry (ToolSpec, ResourceSpec, TemplateSpec, PromptSpec)."""

    @property
    def digest(self) -> str: ...

    @property
    def raw(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Assessment:
    sensitivity: tuple[str, ...]        # categories of `findings`
    findings: tuple[Finding, ...]
    hidden: tuple[str, ...]             # every hidden-instruction flag (the inventory shows them)
    hold: str | None                    # why to hold the entry at first sight, or None (flag only)


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
    seen: list[tuple[str, HiddenFinding]] = []
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


class Assessor:
    """Judgements of published entries and texts, cached (bounded: cleared when full)."""

    def __init__(self, max_cached: int = MAX_CACHED) -> None:
        self._entries: dict[str, Assessment] = {}
        self._texts: dict[str, tuple[str, ...]] = {}
        self._max = max_cached

    @property
    def size(self) -> int:
        return len(self._entries) + len(self._texts)

    def assess(self, kind: str, entry: Published) -> Assessment:
        """The judgement of one spec entry; `kind` is its spec kind ("tools", "resourceTemplates"...)."""
        hit = self._entries.get(entry.digest)
        if hit is not None:
            return hit
        try:
            found = classify_capability(kind, entry.raw)
        except Exception:           # documented never to raise; a bug must still not take the view down
            found = ()
        flags, hold = judge(entry.raw)
        hit = Assessment(tuple(categories(found)) if found else (), tuple(found), tuple(flags), hold)
        if self.size >= self._max:
            self._entries.clear()
            self._texts.clear()
        self._entries[entry.digest] = hit
        return hit

    def text_flags(self, text: Any) -> list[str]:
        """Hidden-instruction flags for one published text (a server's `instructions`)."""
        if not isinstance(text, str) or not text:
            return []
        key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        hit = self._texts.get(key)
        if hit is None:
            hit = tuple(hidden_instructions(text))
            if self.size >= self._max:
                self._entries.clear()
                self._texts.clear()
            self._texts[key] = hit
        return list(hit)


def response_categories(findings: dict[str, int]) -> list[str]:
    """Categories of what responses carried (counts by type -> category names)."""
    return categories(findings) if findings else []
