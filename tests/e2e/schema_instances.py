"""A minimal valid-instance generator for JSON Schema (draft-07 and 2020-12), for tests.

``instance(schema)`` returns the smallest boring value that the schema accepts, so an end-to-end
test can call every tool a real MCP server lists without knowing the tools in advance:

- objects: the ``required`` properties only (``include_optional=True``: every declared property),
  topped up to ``minProperties``;
- ``const`` first, then the first ``enum`` value, then ``default`` only where nothing else
  decides (never for a property that is left out);
- numbers inside ``minimum``/``maximum`` (draft-04 boolean and draft-06+ numeric
  ``exclusiveMinimum``/``exclusiveMaximum``) and on ``multipleOf``;
- strings of ``minLength`` within ``maxLength``, or a sample for a known ``format`` (date-time,
  date, time, email, uri, uuid, ipv4, ipv6, hostname, ...), or one that matches a simple ``pattern``;
- arrays of ``minItems`` items (``items``, draft-07 tuple ``items``/``additionalItems`` and 2020-12
  ``prefixItems``), distinct when ``uniqueItems`` asks for it;
- local ``$ref`` (``#/$defs/..``, ``#/definitions/..``, ``#``, ``$anchor``), ``allOf`` merged,
  ``anyOf``/``oneOf`` first branch (merged with the keywords beside it), ``type`` lists (first
  non-null type), boolean schemas.

It does not try to satisfy ``not``, ``if/then/else``, ``dependencies`` or ``contains`` beyond the
trivial case; :func:`instance` raises :class:`Unsatisfiable` for ``false`` and for a ``$ref``
cycle with nothing finite below it. Check the result with a real validator when it matters.
"""

from __future__ import annotations

import copy
import math
import re
from fractions import Fraction
from typing import Any

__all__ = ["Unsatisfiable", "instance"]

JSON = Any

_FORMAT_SAMPLES: dict[str, str] = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "iri-reference": "https://example.com/",
    "uri-template": "https://example.com/{id}",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "json-pointer": "/a",
    "relative-json-pointer": "0",
    "regex": ".*",
    "byte": "AA==",
    "binary": "a",
    "password": "secret",
}

_TYPE_ORDER = ("object", "array", "string", "integer", "number", "boolean", "null")
_MAX_REF_DEPTH = 16


class Unsatisfiable(ValueError):
    """The generator cannot find a value for this schema."""


def instance(schema: JSON, *, include_optional: bool = False, root: JSON = None) -> JSON:
    """A valid instance of ``schema``. ``root`` is the document ``$ref``s resolve against
    (defaults to ``schema`` itself)."""
    return _Gen(schema if root is None else root, include_optional).gen(schema, 0)


class _Gen:
    def __init__(self, root: JSON, include_optional: bool) -> None:
        self.root = root
        self.include_optional = include_optional

    # -- schema plumbing ----------------------------------------------------------------------
    def resolve(self, ref: str) -> JSON:
        if ref == "#" or ref == "":
            return self.root
        if ref.startswith("#/"):
            node = self.root
            for raw in ref[2:].split("/"):
                key = raw.replace("~1", "/").replace("~0", "~")
                key = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), key)
                if isinstance(node, list):
                    node = node[int(key)]
                elif isinstance(node, dict) and key in node:
                    node = node[key]
                else:
                    raise Unsatisfiable(f"unresolvable $ref {ref!r}")
            return node
        if ref.startswith("#"):  # plain-name fragment: $anchor (2020-12) or draft-07 "$id": "#name"
            found = self._find_anchor(self.root, ref[1:])
            if found is not None:
                return found
        raise Unsatisfiable(f"only local $ref is supported, got {ref!r}")

    def _find_anchor(self, node: JSON, name: str) -> JSON:
        if isinstance(node, dict):
            if node.get("$anchor") == name or node.get("$id") == f"#{name}":
                return node
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            return None
        for child in children:
            hit = self._find_anchor(child, name)
            if hit is not None:
                return hit
        return None

    def flatten(self, schema: JSON, depth: int) -> JSON:
        """Inline $ref/allOf and pick the first anyOf/oneOf branch, giving one plain schema."""
        if schema is True or schema is None:
            return {}
        if schema is False:
            raise Unsatisfiable("schema is false")
        if not isinstance(schema, dict):
            raise Unsatisfiable(f"not a schema: {schema!r}")
        if depth > _MAX_REF_DEPTH:
            raise Unsatisfiable("$ref nesting too deep (a cycle with no finite instance?)")
        s = dict(schema)
        out: dict[str, Any] = {}
        if "$ref" in s:
            target = self.flatten(self.resolve(s.pop("$ref")), depth + 1)
            out = _merge(out, target)
        for key in ("allOf",):
            for sub in s.pop(key, None) or []:
                out = _merge(out, self.flatten(sub, depth + 1))
        for key in ("anyOf", "oneOf"):
            branches = s.pop(key, None)
            if branches:
                # First branch that is not just {"type": "null"} when there is a choice.
                pick = next((b for b in branches if not _is_null_only(b)), branches[0])
                out = _merge(out, self.flatten(pick, depth + 1))
        return _merge(out, s)

    # -- generation ---------------------------------------------------------------------------
    def gen(self, schema: JSON, depth: int) -> JSON:
        s = self.flatten(schema, depth)
        if "const" in s:
            return copy.deepcopy(s["const"])
        if "enum" in s:
            if not s["enum"]:
                raise Unsatisfiable("empty enum")
            return copy.deepcopy(s["enum"][0])
        t = self.pick_type(s)
        if t == "object":
            return self.gen_object(s, depth)
        if t == "array":
            return self.gen_array(s, depth)
        if t == "string":
            return _gen_string(s)
        if t == "integer":
            return _gen_number(s, integer=True)
        if t == "number":
            return _gen_number(s, integer=False)
        if t == "boolean":
            return False
        if t == "null":
            return None
        # No type and nothing that implies one: any value validates.
        return copy.deepcopy(s["default"]) if "default" in s else None

    @staticmethod
    def pick_type(s: dict[str, Any]) -> str | None:
        t = s.get("type")
        if isinstance(t, str):
            return t
        if isinstance(t, list) and t:
            non_null = [x for x in t if x != "null"]
            return non_null[0] if non_null else t[0]
        if any(k in s for k in ("properties", "required", "additionalProperties", "minProperties", "patternProperties")):
            return "object"
        if any(k in s for k in ("items", "prefixItems", "minItems", "maxItems", "uniqueItems")):
            return "array"
        if any(k in s for k in ("minLength", "maxLength", "pattern", "format")):
            return "string"
        if any(k in s for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
            return "number"
        return None

    def gen_object(self, s: dict[str, Any], depth: int) -> dict[str, Any]:
        props: dict[str, Any] = s.get("properties") or {}
        required = list(dict.fromkeys(s.get("required") or []))
        names = list(props) if self.include_optional else required
        names += [n for n in required if n not in names]
        out: dict[str, Any] = {}
        for name in names:
            if name in props:
                out[name] = self.gen(props[name], depth + 1)
            else:
                out[name] = self.gen(self._extra_schema(s, name), depth + 1)
        min_props = int(s.get("minProperties") or 0)
        for name in props:
            if len(out) >= min_props:
                break
            if name not in out:
                out[name] = self.gen(props[name], depth + 1)
        i = 0
        while len(out) < min_props:
            i += 1
            name = f"p{i}"
            if name not in out:
                out[name] = self.gen(self._extra_schema(s, name), depth + 1)
        return out

    @staticmethod
    def _extra_schema(s: dict[str, Any], name: str) -> JSON:
        for pattern, sub in (s.get("patternProperties") or {}).items():
            if re.search(pattern, name):
                return sub
        extra = s.get("additionalProperties", True)
        if extra is False:
            raise Unsatisfiable(f"required property {name!r} is neither declared nor allowed")
        return extra

    def gen_array(self, s: dict[str, Any], depth: int) -> list[Any]:
        n = int(s.get("minItems") or 0)
        prefix = s.get("prefixItems")
        items = s.get("items", True)
        if prefix is None and isinstance(items, list):  # draft-07 tuple form
            prefix, items = items, s.get("additionalItems", True)
        prefix = prefix or []
        if "contains" in s and n == 0:
            n = max(1, int(s.get("minContains", 1)))
        out: list[Any] = []
        unique = bool(s.get("uniqueItems"))
        for i in range(n):
            sub = prefix[i] if i < len(prefix) else items
            if "contains" in s and i == 0 and not prefix:
                sub = {"allOf": [sub, s["contains"]]}
            value = self.gen(sub, depth + 1)
            if unique:
                value = self._distinct(sub, value, out, depth)
            out.append(value)
        return out

    def _distinct(self, sub: JSON, value: Any, seen: list[Any], depth: int) -> Any:
        if value not in seen:
            return value
        flat = self.flatten(sub, depth + 1)
        for candidate in flat.get("enum", []):
            if candidate not in seen:
                return copy.deepcopy(candidate)
        # flatten() chose the first branch; try the others for a value not seen yet.
        raw = sub if isinstance(sub, dict) else {}
        for key in ("anyOf", "oneOf"):
            for branch in raw.get(key, []):
                cand = self.gen(branch, depth + 1)
                if cand not in seen:
                    return cand
        if isinstance(value, bool):
            if (not value) not in seen:
                return not value
        elif isinstance(value, (int, float)):
            step = flat.get("multipleOf", 1)
            cand = value
            for _ in range(len(seen) + 1):
                cand = cand + step
                if cand not in seen:
                    return cand
        elif isinstance(value, str):
            for k in range(1, len(seen) + 2):
                cand = _vary_string(value, k, flat)
                if cand not in seen:
                    return cand
        raise Unsatisfiable("cannot make distinct items for uniqueItems")


def _is_null_only(schema: JSON) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null" and len(schema) <= 2


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Conjunction of two flattened schemas, good enough for generation."""
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
        elif k == "properties":
            merged = dict(out[k])
            for name, sub in v.items():
                merged[name] = {"allOf": [merged[name], sub]} if name in merged else sub
            out[k] = merged
        elif k == "required":
            out[k] = list(dict.fromkeys([*out[k], *v]))
        elif k in ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties") and _num(v) and _num(out[k]):
            out[k] = max(out[k], v)
        elif k in ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties") and _num(v) and _num(out[k]):
            out[k] = min(out[k], v)
        elif k == "type":
            ta = out[k] if isinstance(out[k], list) else [out[k]]
            tb = v if isinstance(v, list) else [v]
            both = [t for t in ta if t in tb or (t == "integer" and "number" in tb)]
            both += [t for t in tb if t == "integer" and "number" in ta and t not in both]
            out[k] = both[0] if len(both) == 1 else (both or ta)
        elif k == "enum":
            out[k] = [x for x in out[k] if x in v]
        else:
            out[k] = v
    return out


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _gen_number(s: dict[str, Any], *, integer: bool) -> int | float:
    lo, hi = s.get("minimum"), s.get("maximum")
    lo_open = hi_open = False
    ex_lo, ex_hi = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
    if ex_lo is True:  # draft-04 boolean form
        lo_open = True
    elif _num(ex_lo) and (lo is None or ex_lo >= lo):
        lo, lo_open = ex_lo, True
    if ex_hi is True:
        hi_open = True
    elif _num(ex_hi) and (hi is None or ex_hi <= hi):
        hi, hi_open = ex_hi, True

    def in_range(v: float) -> bool:
        if lo is not None and (v < lo or (lo_open and v <= lo)):
            return False
        if hi is not None and (v > hi or (hi_open and v >= hi)):
            return False
        return True

    step = s.get("multipleOf") if _num(s.get("multipleOf")) and s.get("multipleOf") > 0 else None
    if integer:
        if step is None:
            step = 1
        elif not float(step).is_integer():  # integers on a fractional step: the step's numerator
            step = Fraction(step).limit_denominator(10**9).numerator

    if in_range(0):
        value: float = 0
    elif step is not None:
        if lo is not None and (lo > 0 or (lo_open and lo >= 0)):
            value = math.ceil(lo / step) * step
            if not in_range(value):
                value += step
        else:
            value = math.floor(hi / step) * step
            if not in_range(value):
                value -= step
    elif lo is not None and (lo > 0 or (lo_open and lo >= 0)):
        value = lo if not lo_open else (lo + 1 if hi is None or hi - lo > 1 else (lo + hi) / 2)
    else:
        value = hi if not hi_open else (hi - 1 if lo is None or hi - lo > 1 else (lo + hi) / 2)
    if not in_range(value):
        raise Unsatisfiable(f"no {'integer' if integer else 'number'} in the range of {s!r}")
    if integer or (isinstance(value, float) and value.is_integer()):
        return int(value)
    return value


def _gen_string(s: dict[str, Any]) -> str:
    min_len = int(s.get("minLength") or 0)
    max_len = s.get("maxLength")
    candidates: list[str] = []
    fmt = s.get("format")
    if isinstance(fmt, str) and fmt in _FORMAT_SAMPLES:
        candidates.append(_FORMAT_SAMPLES[fmt])
    pattern = s.get("pattern")
    if isinstance(pattern, str):
        candidates.extend(_pattern_candidates(pattern, min_len))
    candidates += ["a" * max(min_len, 1), "a" * min_len]
    for cand in candidates:
        if len(cand) < min_len and not pattern:  # a format sample, padded (formats are rarely length-bound)
            cand = cand + "a" * (min_len - len(cand))
        if len(cand) < min_len or (max_len is not None and len(cand) > max_len):
            continue
        if isinstance(pattern, str) and not _matches(pattern, cand):
            continue
        return cand
    raise Unsatisfiable(f"no string for {s!r}")


def _matches(pattern: str, value: str) -> bool:
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return True  # not a Python regex: cannot check, assume the sample is fine


def _pattern_candidates(pattern: str, min_len: int) -> list[str]:
    """A few strings for common simple patterns (anchored classes with quantifiers)."""
    out: list[str] = []
    body = pattern
    if body.startswith("^"):
        body = body[1:]
    if body.endswith("$") and not body.endswith("\\$"):
        body = body[:-1]
    # Build one string by expanding each atom once (or minimum repetitions).
    built = []
    i = 0
    ok = True
    while i < len(body):
        c = body[i]
        if c == "[":
            j = body.find("]", i + 1)
            if j < 0:
                ok = False
                break
            cls = body[i + 1 : j]
            atom = _class_sample(cls)
            i = j + 1
        elif c == "\\" and i + 1 < len(body):
            atom = {"d": "0", "w": "a", "s": " ", "D": "a", "W": "-", "S": "a"}.get(body[i + 1], body[i + 1])
            i += 2
        elif c in "().|":
            atom = "a" if c == "." else ""
            if c in "(|)":
                ok = c != "|" and ok
            i += 1
        else:
            atom = c
            i += 1
        reps = 1
        if i < len(body) and body[i] in "*+?{":
            q = body[i]
            if q == "*" or q == "?":
                reps, i = 0, i + 1
            elif q == "+":
                reps, i = 1, i + 1
            else:
                j = body.find("}", i)
                m = re.fullmatch(r"(\d+)(,(\d*))?", body[i + 1 : j]) if j > 0 else None
                reps = int(m.group(1)) if m else 1
                i = j + 1 if j > 0 else i + 1
        built.append(atom * reps)
    if ok:
        s = "".join(built)
        out.append(s)
        if len(s) < min_len and built:
            out.append(s + (built[-1][-1:] or "a") * (min_len - len(s)))
    out += ["a", "0", "a" * max(min_len, 1), "0" * max(min_len, 1)]
    return out


def _class_sample(cls: str) -> str:
    if cls.startswith("^"):
        for c in "a0A_-x":
            if c not in cls[1:]:
                return c
        return "~"
    if len(cls) >= 3 and cls[1] == "-":
        return cls[0]
    if cls.startswith("\\") and len(cls) > 1:
        return {"d": "0", "w": "a", "s": " "}.get(cls[1], cls[1])
    return cls[0] if cls else "a"


def _vary_string(value: str, k: int, s: dict[str, Any]) -> str:
    max_len = s.get("maxLength")
    cand = f"{value}{k}"
    if max_len is not None and len(cand) > max_len:
        cand = (value[: max(0, max_len - len(str(k)))] + str(k))[-max_len:] if max_len else ""
    return cand
