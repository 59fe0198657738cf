"""The Check transport through a real in-process grpc.aio server: conversions both ways, denial
forms, monitor mode as an allow/deny pair, and garbage in -> a deny out, never a gRPC error."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import orjson
import pytest
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import struct_pb2

from extauthz.app import App
from extauthz.envoy.check import AuthorizationServicer, add_to_server
from extauthz.mcp.learnheader import LearnEntry, decode_learn
from extauthz.specs.listfilter import View

from ..core.conftest import SUPPORT, learn

POLICY = Path(__file__).parent.parent / "core" / "policy.yaml"


def entries_of(value: str | bytes) -> list[LearnEntry] | None:
    """The entries of a learn header (None: malformed)."""
    decoded = decode_learn(value, View.from_json)
    return None if decoded is None else decoded[0]


def check_request(body: bytes, claims: dict | None = SUPPORT, headers: dict[str, str] | None = None,
                  host: str = "crm.example.com") -> external_auth_pb2.CheckRequest:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.method, http.path, http.host = "POST", "/mcp", host
    http.headers.update({"content-type": "application/json", **(headers or {})})
    http.raw_body = body
    if claims is not None:
        s = struct_pb2.Struct()
        s.update({"jwt_payload": claims})
        req.attributes.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"].CopyFrom(s)
    return req


@pytest.fixture
async def stub_for():
    servers = []

    async def make(policy_text: str | None = None, tmp: Path | None = None):
        path = POLICY
        if policy_text is not None and tmp is not None:
            path = tmp / "p.yaml"
            path.write_text(policy_text)
        app = App(str(path), decision_out=io.BytesIO())
        learn(app)
        server = grpc.aio.server()
        add_to_server(AuthorizationServicer(app), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        servers.append((server, channel))
        return external_auth_pb2_grpc.AuthorizationStub(channel), app

    yield make
    for server, channel in servers:
        await channel.close()
        await server.stop(None)


def headers_of(options) -> dict[str, str]:
    return {h.header.key: h.header.value for h in options}


async def test_allow_sets_upstream_headers_and_metadata(stub_for):
    stub, _ = await stub_for()
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": "lookup_customer", "arguments": {"customer_id": "c-100"}}})
    resp = await stub.Check(check_request(body, headers={"x-mcp-name": "forged"}))
    assert resp.status.code == 0
    h = headers_of(resp.ok_response.headers)
    assert h["x-mcp-server"] == "crm" and h["x-mcp-method"] == "tools/call" and h["x-mcp-name"] == "lookup_customer"
    assert h["x-mcp-caller"] == "https://issuer|alice|agent" and len(h["x-mcp-decision-id"]) == 32
    # the first calls of a tool are observed, on the learn route (Envoy waits for ext_proc) until
    # the tool has shown it returns no resource links (extauthz.sessions.links)
    entries = entries_of(h["x-mcp-extauthz-learn"])
    assert [(e.id, e.method, e.name) for e in entries] == [(1, "tools/call", "lookup_customer")]
    assert "x-mcp-extauthz-observe" in resp.ok_response.headers_to_remove
    md = resp.dynamic_metadata["mcp_extauthz"]
    assert md["decision_id"] == h["x-mcp-decision-id"] and md["reason"] == "allowed"


async def test_list_request_carries_learn_header(stub_for):
    stub, _ = await stub_for()
    resp = await stub.Check(check_request(orjson.dumps({"jsonrpc": "2.0", "id": "a", "method": "tools/list"})))
    h = headers_of(resp.ok_response.headers)
    entries = entries_of(h["x-mcp-extauthz-learn"])
    assert [(e.id, e.method, e.first) for e in entries] == [("a", "tools/list", True)]


async def test_deny_is_jsonrpc_error_with_http_200(stub_for):
    stub, _ = await stub_for()
    body = orjson.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                         "params": {"name": "export_customers", "arguments": {}}})
    resp = await stub.Check(check_request(body))
    assert resp.status.code == 7
    assert resp.denied_response.status.code == 200
    h = headers_of(resp.denied_response.headers)
    assert h["x-mcp-extauthz-reason"] == "not_allowed" and h["content-type"] == "application/json"
    err = orjson.loads(resp.denied_response.body)
    assert err["id"] == 7 and err["error"]["data"]["reason"] == "not_allowed"


async def test_unauthenticated_is_401_with_challenge(stub_for):
    stub, _ = await stub_for()
    resp = await stub.Check(check_request(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', claims=None))
    assert resp.status.code == 16 and resp.denied_response.status.code == 401
    assert headers_of(resp.denied_response.headers)["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("req", [
    external_auth_pb2.CheckRequest(),
    external_auth_pb2.CheckRequest(attributes=attribute_context_pb2.AttributeContext()),
], ids=["empty", "no-http"])
async def test_garbage_check_request_is_a_deny_not_an_error(stub_for, req):
    stub, _ = await stub_for()
    resp = await stub.Check(req)
    assert resp.status.code != 0
    assert headers_of(resp.denied_response.headers)["x-mcp-extauthz-reason"] in ("unknown_server", "malformed_request")


async def test_monitor_mode_turns_deny_into_logged_allow_and_never_the_reverse(stub_for, tmp_path):
    text = POLICY.read_text().replace("mode: enforce", "mode: monitor")
    stub, app = await stub_for(text, tmp_path)
    deny_body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                              "params": {"name": "export_customers", "arguments": {}}})
    resp = await stub.Check(check_request(deny_body))
    assert resp.status.code == 0
    assert resp.dynamic_metadata["mcp_extauthz"]["monitor"] is True
    app.record_pending()            # as every admin view does first
    assert app.decisions.recent[-1]["decision"] == "deny" and app.decisions.recent[-1]["monitor"] is True
    ok_body = orjson.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    resp = await stub.Check(check_request(ok_body))
    app.record_pending()
    assert resp.status.code == 0 and app.decisions.recent[-1]["decision"] == "allow"
