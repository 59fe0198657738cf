"""The compiled validator (jsonschema_rs) must give exactly jsonschema's verdict.

A seeded generator builds thousands of schemas of the shapes MCP servers publish (and the
keywords around them) and, for each, instances that are valid, near-valid and hostile. Every pair
is decided by both, strict (closed) and as-published. Any disagreement is a failure.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from extauthz.specs.validators import CompiledSchema, Invalid, ValidatorCache

DRAFTS = [None, "https://json-schema.org/draft/2020-12/schema", "https://json-schema.org/draft/2019-09/schema",
          "http://json-schema.org/draft-07/schema#"]
PATTERNS = ["^[a-z]+$", "^c-[0-9]{3}$", "abc", "^.{2,5}$", "^[A-Z][a-z]*( [A-Z][a-z]*)*$", "\\.csv$",
            "^[\\p{L} .'-]{1,20}$", "\\bc\\b", "^\\w+$", "^\\S+$"]   # ECMA: tests/unit/specs/test_ecma_patterns.py
FORMATS = ["email", "uri", "date-time", "uuid", "ipv4"]
STRINGS = ["", "a", "abc", "c-100", "c-1000", "Ada Lovelace", "é", "x" * 10, "a.csv", "2026-11-25T00:00:00Z",
           "not an email", "a@b.c", "550e8400-e29b-41d4-a716-446655440000", "1.2.3.4", "ABC", "🙂"]
NUMBERS = [0, 1, -1, 2, 3, 10, 100, 101, 1.0, 1.5, -0.5, 2.0, 1e3, 7, 2**40, 0.1]


def gen_schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    kind = rng.choice(["string", "integer", "number", "boolean", "null", "array", "object", "object",
                       "combo", "enum", "const", "multi"] if depth < 3 else ["string", "integer", "boolean", "enum"])
    s: dict[str, Any] = {}
    if kind == "string":
        s["type"] = "string"
        if rng.random() < 0.3:
            s["minLength"] = rng.randint(0, 3)
        if rng.random() < 0.3:
            s["maxLength"] = rng.randint(3, 12)
        if rng.random() < 0.3:
            s["pattern"] = rng.choice(PATTERNS)
        if rng.random() < 0.2:
            s["format"] = rng.choice(FORMATS)
    elif kind in ("integer", "number"):
        s["type"] = kind
        for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if rng.random() < 0.2:
                s[k] = rng.choice([0, 1, 2, 10, 100, 1.5])
        if rng.random() < 0.15:
            s["multipleOf"] = rng.choice([2, 0.5, 5])
    elif kind in ("boolean", "null"):
        s["type"] = kind
    elif kind == "enum":
        s["enum"] = rng.sample(["csv", "json", 1, 2.0, True, None, "a"], rng.randint(1, 4))
    elif kind == "const":
        s["const"] = rng.choice(["x", 1, True, None, {"a": 1}, [1, 2]])
    elif kind == "multi":
        s["type"] = rng.sample(["string", "integer", "null", "boolean", "number"], 2)
    elif kind == "array":
        s["type"] = "array"
        if rng.random() < 0.8:
            s["items"] = gen_schema(rng, depth + 1)
        if rng.random() < 0.3:
            s["minItems"] = rng.randint(0, 2)
        if rng.random() < 0.3:
            s["maxItems"] = rng.randint(2, 5)
        if rng.random() < 0.2:
            s["uniqueItems"] = True
    elif kind == "object":
        s["type"] = "object"
        props = {}
        for name in rng.sample(["customer_id", "query", "options", "limit", "format", "tags", "a", "b"],
                               rng.randint(0, 4)):
            props[name] = gen_schema(rng, depth + 1)
        if props or rng.random() < 0.5:
            s["properties"] = props
        if props and rng.random() < 0.6:
            s["required"] = rng.sample(sorted(props), rng.randint(1, len(props)))
        r = rng.random()
        if r < 0.15:
            s["additionalProperties"] = False
        elif r < 0.25:
            s["additionalProperties"] = gen_schema(rng, depth + 1)
        elif r < 0.3:
            s["patternProperties"] = {"^x_": {"type": "string"}}
        if rng.random() < 0.1:
            s["propertyNames"] = {"maxLength": 8}
        if rng.random() < 0.1:
            s["minProperties"] = 1
    else:  # combo
        refs = ["ref", "nullable-ref"] if depth == 0 else []     # $defs live at the root
        key = rng.choice(["anyOf", "oneOf", "allOf", "not", "if", *refs])
        if key == "not":
            s["not"] = gen_schema(rng, depth + 1)
        elif key in ("ref", "nullable-ref"):
            target = gen_schema(rng, depth + 1)
            s["$defs"] = {"T": target}
            s["anyOf" if key == "nullable-ref" else "allOf"] = (
                [{"$ref": "#/$defs/T"}, {"type": "null"}] if key == "nullable-ref" else [{"$ref": "#/$defs/T"}])
        elif key == "if":
            s.update({"if": {"properties": {"format": {"const": "csv"}}}, "then": {"required": ["format"]},
                      "else": {"properties": {"limit": {"type": "integer"}}}, "type": "object"})
        else:
            s[key] = [gen_schema(rng, depth + 1) for _ in range(rng.randint(1, 3))]
    return s


def gen_instance(rng: random.Random, schema: Any, depth: int = 0) -> Any:
    """Mostly shaped by the schema (so valid and near-valid instances are common), sometimes not."""
    if depth > 5 or not isinstance(schema, dict) or rng.random() < 0.12:
        return rng.choice([rng.choice(STRINGS), rng.choice(NUMBERS), True, False, None, [], {},
                           {"include_internal_notes": True}, [1, 1], {"customer_id": 42}])
    t = schema.get("type")
    if isinstance(t, list):
        t = rng.choice(t)
    if "enum" in schema:
        return rng.choice(schema["enum"] + ["other"])
    if "const" in schema:
        return schema["const"] if rng.random() < 0.7 else "other"
    if "$defs" in schema:
        return gen_instance(rng, schema["$defs"]["T"], depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return gen_instance(rng, rng.choice(schema[key]), depth + 1)
    if t == "string":
        return rng.choice(STRINGS)
    if t in ("integer", "number"):
        return rng.choice(NUMBERS)
    if t == "boolean":
        return rng.random() < 0.5
    if t == "null":
        return None
    if t == "array":
        return [gen_instance(rng, schema.get("items"), depth + 1) for _ in range(rng.randint(0, 4))]
    if t == "object" or "properties" in schema:
        out = {}
        for name, sub in (schema.get("properties") or {}).items():
            if rng.random() < 0.8:
                out[name] = gen_instance(rng, sub, depth + 1)
        if rng.random() < 0.2:
            out[rng.choice(["include_internal_notes", "x_debug", "limit", "zz"])] = rng.choice([True, "y", 3])
        return out
    return rng.choice(STRINGS + NUMBERS)


@pytest.mark.parametrize("seed", range(8))
def test_compiled_validator_gives_jsonschemas_verdict(seed: int) -> None:
    rng = random.Random(1000 + seed)
    fast, reference = ValidatorCache(fast=True), ValidatorCache(fast=False)
    pairs = valid = invalid = 0
    for _ in range(400):
        schema = gen_schema(rng)
        draft = rng.choice(DRAFTS)
        if draft:
            schema["$schema"] = draft
        for strict in (True, False):
            f, r = fast.get(schema, strict), reference.get(schema, strict)
            if isinstance(r, Invalid):
                assert isinstance(f, Invalid)
                continue
            assert f.fast is not None, schema        # every generated schema compiles both ways
            for _ in range(6):
                inst = gen_instance(rng, schema)
                got, want = f.is_valid(inst), r.is_valid(inst)
                assert got == want, (schema, inst, strict)
                pairs += 1
                valid += want
                invalid += not want
    assert pairs > 4000 and valid > 500 and invalid > 500, (pairs, valid, invalid)


@pytest.mark.parametrize("schema,instance,valid", [
    ({"$defs": {"T": {"allOf": [{"$ref": "#/$defs/T"}]}}, "allOf": [{"$ref": "#/$defs/T"}], "type": "object"},
     {}, False),
    ({"$defs": {"Node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}},
      "$ref": "#/$defs/Node"}, {"kids": [{"kids": []}]}, True),
    ({"$defs": {"Node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}},
      "$ref": "#/$defs/Node"}, {"kids": [{"kids": [], "evil": 1}]}, False),
], ids=["non-consuming-cycle-denied", "recursive-tree-ok", "recursive-tree-closed"])
def test_recursive_schemas_use_the_reference_validator(schema, instance, valid):
    c = ValidatorCache().get(schema, True)
    assert isinstance(c, CompiledSchema) and c.fast is None
    assert c.is_valid(instance) is valid
