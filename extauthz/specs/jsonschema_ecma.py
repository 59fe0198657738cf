"""Both validators read JSON Schema patterns as ECMA-262 (extauthz/specs/patterns.py).

jsonschema (the reference, and the source of error messages) calls `re.search` on published
patterns in four places (`pattern`, `patternProperties`, and the additional/unevaluated property
helpers) and has no hook for another engine, so the module-level `re` of those jsonschema modules
is replaced by `EcmaRe`, whose `search` is the bounded ECMA matcher and whose other attributes are
`re`'s. Patching the module globals reaches every such call, the ones added in later jsonschema
versions to these modules too; tests/unit/specs/test_ecma_patterns.py fails if it stops reaching
them. jsonschema-rs (the verdict) gets the patterns rewritten for its engine, with the same limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
from jsonschema import _keywords, _legacy_keywords, _utils

from extauthz.specs.patterns import PatternCompiler, PatternError

# draft-04..07 `dependencies` holds schemas too (besides 2019+'s `dependentSchemas`).
_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")
_ONE = ("additionalProperties", "unevaluatedProperties", "items", "additionalItems", "unevaluatedItems",
        "contains", "propertyNames", "not", "if", "then", "else", "contentSchema")
_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")

PATTERNS = PatternCompiler()   # process-wide: jsonschema's module-level calls have no other handle


class EcmaRe:
    """Stands in for `re` inside jsonschema: `search` is ECMA-262, the rest is `re`."""

    def __init__(self, compiler: PatternCompiler) -> None:
        self._compiler = compiler

    def search(self, pattern: str, string: str, flags: int = 0) -> bool:
        try:
            return self._compiler.compile(pattern).search(string)
        except PatternError as e:   # only schemas that passed check_schema get here; keep re's contract
            raise re.error(str(e)) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)


def install(compiler: PatternCompiler = PATTERNS) -> None:
    """Point jsonschema's pattern matching at `compiler` (idempotent)."""
    for module in (_keywords, _utils, _legacy_keywords):
        if not isinstance(getattr(module, "re", None), EcmaRe):
            if getattr(module, "re", None) is not re:
                raise RuntimeError(f"{module.__name__} no longer uses `re`: ECMA patterns need a new hook")
            module.re = EcmaRe(compiler)  # type: ignore[attr-defined]


def format_checker(cls: type, compiler: PatternCompiler = PATTERNS) -> jsonschema.FormatChecker:
    """`cls`'s format checker for checking schemas, with `regex` judged as ECMA-262."""
    base = cls.FORMAT_CHECKER  # type: ignore[attr-defined]
    checker = jsonschema.FormatChecker(formats=())
    checker.checkers = dict(base.checkers)

    def is_regex(instance: object) -> bool:
        if isinstance(instance, str):
            compiler.compile(instance)
        return True

    checker.checkers["regex"] = (is_regex, (PatternError,))
    return checker


def _children(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in _MAPS:
        v = node.get(key)
        if isinstance(v, dict):
            yield from (s for s in v.values() if isinstance(s, dict))
    for key in _ONE:
        if isinstance(node.get(key), dict):
            yield node[key]
    for key in _LISTS:
        if isinstance(node.get(key), list):
            yield from (s for s in node[key] if isinstance(s, dict))


def patterns_in(schema: dict[str, Any]) -> list[str]:
    """Every pattern a schema publishes (`pattern` values, `patternProperties` keys)."""
    out: list[str] = []
    walk(schema, lambda node: out.extend(_node_patterns(node)))
    return out


def _node_patterns(node: dict[str, Any]) -> list[str]:
    found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
    if isinstance(node.get("patternProperties"), dict):
        found.extend(k for k in node["patternProperties"] if isinstance(k, str))
    return found


def walk(schema: dict[str, Any], visit: Callable[[dict[str, Any]], None]) -> None:
    """Every subschema, by keyword and by local `$ref` (which may point anywhere, `#/components/..`)."""
    stack, seen = [schema], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        visit(node)
        stack.extend(_children(node))
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target = _pointer(schema, ref)
            if isinstance(target, dict):
                stack.append(target)


def _pointer(schema: dict[str, Any], ref: str) -> Any:
    target: Any = schema
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            target = target.get(part) if isinstance(target, dict) else None
    return target


def for_engine(schema: dict[str, Any], compiler: PatternCompiler = PATTERNS) -> dict[str, Any]:
    """`schema` (a private copy, changed in place) with its patterns spelled for jsonschema-rs."""
    def spell(source: str) -> str:
        return compiler.compile(source).engine_source

    def rewrite(node: dict[str, Any]) -> None:
        if isinstance(node.get("pattern"), str):
            node["pattern"] = spell(node["pattern"])
        pp = node.get("patternProperties")
        if isinstance(pp, dict):
            spelled: dict[str, Any] = {}
            for k, v in pp.items():
                key = spell(k) if isinstance(k, str) else k
                # two spellings of one pattern (`\\x41`, `\\u0041`): a key they match must pass both
                spelled[key] = {"allOf": [spelled[key], v]} if key in spelled else v
            node["patternProperties"] = spelled
    walk(schema, rewrite)
    return schema
