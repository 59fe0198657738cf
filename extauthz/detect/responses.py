"""How much sensitive data a response carries: counts keyed "category.type", never values.

Bounded by `max_bytes` of string data, `max_depth` of nesting, a node budget derived from
`max_bytes` and a cap on phone-number validations; total (never raises) on any JSON shape."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from extauthz.detect.values import ValueMatcher, card_digits_ok, placeholder, ssn_ok
from extauthz.detect.vocabulary import term_hits

__all__ = ["ScanResult", "scan", "scan_response"]


@dataclass(frozen=True, slots=True)
class ScanResult:
    counts: dict[str, int]     # "category.type" -> how many
    scanned_chars: int         # characters of strings and keys looked at (at most max_bytes)
    truncated: bool            # a bound (bytes, depth, nodes) cut the scan short


class _Scanner(ValueMatcher):
    """One response's scan: what is left of its budgets, and what it counted."""

    def __init__(self, max_bytes: int, max_depth: int) -> None:
        super().__init__()
        self.budget = max(0, max_bytes)
        self.max_depth = max(0, max_depth)
        self.nodes = max(1024, self.budget // 8)     # a JSON value costs at least a few bytes
        self.scanned = 0
        self.counts: Counter[str] = Counter()
        self._keys: dict[str, str | None] = {}

    def key_type(self, key: str) -> str | None:
        """What a response key names (e.g. "secret.password"), memoised for this scan only."""
        key = self.take(key)
        if key not in self._keys:
            if len(self._keys) >= 4096:
                self._keys.clear()
            self._keys[key] = _key_type(key)
        return self._keys[key]

    def take(self, s: str) -> str:
        if len(s) > self.budget:
            self.truncated = True
            s = s[:self.budget]
        self.budget -= len(s)
        self.scanned += len(s)
        return s


# Response keys whose value is itself the sensitive datum (the value's shape proves nothing).
_KEY_DECIDED = frozenset({"pii.date_of_birth", "pii.address", "pii.national_id", "pii.person_name"})


def _key_type(key: str) -> str | None:
    hits = term_hits(key, whole_name=True, head_only=True)
    if not hits:
        return None
    cat, typ = min(hits)
    return f"{cat}.{typ}"


def _present(v: Any) -> bool:
    if isinstance(v, bool) or v is None:
        return False
    if isinstance(v, (int, float)):
        return True
    return isinstance(v, str) and not placeholder(v)


def _scalar_text(v: Any, limit: int) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        try:
            return bytes(v[:limit]).decode("utf-8", "replace")
        except (TypeError, ValueError, BufferError, NotImplementedError):
            return None
    return None


def scan(doc: Any, *, max_bytes: int = 1 << 20, max_depth: int = 32) -> ScanResult:
    """`scan_response` with what was looked at: characters scanned and whether a bound cut it short.
    Walks in document order with an explicit stack (no recursion), so any nesting is safe."""
    sc = _Scanner(max_bytes, max_depth)
    stack: list[tuple[Any, int, str | None]] = [(doc, 0, None)]
    while stack:
        if sc.budget <= 0 or sc.nodes <= 0:
            sc.truncated = True
            break
        node, depth, ktype = stack.pop()
        sc.nodes -= 1
        if isinstance(node, (dict, list, tuple)) and depth >= sc.max_depth:
            sc.truncated = True
        elif isinstance(node, dict):
            children: list[tuple[Any, int, str | None]] = []
            for k, v in node.items():
                if sc.budget <= 0 or len(children) >= sc.nodes:
                    sc.truncated = True
                    break
                kt = sc.key_type(k) if isinstance(k, str) else None
                children.append((v, depth + 1, kt))
            stack.extend(reversed(children))
        elif isinstance(node, (list, tuple)):
            if len(node) > sc.nodes:
                sc.truncated = True
            stack.extend((v, depth + 1, ktype) for v in reversed(node[:sc.nodes]))
        else:
            _scan_scalar(sc, node, ktype)
        if len(stack) > sc.nodes:              # what lies deeper than the remaining node budget is never reached
            del stack[:len(stack) - sc.nodes]
            sc.truncated = True
    return ScanResult(dict(sorted(sc.counts.items())), sc.scanned, sc.truncated)


def _scan_scalar(sc: _Scanner, node: Any, ktype: str | None) -> None:
    s = _scalar_text(node, sc.budget)
    found: Counter[str] = sc.text(sc.take(s)) if s is not None else Counter()
    if ktype is not None and not found:
        raw = s if s is not None else (str(node) if isinstance(node, int) and not isinstance(node, bool)
                                       and -10 ** 20 < node < 10 ** 20 else None)
        bare = re.sub(r"[\s-]", "", raw[:64]) if raw is not None else ""
        if ktype == "pii.us_ssn" and bare.isdigit() and ssn_ok(bare):
            found[ktype] += 1
        elif ktype == "pii.phone" and bare.lstrip("+").isdigit() and sc.phone_ok(bare, bare=True):
            found[ktype] += 1
        elif ktype == "pii.payment_card" and bare.isdigit() and card_digits_ok(bare):
            found[ktype] += 1
        elif (ktype in _KEY_DECIDED or not ktype.startswith("pii.")) and _present(node):
            found[ktype] += 1
    elif ktype is not None and ktype.startswith("secret.") and _present(node) \
            and not any(k.startswith("secret.") for k in found):
        found[ktype] += 1
    sc.counts.update(found)


def scan_response(doc: Any, *, max_bytes: int = 1 << 20, max_depth: int = 32) -> dict[str, int]:
    """Counts of sensitive values in a response, keyed "category.type" (e.g. {"pii.email": 2}).
    Never returns or keeps a matched value; bounded by max_bytes of strings and max_depth nesting."""
    return scan(doc, max_bytes=max_bytes, max_depth=max_depth).counts

