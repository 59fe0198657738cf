"""Explicit globs for tool names, prompt names and resource URIs.

Only `*` (within one `/`-separated segment) and `**` (across segments) are special; every
other character, including `.`, `?` and `[`, is literal. Names are otherwise compared exactly,
so a rule never matches more than its author could read off the pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def is_glob(pattern: str) -> bool:
    """True when the pattern contains a wildcard (anything else is an exact name)."""
    return "*" in pattern


@dataclass(frozen=True, slots=True)
class Matcher:
    """A compiled pattern; call it (or `.matches`) with a name."""

    pattern: str
    _regex: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def matches(self, name: str) -> bool:
        if self._regex is None:
            return name == self.pattern
        return self._regex.fullmatch(name) is not None

    __call__ = matches


def glob_problem(pattern: str) -> str | None:
    """Why a pattern is rejected, or None. Three or more stars in a row mean nothing clear."""
    if not pattern:
        return "pattern must not be empty"
    if "***" in pattern:
        return "'***' is ambiguous: use '*' (one segment) or '**' (any segments)"
    return None


def compile_glob(pattern: str) -> Matcher:
    """Compile once at policy load; raises ValueError for a pattern `glob_problem` rejects."""
    problem = glob_problem(pattern)
    if problem:
        raise ValueError(f"invalid glob {pattern!r}: {problem}")
    if not is_glob(pattern):
        return Matcher(pattern)
    parts: list[str] = []
    for piece in re.split(r"(\*\*|\*)", pattern):
        if piece == "**":
            parts.append(".*")
        elif piece == "*":
            parts.append("[^/]*")
        elif piece:
            parts.append(re.escape(piece))
    return Matcher(pattern, re.compile("".join(parts), re.DOTALL))
