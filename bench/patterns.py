"""ECMA-262 patterns (extauthz/specs/patterns.py): compile cost, validation cost of a small call
before/after (same run), and the bound on catastrophic-backtracking patterns.

    python bench/patterns.py

"Before" is the previous path, measured in this process: jsonschema-rs with its default pattern
options on the published schema, and jsonschema with Python's `re` for the deny-path message.
Prints numbers only; nothing is asserted.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import regress
from jsonschema import _keywords, _legacy_keywords, _utils

from extauthz.specs.patterns import BACKTRACK_LIMIT, PatternCompiler
from extauthz.specs.validators import CompiledSchema, ValidatorCache

CORPUS = Path(__file__).resolve().parent.parent / "tests/unit/specs/data/ecma_patterns.json"
SMALL = {"type": "object", "properties": {
    "name": {"type": "string", "pattern": r"^[A-Za-z .'-]{1,80}$"},   # ASCII: the old path could take it
    "limit": {"type": "integer", "minimum": 1, "maximum": 100},
    "format": {"type": "string", "enum": ["csv", "json"]}}, "required": ["name"]}
OK, BAD = {"name": "Ada O'Neil", "limit": 10, "format": "csv"}, {"name": "Ada1", "limit": 10}


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def timed_ms(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t) * 1e3


def main() -> int:
    patterns = [e["pattern"] for e in json.loads(CORPUS.read_text(encoding="utf-8"))["patterns"]]
    PatternCompiler().compile(r"^\p{L}$").engine()      # the engine's Unicode tables load once per process
    judged, built = [], []
    for p in patterns:
        pc = PatternCompiler()
        pattern, ms = timed_ms(lambda: pc.compile(p))
        judged.append(ms * 1e3)
        built.append((timed_ms(pattern.engine)[1] * 1e3, p))
    judged.sort()
    built.sort()
    print(f"compile, per pattern ({len(patterns)} corpus patterns), once per pattern source per process:")
    print(f"  judged (regress validity + rewrite): p50 {statistics.median(judged):.0f} us   "
          f"p90 {judged[int(len(judged) * 0.9)]:.0f} us   max {judged[-1]:.0f} us")
    b = [c for c, _ in built]
    print(f"  its matcher (built on first denial): p50 {statistics.median(b):.0f} us   "
          f"p90 {b[int(len(b) * 0.9)]:.0f} us   max {b[-1]:.0f} us ({built[-1][1][:40]!r}...)")
    costs = [j + c for j, (c, _) in zip(judged, built)]

    cache = ValidatorCache()
    after = cache.get(SMALL, strict=True)
    assert isinstance(after, CompiledSchema)
    before_fast = jsonschema_rs.validator_for({**SMALL, "additionalProperties": False}, validate_formats=False)
    before_ref = jsonschema.Draft202012Validator({**SMALL, "additionalProperties": False})
    n = 50_000
    print("\nsmall call (3 properties, one pattern), allow path:")
    b, a = per_call_us(lambda: before_fast.is_valid(OK), n), per_call_us(lambda: after.is_valid(OK), n)
    print(f"  before {b:.2f} us   after {a:.2f} us")
    a_deny = per_call_us(lambda: after.first_error(BAD), 5_000)
    ecma = [m.re for m in (_keywords, _utils, _legacy_keywords)]
    for m in (_keywords, _utils, _legacy_keywords):
        m.re = re                                       # type: ignore[attr-defined] - the old reference
    try:
        def old_deny() -> Any:
            return before_fast.is_valid(BAD) or jsonschema.exceptions.best_match(before_ref.iter_errors(BAD))
        b_deny = per_call_us(old_deny, 5_000)
    finally:
        for m, shim in zip((_keywords, _utils, _legacy_keywords), ecma):
            m.re = shim                                 # type: ignore[attr-defined]
    print(f"small call, deny path with its message:\n  before {b_deny:.1f} us   after {a_deny:.1f} us")
    issue = cache.get({**SMALL, "properties": {**SMALL["properties"], "name": {
        "type": "string", "pattern": r"^[\p{L} .'-]{1,80}$"}}}, strict=True)
    assert isinstance(issue, CompiledSchema)
    print(f"  the issue's \\p{{L}} schema (unusable before): allow {per_call_us(lambda: issue.is_valid({'name': 'Zoë'}), n):.2f} us")

    def rss_kib() -> int:
        return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0])
    before_rss, kept = rss_kib(), []
    for i in range(20):
        kept.append(cache.get({"type": "string", "pattern": rf"^[\p{{L}} .'-]{{1,80}}{i}$"}, strict=True))
    mid_rss = rss_kib()
    for k in kept:
        assert isinstance(k, CompiledSchema)
        k.first_error(7)                            # not a string: no match runs, the matcher is not built
        k.first_error("1")                          # a denial: builds the deny-path matcher
    print(f"\nmemory, a schema with `[\\p{{L}} .'-]{{1,80}}`: {(mid_rss - before_rss) / 20 / 1024:.1f} MiB compiled, "
          f"+{(rss_kib() - mid_rss) / 20 / 1024:.1f} MiB once its first denial builds the message's matcher")

    print("\ncatastrophic backtracking, 64 KiB + '!' (no match):")
    evil = "a" * 65536 + "!"
    for p in (r"^(a+)+$", r"^(a|aa)+\1$", r"^(?=(a+)+$)a"):
        c = cache.get({"type": "string", "pattern": p}, strict=True)
        assert isinstance(c, CompiledSchema)
        verdict, ms = timed_ms(lambda: c.is_valid(evil))
        _, ms_msg = timed_ms(lambda: c.first_error(evil))
        print(f"  {p:16} verdict {verdict}   {ms:7.2f} ms   with message {ms_msg:7.2f} ms")
    for k in (16, 20, 22):
        _, ms = timed_ms(lambda: regress.Regex(r"^(a+)+$", "u").find("a" * k + "!"))
        print(f"  (unbounded regress, the reason it only judges validity: {k} chars {ms:8.1f} ms)")
    for k in (16, 20, 22):
        _, ms = timed_ms(lambda: re.search(r"^(a+)+$", "a" * k + "!"))
        print(f"  (Python re, the old deny-path message on 64 KiB never returned: {k} chars {ms:8.1f} ms)")
    print(f"  backtrack limit {BACKTRACK_LIMIT:,} steps per match")
    print(f"SUMMARY patterns compile_p50_us={statistics.median(costs):.0f} allow_before_us={b:.2f} "
          f"allow_after_us={a:.2f} deny_before_us={b_deny:.1f} deny_after_us={a_deny:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
