"""Tool-argument validators: compiled once per (schema hash, strictness), never per request.

Strict mode closes object schemas. Most MCP servers publish `properties` without
`additionalProperties: false`, and an undeclared field ("include_internal_notes") is exactly the
attack to stop, so every object schema that declares `properties` is treated as closed unless the
policy says `as-published`. For drafts that have `unevaluatedProperties` (2019-09, 2020-12) a
schema that combines `properties` with `allOf`/`anyOf`/`oneOf`/`$ref` is closed with it, so
composition keeps working; subschemas that are only branches of such a composition stay open
(their parent closes them). Draft-07 and older have no such keyword: a composed schema there is
closed at its own level with `additionalProperties`, covering the properties the composition
declares, when those can be read statically.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema import validators as js_validators
from jsonschema.exceptions import SchemaError

from extauthz.schemawalk import subschemas
from extauthz.specs import jsonschema_ecma
from extauthz.specs.model import canonical_hash
from extauthz.specs.patterns import PatternError

jsonschema_ecma.install()   # JSON Schema patterns are ECMA-262, for the reference validator too

_COMPOSE = ("allOf", "anyOf", "oneOf")
_MODERN = ("https://json-schema.org/draft/2020-12/schema", "https://json-schema.org/draft/2019-09/schema")


try:   # compiled (Rust) validator: ~100x faster on the allow path; verdicts proven equal to
    import jsonschema_rs  # jsonschema's on a generated corpus (tests/unit/specs/test_differential.py)
except ImportError:  # pragma: no cover - optional speed-up
    jsonschema_rs = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class CompiledSchema:
    validator: Any            # a jsonschema Validator: the reference, and the source of error messages
    schema_hash: str
    strict: bool
    fast: Any = None          # a jsonschema_rs validator for the same (closed) schema, when it compiles

    def is_valid(self, instance: Any) -> bool:
        """The verdict. The compiled validator answers when present; jsonschema otherwise."""
        if self.fast is not None:
            return bool(self.fast.is_valid(instance))
        try:
            return bool(self.validator.is_valid(instance))
        except (RecursionError, re.error):  # $refs that loop without consuming input; patterns
            return False                    # that are valid alone but not joined (jsonschema joins them)

    def first_error(self, instance: Any) -> str | None:
        """None when valid; otherwise the most relevant error, for the log (deny path only)."""
        if self.is_valid(instance):
            return None
        try:
            err = jsonschema.exceptions.best_match(self.validator.iter_errors(instance))
        except RecursionError:
            return "schema $ref cycle"
        except re.error as e:
            return str(e)[:300]
        if err is None:
            return "invalid"   # the compiled validator refused it; deny whatever the reference says
        where = "/" + "/".join(str(p) for p in err.absolute_path)
        return f"{where}: {err.message}"[:300]


@dataclass(frozen=True, slots=True)
class Invalid:
    """A published schema that cannot be used: every call through it is denied, saying why."""

    reason: str


Compiled = CompiledSchema | Invalid


def _draft_of(schema: dict[str, Any]) -> str:
    uri = schema.get("$schema")
    return uri.rstrip("#") if isinstance(uri, str) else "https://json-schema.org/draft/2020-12/schema"


def _subschemas(node: dict[str, Any]) -> Iterator[tuple[dict[str, Any], bool]]:
    """Yield (child schema, is_composition_branch)."""
    for key, _, sub in subschemas(node):
        if isinstance(sub, dict):
            yield sub, _partial(node, key)


def _partial(parent: dict[str, Any], key: str) -> bool:
    """Is a branch under `key` only part of the object (its parent closes it), or the whole value?

    allOf branches always describe part of one object. anyOf/oneOf branches are whole
    alternatives (pydantic's `anyOf: [{$ref}, {type: null}]`) unless the parent declares
    properties of its own beside them (a discriminated union sharing the parent's fields).
    """
    return key == "allOf" or (key in _COMPOSE and "properties" in parent)


def _deref(branch: Any, root: dict[str, Any]) -> Any:
    """A local `$ref` branch replaced by its target (draft-07 ignores a $ref's siblings)."""
    if isinstance(branch, dict) and isinstance(branch.get("$ref"), str):
        ref = branch["$ref"]
        return _lookup(root, ref) if ref.startswith("#/") else None
    return branch


def _static_properties(node: dict[str, Any], root: dict[str, Any], seen: int = 0) -> set[str] | None:
    """Property names a draft-07 composition declares (local $refs followed), or None if they
    can't be read statically (remote refs, or nesting deeper than 8)."""
    names = set(node.get("properties", {}) or {})
    for key in [k for k in _COMPOSE if _partial(node, k)]:
        for branch in node.get(key, []) or []:
            branch = _deref(branch, root)
            if not isinstance(branch, dict) or not branch or seen > 8:
                return None
            sub = _static_properties(branch, root, seen + 1)
            if sub is None:
                return None
            names |= sub
    return names


def close_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `schema` with every object schema that declares properties closed."""
    modern = _draft_of(schema) in _MODERN
    root = copy.deepcopy(schema)
    referenced_by_composition: set[str] = set()
    stack: list[tuple[dict[str, Any], bool]] = [(root, False)]
    seen: set[int] = set()
    while stack:
        node, is_branch = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for key in _COMPOSE:
            if _partial(node, key):
                for b in node.get(key, []) or []:
                    if isinstance(b, dict) and isinstance(b.get("$ref"), str):
                        referenced_by_composition.add(b["$ref"])
        composed = any(k in node for k in _COMPOSE) or "$ref" in node
        declares = "properties" in node or any(
            isinstance(b, dict) and "properties" in b for b in
            (_deref(b, schema) for b in node.get("allOf", []) or []))
        already = any(k in node for k in ("additionalProperties", "unevaluatedProperties", "patternProperties"))
        if declares and not already and not is_branch:
            if composed and modern:
                node["unevaluatedProperties"] = False
            elif composed:
                names = _static_properties(node, schema)
                if names is not None:
                    node.setdefault("properties", {})
                    for n in names - set(node["properties"]):
                        node["properties"][n] = True
                    node["additionalProperties"] = False
            else:
                node["additionalProperties"] = False
        stack.extend(_subschemas(node))
    # A definition that is itself a branch of a composition must stay open: its parent closes it.
    for ref in referenced_by_composition:
        if ref.startswith("#/"):
            target: Any = root
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part) if isinstance(target, dict) else None
            if isinstance(target, dict) and target.get("additionalProperties") is False:
                if "additionalProperties" not in _lookup(schema, ref):
                    del target["additionalProperties"]
            if isinstance(target, dict) and target.get("unevaluatedProperties") is False:
                if "unevaluatedProperties" not in _lookup(schema, ref):
                    del target["unevaluatedProperties"]
    return root


def _lookup(schema: dict[str, Any], ref: str) -> dict[str, Any]:
    target: Any = schema
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        target = target.get(part) if isinstance(target, dict) else None
    return target if isinstance(target, dict) else {}


class ValidatorCache:
    """Compiled validators keyed by (schema hash, strict). Bounded; compiling costs ~60x validating."""

    def __init__(self, max_entries: int = 20000, *, fast: bool = True) -> None:
        self._cache: dict[tuple[str, bool], Compiled] = {}
        self._checkers: dict[type, jsonschema.FormatChecker] = {}
        self._max = max_entries
        self._fast = fast and jsonschema_rs is not None

    @property
    def size(self) -> int:
        return len(self._cache)

    def get(self, schema: dict[str, Any], strict: bool, schema_hash: str | None = None) -> Compiled:
        """A compiled validator, or `Invalid` saying why the published schema is unusable."""
        h = schema_hash or canonical_hash(schema)
        key = (h, strict)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        compiled = self._compile(schema, strict, h, self._fast, self._checkers)
        if len(self._cache) >= self._max:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = compiled
        return compiled

    @staticmethod
    def _compile(schema: dict[str, Any], strict: bool, h: str, fast: bool,
                 checkers: dict[type, jsonschema.FormatChecker]) -> Compiled:
        try:
            cls = js_validators.validator_for(schema, default=jsonschema.Draft202012Validator)
            patterns = [jsonschema_ecma.PATTERNS.compile(p) for p in jsonschema_ecma.patterns_in(schema)]
            if cls not in checkers:
                checkers[cls] = jsonschema_ecma.format_checker(cls)
            cls.check_schema(schema, format_checker=checkers[cls])  # type: ignore[call-arg]  # jsonschema >= 4.5
            effective = close_schema(schema) if strict else schema
            reference = cls(effective)
        except PatternError as e:
            return Invalid(f"unusable input schema: pattern {e}")
        except (SchemaError, RecursionError, TypeError, ValueError) as e:
            return Invalid(f"unusable input schema: {str(e).splitlines()[0][:200]}")
        fast_validator = _fast_validator(effective) if fast and not _has_ref_cycle(effective) else None
        if fast_validator is None:   # the reference decides every call: its matchers are built now
            try:
                for p in patterns:
                    p.engine()
            except PatternError as e:
                return Invalid(f"unusable input schema: pattern {e}")
        return CompiledSchema(reference, h, strict, fast_validator)


def _refs_in(node: Any) -> set[str]:
    out: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            r = n.get("$ref")
            if isinstance(r, str):
                out.add(r)
            stack.extend(n.values())
        elif isinstance(n, list):
            stack.extend(n)
    return out


def _has_ref_cycle(schema: dict[str, Any]) -> bool:
    """Does any $ref (transitively) reach itself? Recursive schemas are legal, but the two
    validators treat a loop that consumes no input differently (jsonschema recurses until it
    fails, which we turn into a deny), so those schemas are left to the reference validator."""
    graph: dict[str, set[str]] = {}
    todo = list(_refs_in(schema))
    while todo:
        ref = todo.pop()
        if ref in graph:
            continue
        target = _lookup(schema, ref) if ref.startswith("#/") else ({} if ref != "#" else schema)
        graph[ref] = _refs_in(target)
        todo.extend(graph[ref])
    state: dict[str, int] = {}

    def visit(r: str) -> bool:
        state[r] = 1
        for nxt in graph.get(r, ()):
            if state.get(nxt) == 1 or (state.get(nxt) is None and visit(nxt)):
                return True
        state[r] = 2
        return False

    return any(state.get(r) is None and visit(r) for r in list(graph))


def _fast_validator(schema: dict[str, Any]) -> Any:
    """A jsonschema_rs validator with jsonschema's semantics: formats are annotations (not
    asserted), and nothing is ever fetched (no I/O: a remote $ref fails to compile, and then the
    reference validator alone decides). Patterns are spelled for its engine (patterns.py)."""
    try:
        schema = jsonschema_ecma.for_engine(copy.deepcopy(schema))
        schema.setdefault("$schema", "https://json-schema.org/draft/2020-12/schema")
        return jsonschema_rs.validator_for(schema, validate_formats=False, offline=True,
                                           pattern_options=jsonschema_ecma.PATTERNS.options)
    except Exception:        # noqa: BLE001 - any compile problem: fall back to the reference
        return None
