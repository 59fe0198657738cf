"""JSON Schema patterns as ECMA-262 regular expressions (the `u` flag, as 2020-12 asks).

Two engines, each for what it guarantees:
- validity is judged by `regress` (the Rust ECMA-262 engine of the Boa JS engine, Python bindings by
  jsonschema's author): a pattern is unusable only when ECMA-262 rejects it;
- matching runs on jsonschema-rs's fancy-regex with a backtrack limit. Its regex-crate automaton
  decides every pattern without lookaround/backreferences in linear time, and the backtracking it
  needs for those is capped, so a published `^(a+)+$` cannot hang a Check (regress has no limit).
jsonschema-rs translates some ECMA syntax itself, but not in every pattern (it leaves those with
backreferences as they are, where `.` then matches `\\r` and `\\w` is Unicode-wide), so
`_engine_source` spells every escape, `.` and class-set character explicitly (`\\d` -> `[\\u{30}-\\u{39}]`,
`\\b` -> ASCII lookarounds, `\\k<name>` -> its number, ...), in a syntax both engines read alike.
tests/unit/specs/test_ecma_patterns.py proves the verdicts equal Node's RegExp on a corpus of
published patterns and on seeded random ones. One known difference, on the safe side: a
backreference to a group that took no part in the match (`^(?:(a)|b)\\1$` on "b") matches the empty
string in ECMA and fails here, a deny where ECMA allows.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import regress

BACKTRACK_LIMIT = 1_000_000    # fancy-regex's default; lower ones deny long legitimate inputs (`\b` on 64 KiB)
_SYNTAX = frozenset("^$\\.*+?()[]{}|/")
_WORD = "A-Za-z0-9_"
# ECMA's \b and \B are ASCII (\w is [A-Za-z0-9_]); fancy-regex's are Unicode, so spell them out.
_BOUNDARY = f"(?:(?<=[{_WORD}])(?![{_WORD}])|(?<![{_WORD}])(?=[{_WORD}]))"
_NOT_BOUNDARY = f"(?:(?<=[{_WORD}])(?=[{_WORD}])|(?<![{_WORD}])(?![{_WORD}]))"
_NOTHING, _ANYTHING = r"[^\u{0}-\u{10FFFF}]", r"[\u{0}-\u{10FFFF}]"
_DOT = r"[^\u{A}\u{D}\u{2028}\u{2029}]"      # ECMA's `.` excludes all four line terminators
_HEX = frozenset("0123456789abcdefABCDEF")
_CONTROL = {"t": 9, "n": 10, "v": 11, "f": 12, "r": 13}
_SHORTHANDS = {"d": ((0x30, 0x39),), "w": ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
               "s": ((0x9, 0xD), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
                     (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000),
                     (0xFEFF, 0xFEFF))}


class PatternError(ValueError):
    """A published pattern that is not an ECMA-262 regular expression (the message says why)."""


class EcmaPattern:
    """One published pattern: judged valid at construction, its matcher built on first use.

    The full-schema jsonschema-rs validator carries its own copy of every pattern and decides the
    allow path, so this one serves the deny path's message and schemas that validator cannot take
    (ValidatorCache builds it up front for those). Built lazily because a Unicode class under a
    counted repeat costs megabytes in the engine (`[\\p{L} .'-]{1,80}`: ~4 MiB).
    """

    __slots__ = ("source", "engine_source", "_options", "_engine")

    def __init__(self, source: str, engine_source: str, options: Any) -> None:
        self.source, self.engine_source, self._options = source, engine_source, options
        self._engine: Any = None

    def engine(self) -> Any:
        """The compiled matcher (built once); PatternError if the bounded engine can't take it."""
        if self._engine is None:
            try:
                self._engine = jsonschema_rs.validator_for({"pattern": self.engine_source},
                                                           pattern_options=self._options)
            except Exception as e:  # noqa: BLE001 - valid ECMA the bounded engine cannot take: fail closed
                raise PatternError(f"{_quote(self.source)}: not supported by the bounded matcher "
                                   f"({str(e).splitlines()[0][:120]})") from None
        return self._engine

    def search(self, text: str) -> bool:
        """Does the pattern match anywhere in `text` (JSON Schema patterns are not anchored)?"""
        engine = self.engine()
        try:
            return bool(engine.is_valid(text))
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
        """The pattern, judged (PatternError if it is not ECMA-262); its matcher comes on first use."""
        hit = self._cache.get(source)
        if hit is None:
            try:
                hit = EcmaPattern(source, _engine_source(ecma_source(source)), self._options)
            except PatternError as e:
                hit = e
            except (IndexError, KeyError, ValueError) as e:   # the rewrite met a form regress took: deny
                hit = PatternError(f"{_quote(source)}: could not be rewritten for the bounded matcher ({e!r})")
            if len(self._cache) >= self._max:
                self._cache.pop(next(iter(self._cache)))
            self._cache[source] = hit
        if isinstance(hit, PatternError):
            raise hit
        return hit


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
    raise PatternError(f"{_quote(source)} is not an ECMA-262 regular expression: {strict_error[:100]}")


def _quote(source: str) -> str:
    """The pattern for a message: long ones cut, so the reason after it survives the log's limits."""
    return repr(source if len(source) <= 120 else source[:117] + "...")


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
    if len(h) == 4 and all(ch in _HEX for ch in h) and 0xD800 <= int(h, 16) <= 0xDFFF:
        return int(h, 16)
    return None


def _hex(cp: int) -> str:
    """`\\u{..}`: read alike by fancy-regex and ECMA (jsonschema-rs checks a draft-07 pattern as ECMA)."""
    return f"\\u{{{cp:X}}}"


def _ranges(rs: tuple[tuple[int, int], ...]) -> str:
    return "".join(_hex(a) if a == b else f"{_hex(a)}-{_hex(b)}" for a, b in rs)


def _complement(rs: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    out, lo = [], 0
    for a, b in rs:
        if a > lo:
            out.append((lo, a - 1))
        lo = b + 1
    return (*out, (lo, 0x10FFFF))


def _shorthand(e: str, in_class: bool) -> str:
    """ECMA's \\d \\w \\s (and negations) as explicit ranges: the engine's own are Unicode-wide
    wherever jsonschema-rs leaves a pattern untranslated (those with backreferences)."""
    rs = _SHORTHANDS[e.lower()]
    body = _ranges(_complement(rs) if e.isupper() else rs)
    return body if in_class else f"[{body}]"


def _escape(src: str, i: int, in_class: bool, names: dict[str, int]) -> tuple[str, int]:
    """(engine text, length consumed) for the escape at src[i] (a valid u-mode escape)."""
    e = src[i + 1]
    if e in "dDwWsS":
        return _shorthand(e, in_class), 2
    if e in "bB" and not in_class and src[i + 2:i + 3] in ("*", "+", "?", "{"):
        # an assertion can't be repeated in u mode; regress lets `\\b*` through, RegExp does not
        raise PatternError(f"{_quote(src)} is not an ECMA-262 regular expression: nothing to repeat")
    if e == "b":
        return (_hex(8) if in_class else _BOUNDARY), 2
    if e == "B":
        return _NOT_BOUNDARY, 2
    if e in _CONTROL:
        return _hex(_CONTROL[e]), 2
    if e == "c":
        return _hex(ord(src[i + 2]) % 32), 3
    if e == "0" and not src[i + 2:i + 3].isdigit():
        return _hex(0), 2
    if e == "x":
        return _hex(int(src[i + 2:i + 4], 16)), 4
    if e == "u" and src.startswith("{", i + 2):
        end = src.index("}", i)
        return _hex(int(src[i + 3:end], 16)), end + 1 - i
    if e == "u":
        hi = _surrogate(src, i)
        if hi is None:
            return _hex(int(src[i + 2:i + 6], 16)), 6
        lo = _surrogate(src, i + 6) if src.startswith("\\u", i + 6) else None
        if hi <= 0xDBFF and lo is not None and lo >= 0xDC00:
            return _hex(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)), 12
        if in_class:   # a lone surrogate can't occur in a str the engine takes
            raise PatternError(f"{_quote(src)}: a lone surrogate in a class is not supported")
        return _NOTHING, 6
    if e in "pP":
        end = src.index("}", i)
        return src[i:end + 1], end + 1 - i
    if e == "k":
        end = src.index(">", i)
        return f"\\{names[src[i + 3:end]]}", end + 1 - i
    if e.isdigit():               # a backreference: its digits
        j = i + 1
        while j < len(src) and src[j].isdigit():
            j += 1
        return src[i:j], j - i
    return _hex(ord(e)), 2        # an identity escape (syntax character, `/`, `-`)


def _engine_source(src: str) -> str:
    """A valid u-mode ECMA pattern spelled so that fancy-regex reads it the same way: every escape,
    `.` and class-set character made explicit, whether or not jsonschema-rs translates it."""
    names = _group_names(src)
    out: list[str] = []
    i, in_class = 0, False
    while i < len(src):
        c = src[i]
        if c == "\\":
            text, n = _escape(src, i, in_class, names)
            out.append(text)
            i += n
            continue
        if in_class:
            if c == "]":
                in_class = False
                out.append(c)
            elif c in "[&~":          # literal in ECMA, set syntax to the engine
                out.append(_hex(ord(c)))
            else:
                out.append(c)
        elif c == "[":
            if src.startswith("[]", i):
                out.append(_NOTHING)
                i += 2
                continue
            if src.startswith("[^]", i):
                out.append(_ANYTHING)
                i += 3
                continue
            in_class = True
            out.append("[^" if src.startswith("[^", i) else "[")
            i += 2 if src.startswith("[^", i) else 1
            continue
        elif c == ".":
            out.append(_DOT)
        else:
            out.append(c)
        i += 1
    return "".join(out)
