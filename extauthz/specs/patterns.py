"""JSON Schema patterns as ECMA-262 regular expressions (the `u` flag, as 2020-12 asks).

Two engines, each for what it guarantees:
- validity is judged by `regress` (the Rust ECMA-262 engine of the Boa JS engine, Python bindings by
  jsonschema's author): a pattern is unusable only when ECMA-262 rejects it;
- matching runs on jsonschema-rs's fancy-regex with a backtrack limit. Its regex-crate automaton
  decides every pattern without lookaround/backreferences in linear time, and the backtracking it
  needs for those is capped, so a published `^(a+)+$` cannot hang a Check (regress has no limit).
jsonschema-rs already reads patterns as ECMA (`\\d`, `\\w`, `\\s`, `.`, `$`, `\\p{..}`, `\\u{..}`, `\\cX`);
`_engine_source` rewrites the few constructs it reads otherwise (`\\b`, `\\B`, `[\\b]`, `[]`, `[^]`,
`\\0`, `\\k<name>`, escaped surrogate pairs). tests/unit/specs/test_ecma_patterns.py proves the
verdicts equal Node's RegExp on a corpus of published patterns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
import regress

BACKTRACK_LIMIT = 1_000_000    # fancy-regex's default; lower ones deny long legitimate inputs (`\b` on 64 KiB)
_SYNTAX = frozenset("^$\\.*+?()[]{}|/")
_WORD = "A-Za-z0-9_"
# ECMA's \b and \B are ASCII (\w is [A-Za-z0-9_]); fancy-regex's are Unicode, so spell them out.
_BOUNDARY = f"(?:(?<=[{_WORD}])(?![{_WORD}])|(?<![{_WORD}])(?=[{_WORD}]))"
_NOT_BOUNDARY = f"(?:(?<=[{_WORD}])(?=[{_WORD}])|(?<![{_WORD}])(?![{_WORD}]))"
_NOTHING, _ANYTHING = r"[^\s\S]", r"[\s\S]"


class PatternError(ValueError):
    """A published pattern that is not an ECMA-262 regular expression (the message says why)."""


@dataclass(frozen=True, slots=True)
class EcmaPattern:
    source: str                          # as published
    engine_source: str                   # the same language, spelled for the bounded engine
    _engine: Any = field(repr=False, compare=False)

    def search(self, text: str) -> bool:
        """Does the pattern match anywhere in `text` (JSON Schema patterns are not anchored)?"""
        try:
            return bool(self._engine.is_valid(text))
        except Exception:   # noqa: BLE001 - a string the engine can't take (lone surrogate): no match
            return False


class PatternCompiler:
    """ECMA patterns compiled once, by source; bounded (oldest entry evicted first)."""

    def __init__(self, *, backtrack_limit: int = BACKTRACK_LIMIT, max_entries: int = 50_000) -> None:
        self._options = jsonschema_rs.FancyRegexOptions(backtrack_limit=backtrack_limit)
        self._cache: dict[str, EcmaPattern | PatternError] = {}
        self._max = max_entries

    @property
    def options(self) -> Any:
        """The pattern options a full-schema jsonschema-rs validator must use to agree with us."""
        return self._options

    def compile(self, source: str) -> EcmaPattern:
        hit = self._cache.get(source)
        if hit is None:
            hit = self._compile(source)
            if len(self._cache) >= self._max:
                self._cache.pop(next(iter(self._cache)))
            self._cache[source] = hit
        if isinstance(hit, PatternError):
            raise hit
        return hit

    def _compile(self, source: str) -> EcmaPattern | PatternError:
        try:
            ecma = ecma_source(source)
            engine_src = _engine_source(ecma)
            engine = jsonschema_rs.validator_for({"pattern": engine_src}, pattern_options=self._options)
        except PatternError as e:
            return e
        except Exception as e:  # noqa: BLE001 - valid ECMA the bounded engine cannot take: fail closed
            return PatternError(f"{source!r}: not supported by the bounded matcher "
                                f"({str(e).splitlines()[0][:120]})")
        return EcmaPattern(source, engine_src, engine)


def ecma_source(source: str) -> str:
    """`source` as a valid `u`-mode ECMA-262 pattern, or PatternError.

    Patterns written for Python or for non-`u` JavaScript often escape punctuation that needs no
    escape (`[\\w\\-\\@\\.]`, `\\_`, `\\'`): ECMA-262 without `u` (Annex B) reads those as the character
    itself and only `u` mode rejects them, so they are read as that character. Escaped letters or
    digits with no ECMA meaning (`\\A`, `\\Z`, `\\z`) stay errors: they mean something else in Python.
    """
    try:
        regress.Regex(source, "u")
        return source
    except regress.RegressError as e:
        strict_error = str(e)
    relaxed = _relax_identity_escapes(source)
    if relaxed != source:
        try:
            regress.Regex(source)          # valid ECMA-262 without `u` ...
            regress.Regex(relaxed, "u")    # ... and, read that way, valid with it
            return relaxed
        except regress.RegressError:
            pass
    raise PatternError(f"{source!r} is not an ECMA-262 regular expression: {strict_error}")


def _relax_identity_escapes(source: str) -> str:
    out: list[str] = []
    i, in_class = 0, False
    while i < len(source):
        c = source[i]
        if c == "\\" and i + 1 < len(source):
            e = source[i + 1]
            if e.isalnum() or e in _SYNTAX or (in_class and e == "-"):
                out.append(c + e)
            else:
                out.append(f"\\u{{{ord(e):X}}}")
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


def _group_names(src: str) -> dict[str, int]:
    """Named capture groups -> their numbers (ECMA numbers named and unnamed groups together)."""
    names: dict[str, int] = {}
    n, i, in_class = 0, 0, False
    while i < len(src):
        c = src[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            if not src.startswith("?", i + 1):
                n += 1
            elif src.startswith("?<", i + 1) and src[i + 3:i + 4] not in ("=", "!"):
                n += 1
                names[src[i + 3:src.index(">", i)]] = n
        i += 1
    return names


def _surrogate(src: str, i: int) -> int | None:
    """The code unit of a `\\uHHHH` escape at i when it is a surrogate, else None."""
    h = src[i + 2:i + 6]
    if len(h) == 4 and all(ch in "0123456789abcdefABCDEF" for ch in h) and 0xD800 <= int(h, 16) <= 0xDFFF:
        return int(h, 16)
    return None


def _engine_source(src: str) -> str:
    """Rewrite a valid u-mode ECMA pattern where fancy-regex would read it otherwise."""
    names = _group_names(src)
    out: list[str] = []
    i, in_class = 0, False
    while i < len(src):
        c = src[i]
        if c == "\\":
            e = src[i + 1]
            if e == "b":
                out.append(r"\x08" if in_class else _BOUNDARY)
            elif e == "B":
                out.append(_NOT_BOUNDARY)
            elif e == "0" and not src[i + 2:i + 3].isdigit():
                out.append(r"\x00")
            elif e == "k" and src.startswith("<", i + 2):
                end = src.index(">", i)
                out.append(f"\\{names[src[i + 3:end]]}")
                i = end + 1
                continue
            elif e == "u" and (hi := _surrogate(src, i)) is not None:
                lo = _surrogate(src, i + 6) if src.startswith("\\u", i + 6) else None
                if 0xD800 <= hi <= 0xDBFF and lo is not None and lo >= 0xDC00:
                    out.append(f"\\u{{{0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00):X}}}")
                    i += 12
                    continue
                if in_class:   # a lone surrogate can't occur in a str the engine takes
                    raise PatternError(f"{src!r}: a lone surrogate in a class is not supported")
                out.append(_NOTHING)
                i += 6
                continue
            else:
                out.append(c + e)
            i += 2
            continue
        if not in_class and c == "[":
            if src.startswith("[]", i):
                out.append(_NOTHING)
                i += 2
                continue
            if src.startswith("[^]", i):
                out.append(_ANYTHING)
                i += 3
                continue
            in_class = True
        elif in_class and c == "]":
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)
