"""Strict JSON: the duplicate-key detector agrees with a reference parser on a generated corpus,
and the limits hold at their edges."""

from __future__ import annotations

import json
import random

import orjson
import pytest

from extauthz.core.reasons import Reason
from extauthz.mcp.jsonrpc import BodyError, Limits, loads_strict, parse_body

BIG = Limits(max_body_bytes=10**7, max_depth=64, max_string_bytes=10**6, max_array_items=10**6)
KEYS = ["a", "b", "a\"b", "a:b", "\\", "é", "\u0061", "x y", ":", "\"", "a\\\"", "{", "}"]


def _has_dup(text: str) -> bool:
    found = False

    def hook(pairs):
        nonlocal found
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            found = True
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return found


def _gen(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth > 4 or r < 0.3:
        return rng.choice([1, -2.5, "s:\"}", "", True, None, "a\\\":", "é"])
    if r < 0.55:
        return [_gen(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return [(rng.choice(KEYS), _gen(rng, depth + 1)) for _ in range(rng.randint(0, 4))]


def _dump(v, rng: random.Random) -> str:
    if isinstance(v, list) and v and isinstance(v[0], tuple):
        parts = []
        for k, x in v:
            key = json.dumps(k) if rng.random() < 0.7 else '"' + "".join(f"\\u{ord(c):04x}" for c in k) + '"'
            parts.append(f'{key}{" " * rng.randint(0, 1)}:{_dump(x, rng)}')
        return "{" + ",".join(parts) + "}"
    if isinstance(v, list):
        if v == []:
            return "{}" if rng.random() < 0.3 else "[]"
        return "[" + ",".join(_dump(x, rng) for x in v) + "]"
    return json.dumps(v, ensure_ascii=rng.random() < 0.5)


# BIG: nearly every body is small enough to skip the Python walk; WALK: any body over 40 bytes is
# walked (a string limit that short), so both ways to count keys meet the same corpus.
WALK = Limits(max_body_bytes=10**7, max_depth=64, max_string_bytes=40, max_array_items=10**6)


@pytest.mark.parametrize("limits", [BIG, WALK], ids=["by-size", "walked"])
def test_duplicate_detection_matches_reference_parser_on_generated_corpus(limits):
    rng = random.Random(20261125)
    dups = clean = same_text = 0
    for _ in range(4000):
        text = _dump(_gen(rng), rng)
        expected = _has_dup(text)
        # bodies orjson re-serialises byte for byte take the shortcut (no key counting at all)
        same_text += orjson.dumps(orjson.loads(text)) == text.encode()
        try:
            loads_strict(text.encode(), limits)
            got = False
        except BodyError as e:
            assert e.reason is Reason.MALFORMED_REQUEST and e.detail == "duplicate object keys", text
            got = True
        assert got == expected, text
        dups += expected
        clean += not expected
    assert dups > 300 and clean > 300   # the corpus exercises both answers
    assert 300 < same_text < clean      # ... and both ways to reach "clean"


@pytest.mark.parametrize("body,reason", [
    (b'{"a":' * 9 + b"1" + b"}" * 9, Reason.PAYLOAD_TOO_LARGE),
    (b'{"a":' * 8 + b"1" + b"}" * 8, None),
    (b'["' + b"x" * 100 + b'"]', None),
    (b'["' + b"x" * 101 + b'"]', Reason.PAYLOAD_TOO_LARGE),
    (b'["' + "é".encode() * 51 + b'"]', Reason.PAYLOAD_TOO_LARGE),   # bytes, not characters
    (b"[" + b",".join([b"1"] * 10) + b"]", None),
    (b"[" + b",".join([b"1"] * 11) + b"]", Reason.PAYLOAD_TOO_LARGE),
    (b'{"' + b"k" * 101 + b'":1}', Reason.PAYLOAD_TOO_LARGE),
])
def test_limits_at_their_edges(body, reason):
    lim = Limits(max_body_bytes=10**6, max_depth=8, max_string_bytes=100, max_array_items=10)
    if reason is None:
        loads_strict(body, lim)
    else:
        with pytest.raises(BodyError) as e:
            loads_strict(body, lim)
        assert e.value.reason is reason


def test_deep_nesting_far_beyond_limit_is_a_clean_deny():
    body = b"[" * 100_000 + b"]" * 100_000
    p = parse_body(body, Limits(max_body_bytes=10**6))
    assert p.error in (Reason.PAYLOAD_TOO_LARGE, Reason.MALFORMED_REQUEST)


def test_batch_ids_survive_a_limit_error():
    body = json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "ping"},
                       {"jsonrpc": "2.0", "id": "b", "method": "ping", "params": {"x": "y" * 200}}]).encode()
    p = parse_body(body, Limits(max_string_bytes=100))
    assert p.error is Reason.PAYLOAD_TOO_LARGE and p.ids == [1, "b"] and p.batch


def _reference_verdict(text: str, lim: Limits) -> Reason | None:
    """What strict parsing must answer, computed the slow, obvious way: every limit on the decoded
    value (containers nested deeper than max_depth, strings and keys longer than max_string_bytes
    in UTF-8, arrays longer than max_array_items), then duplicate keys."""
    dup = _has_dup(text)
    value = json.loads(text)

    def too_large(v, depth: int) -> bool:
        if isinstance(v, dict):
            return depth > lim.max_depth or any(
                len(k.encode()) > lim.max_string_bytes or too_large(x, depth + 1) for k, x in v.items())
        if isinstance(v, list):
            return depth > lim.max_depth or len(v) > lim.max_array_items or any(too_large(x, depth + 1) for x in v)
        return isinstance(v, str) and len(v.encode()) > lim.max_string_bytes

    if too_large(value, 1):
        return Reason.PAYLOAD_TOO_LARGE
    return Reason.MALFORMED_REQUEST if dup else None


def _gen_sized(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth > rng.choice([3, 6, 12]) or r < 0.25:
        return rng.choice([1, 2.5, True, None, "", "é" * rng.randint(0, 30), "a\\\"b" * rng.randint(0, 20),
                           "x" * rng.randint(0, 90), "\u2028\t"])
    wide = depth < 2
    if r < 0.55:
        return [_gen_sized(rng, depth + 1) for _ in range(rng.choice([0, 1, 3, 9, 14] if wide else [0, 1, 2]))]
    return [(rng.choice(KEYS + ["k" * 45]), _gen_sized(rng, depth + 1)) for _ in range(rng.randint(0, 5 if wide else 2))]


def test_limits_and_duplicates_match_the_obvious_reference_on_generated_bodies(monkeypatch):
    """Bodies near every limit (deep, wide, long strings, escapes, duplicates), pretty and compact,
    under tight and loose limits: the fast paths (C counts, the containers-only depth walk, the
    byte-for-byte re-serialisation) must answer exactly what the reference answers."""
    from extauthz.mcp import jsonrpc
    paths = {"depth walk": 0, "full walk": 0}
    real_depth, real_walk = jsonrpc._within_depth, jsonrpc._walk

    def depth(*a):
        paths["depth walk"] += 1
        return real_depth(*a)

    def walk(*a):
        paths["full walk"] += 1
        return real_walk(*a)
    monkeypatch.setattr(jsonrpc, "_within_depth", depth)
    monkeypatch.setattr(jsonrpc, "_walk", walk)
    rng = random.Random(511)
    limits = [Limits(max_body_bytes=10**7, max_depth=d, max_string_bytes=s, max_array_items=a)
              for d, s, a in ((4, 40, 10), (8, 60, 12), (16, 100, 8), (32, 10**6, 10**6), (5, 10**6, 13))]
    seen: dict[Reason | None, int] = {}
    for _ in range(6000):
        text = _dump(_gen_sized(rng), rng)
        if rng.random() < 0.3:
            text = json.dumps(json.loads(text), indent=rng.choice([None, 1]), ensure_ascii=rng.random() < 0.5)
        lim = rng.choice(limits)
        expected = _reference_verdict(text, lim)
        try:
            loads_strict(text.encode(), lim)
            got = None
        except BodyError as e:
            got = e.reason
        assert got == expected, (text, lim)
        seen[expected] = seen.get(expected, 0) + 1
    assert all(seen.get(r, 0) > 150 for r in (None, Reason.PAYLOAD_TOO_LARGE, Reason.MALFORMED_REQUEST)), seen
    assert paths["depth walk"] > 300 and paths["full walk"] > 300, paths     # both ways were taken
