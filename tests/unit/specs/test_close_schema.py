"""Strict mode closes object schemas the way real servers compose them, without breaking
composition: an undeclared field is refused at every level, declared ones still pass."""

from __future__ import annotations

import pytest

from extauthz.specs.validators import CompiledSchema, ValidatorCache

D7 = "http://json-schema.org/draft-07/schema#"
BASE = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}

CASES = [
    ("2020-12 allOf of two objects", {"allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}]},
     [{"a": 1, "b": 2}], [{"a": 1, "c": 3}]),
    ("draft-07 allOf with a local $ref", {"$schema": D7, "allOf": [{"$ref": "#/definitions/Base"},
                                                                   {"properties": {"b": {}}}],
                                          "definitions": {"Base": BASE}},
     [{"a": "x"}, {"a": "x", "b": 1}], [{"a": "x", "include_internal_notes": True}]),
    ("draft-07 only a $ref in allOf", {"$schema": D7, "allOf": [{"$ref": "#/definitions/Base"}],
                                       "definitions": {"Base": BASE}},
     [{"a": "x"}], [{"a": "x", "z": 0}]),
    ("pydantic nullable $ref", {"type": "object", "properties": {"o": {"anyOf": [{"$ref": "#/$defs/O"}, {"type": "null"}]}},
                                "$defs": {"O": {"type": "object", "properties": {"limit": {"type": "integer"}}}}},
     [{"o": None}, {"o": {"limit": 1}}], [{"o": {"limit": 1, "debug": True}}, {"x": 1}]),
    ("discriminated union sharing parent fields", {
        "type": "object", "properties": {"kind": {"enum": ["a", "b"]}},
        "oneOf": [{"properties": {"kind": {"const": "a"}, "x": {}}}, {"properties": {"kind": {"const": "b"}, "y": {}}}]},
     [{"kind": "a", "x": 1}, {"kind": "b", "y": 1}], [{"kind": "a", "x": 1, "evil": 1}]),
    ("explicit additionalProperties is kept", {"type": "object", "properties": {"a": {}},
                                               "additionalProperties": {"type": "integer"}},
     [{"a": 1, "extra": 2}], [{"a": 1, "extra": "s"}]),
]


@pytest.mark.parametrize("schema,good,bad", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_strict_closing(schema, good, bad):
    for fast in (True, False):
        c = ValidatorCache(fast=fast).get(schema, True)
        assert isinstance(c, CompiledSchema)
        for inst in good:
            assert c.is_valid(inst), (inst, fast)
        for inst in bad:
            assert not c.is_valid(inst), (inst, fast)


def test_as_published_leaves_schemas_open():
    c = ValidatorCache().get({"type": "object", "properties": {"a": {}}}, False)
    assert c.is_valid({"a": 1, "include_internal_notes": True})
