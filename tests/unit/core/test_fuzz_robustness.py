"""Seeded mutation fuzzing of the whole decision path: whatever the body and headers, Check
returns a decision with a stable reason code and writes its log line; it never raises."""

from __future__ import annotations

import io
import random

import orjson

from extauthz.app import App
from extauthz.core.reasons import Reason
from extauthz.envoy.wire import encode_check_response
from extauthz.mcp.request import HttpRequest

from .conftest import HERE, SUPPORT, call, learn

SEEDS = [
    call("lookup_customer", {"customer_id": "c-100"}),
    call("search_customers", {"query": "a", "options": {"limit": 5, "sort": "tier"}}),
    {"jsonrpc": "2.0", "id": "x", "method": "resources/read", "params": {"uri": "crm://customers/c-100"}},
    {"jsonrpc": "2.0", "id": 3, "method": "prompts/get", "params": {"name": "draft_reply", "arguments": {"customer_id": "c"}}},
    [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {"jsonrpc": "2.0", "method": "notifications/initialized"}],
    {"jsonrpc": "2.0", "id": 4, "method": "completion/complete",
     "params": {"ref": {"type": "ref/prompt", "name": "draft_reply"}, "argument": {"name": "tone", "value": ""}}},
]
SPLICE = [b"\x00", b"\xff", b"\\u0000", b"\\ud800", b'"', b"{", b"[", b"]", b"}", b",", b":", b"NaN", b"1e999",
          b"-0", b"\xe2\x80\x8b", b"e\xcc\x81", b"%2e%2e/", b"../", b'"name":"export_customers",', b"[" * 40,
          b'"\\u006e\\u0061\\u006d\\u0065":"x",', b"true", b"null", b" " * 3]
HEADERS = [("mcp-method", "tools/call"), ("mcp-name", "export_customers"), ("mcp-protocol-version", "2026-07-28"),
           ("mcp-session-id", "s\u00e9"), ("mcp-session-id", "a,b"), ("content-encoding", "gzip"),
           ("mcp-param-x", "=?base64?!!?="), ("x-jwt-payload", "e30"), ("content-type", "text/plain"),
           ("x-envoy-auth-partial-body", "true")]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        pos = rng.randint(0, len(b))
        if op < 0.35:
            b[pos:pos] = rng.choice(SPLICE)
        elif op < 0.55 and b:
            del b[pos:pos + rng.randint(1, 8)]
        elif op < 0.75 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op < 0.85:
            b = b[:pos]
        else:
            b = b + b[: rng.randint(0, len(b))]
    return bytes(b)


def test_mutated_requests_always_get_a_decision():
    out = io.BytesIO()
    app = App(str(HERE / "policy.yaml"), decision_out=out)
    learn(app)
    rng = random.Random(7)
    reasons: set[Reason] = set()
    n = 6000
    for _ in range(n):
        body = mutate(rng, orjson.dumps(rng.choice(SEEDS)))
        headers = {"content-type": "application/json"}
        for k, v in rng.sample(HEADERS, rng.randint(0, 2)) if rng.random() < 0.3 else []:
            headers[k] = v
        method = "POST" if rng.random() < 0.95 else rng.choice(["GET", "DELETE", "PATCH", ""])
        claims = SUPPORT if rng.random() < 0.9 else rng.choice([None, {"sub": 5}, {"sub": "x", "groups": "a b"}])
        req = HttpRequest(method=method, path=rng.choice(["/mcp", "/mcp?session_id=q", "/x", "/mcp/../mcp"]),
                          authority=rng.choice(["crm.example.com", "crm.example.com:443", "", "[::1]", "a b"]),
                          headers=headers, body=body, partial=headers.get("x-envoy-auth-partial-body") == "true",
                          metadata={"envoy.filters.http.jwt_authn": {"jwt_payload": claims}} if claims else {})
        d = app.check(req)
        assert isinstance(d.reason, Reason)
        assert not d.detail.startswith("internal error"), (req, d.detail)   # a bug, not a verdict
        assert d.allowed or 200 <= d.status < 600
        encode_check_response(d)        # the answer can always be written
        reasons.add(d.reason)
    assert len(out.getvalue().splitlines()) == n          # one log line per Check
    assert {Reason.ALLOWED, Reason.MALFORMED_REQUEST, Reason.SCHEMA_VIOLATION} <= reasons
