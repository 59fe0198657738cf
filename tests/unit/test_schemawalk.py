"""One JSON Schema walker: the validators' closing and the capability classifier reach the same
subschemas, every keyword that holds one."""

from __future__ import annotations

from typing import Any

import pytest

from extauthz.detect.capability import classify_capability
from extauthz.schemawalk import SCHEMA_LISTS, SCHEMA_MAPS, SCHEMA_ONE, subschemas
from extauthz.specs.validators import close_schema

OBJECT: dict[str, Any] = {"type": "object", "properties": {"password": {"type": "string"}}}


def placed(kw: str) -> dict[str, Any]:
    """A schema holding OBJECT at keyword `kw`."""
    if kw in SCHEMA_MAPS:
        return {kw: {"k": dict(OBJECT)}}
    if kw in SCHEMA_ONE:
        return {kw: dict(OBJECT)}
    return {kw: [dict(OBJECT)]}


EVERY = sorted({*SCHEMA_MAPS, *SCHEMA_ONE, *SCHEMA_LISTS})


def test_walker_yields_each_position_with_its_key() -> None:
    node = {"properties": {"a": {}, "b": True}, "not": {}, "if": True, "items": [{}, 3], "anyOf": "bad"}
    assert list(subschemas(node)) == [("properties", "a", {}), ("properties", "b", True), ("not", None, {}),
                                      ("items", 0, {}), ("items", 1, 3)]
    assert list(subschemas({"properties": {"a": {}, "b": {}}, "allOf": [{}, {}]}, limit=1)) == [
        ("properties", "a", {}), ("allOf", 0, {})]


@pytest.mark.parametrize("kw", EVERY)
def test_classifier_and_closing_reach_every_subschema_keyword(kw: str) -> None:
    schema = placed(kw)
    found = classify_capability("tools", {"name": "t", "inputSchema": schema})
    assert any(f.type == "password" and f.where.startswith(f"property:/{kw}/") for f in found), found
    closed = close_schema(schema)
    (inner,) = [v for _, _, v in subschemas(closed)]
    branch = kw in ("allOf",)          # allOf branches are parts of one object: the parent closes them
    assert ("additionalProperties" in inner) is not branch
