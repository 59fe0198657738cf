"""Prove the Envoy wiring (envoy/envoy.yaml, rendered by extauthz.demo.envoy_config) against a
throwaway in-test gRPC server, independently of the real extauthz service.

The fake server implements ``envoy.service.auth.v3.Authorization/Check`` and
``envoy.service.ext_proc.v3.ExternalProcessor/Process`` on one grpc.aio port and records what Envoy
sends it. What it answers is chosen per request by the ``x-test-action`` header:

- ``deny``: DeniedHttpResponse, status 200, application/json, a JSON-RPC error with the request id;
- ``deny401``: DeniedHttpResponse 401 with its own reason header (Envoy must not overwrite it);
- ``deny413``: DeniedHttpResponse 413 with the service's own JSON body and reason;
- ``learn``: OK, adding ``x-mcp-extauthz-learn: 1`` (selects the ext_proc route);
- ``learnfail``: as ``learn``, but the Process stream aborts with INTERNAL on the request headers;
- anything else: OK with an ``x-mcp-decision-id`` header only.

Upstream is the real demo MCP server (SSE responses), Host kept as 127.0.0.1:<envoy port>.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict
from google.rpc import status_pb2

from extauthz.demo.envoy_config import LEARN_HEADER
from extauthz.demo.stack import Stack, free_port
from extauthz.demo.tokens import TokenIssuer

JWT_NS = "envoy.filters.http.jwt_authn"
AUTHZ_NS = "envoy.filters.http.ext_authz"
ACCEPT = "application/json, text/event-stream"
PROTOCOL_VERSION = "2025-11-25"


# --------------------------------------------------------------------------------------------------
# The throwaway gRPC server
# --------------------------------------------------------------------------------------------------
def _hv(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))


def _ext_proc_headers(h: ep_pb2.HttpHeaders) -> dict[str, str]:
    out: dict[str, str] = {}
    for hv in h.headers.headers:
        out[hv.key] = hv.value if hv.value else hv.raw_value.decode("utf-8", "replace")
    return out


class FakeAuthz(auth_grpc.AuthorizationServicer, ep_grpc.ExternalProcessorServicer):
    def __init__(self) -> None:
        self.checks: list[auth_pb2.CheckRequest] = []
        self.streams: list[list[ep_pb2.ProcessingRequest]] = []
        self.closed_streams = 0

    # -- Authorization/Check --------------------------------------------------------------------
    async def Check(self, request: auth_pb2.CheckRequest, context: grpc.aio.ServicerContext) -> auth_pb2.CheckResponse:
        self.checks.append(request)
        http = request.attributes.request.http
        action = http.headers.get("x-test-action", "allow")
        test_id = http.headers.get("x-test-id", "")
        if action == "deny":
            try:
                rpc_id = json.loads(http.raw_body).get("id")
            except ValueError:
                rpc_id = None
            body = {
                "jsonrpc": "2.0",
                "id": rpc_id,
                "error": {"code": -32001, "message": "denied by policy", "data": {"reason": "not_allowed", "decisionId": test_id}},
            }
            return auth_pb2.CheckResponse(
                status=status_pb2.Status(code=7),  # PERMISSION_DENIED
                denied_response=auth_pb2.DeniedHttpResponse(
                    status=http_status_pb2.HttpStatus(code=200),
                    headers=[_hv("content-type", "application/json"), _hv("x-mcp-extauthz-reason", "not_allowed")],
                    body=json.dumps(body),
                ),
            )
        if action == "deny401":
            return auth_pb2.CheckResponse(
                status=status_pb2.Status(code=16),  # UNAUTHENTICATED
                denied_response=auth_pb2.DeniedHttpResponse(
                    status=http_status_pb2.HttpStatus(code=401),
                    headers=[
                        _hv("content-type", "application/json"),
                        _hv("www-authenticate", 'Bearer realm="mcp"'),
                        _hv("x-mcp-extauthz-reason", "session_hijack"),
                    ],
                    body='{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"no"}}',
                ),
            )
        if action == "deny413":
            return auth_pb2.CheckResponse(
                status=status_pb2.Status(code=7),
                denied_response=auth_pb2.DeniedHttpResponse(
                    status=http_status_pb2.HttpStatus(code=413),
                    headers=[_hv("content-type", "application/json"), _hv("x-mcp-extauthz-reason", "payload_too_large")],
                    body='{"from":"service"}',
                ),
            )
        headers = [_hv("x-mcp-decision-id", test_id or "none")]
        if action in ("learn", "learnfail"):
            headers.append(_hv(LEARN_HEADER, "1"))
        meta = struct_pb2.Struct()
        meta.update({"decision_id": test_id, "action": action})
        return auth_pb2.CheckResponse(
            status=status_pb2.Status(code=0),
            ok_response=auth_pb2.OkHttpResponse(headers=headers),
            dynamic_metadata=meta,
        )

    # -- ExternalProcessor/Process --------------------------------------------------------------
    async def Process(self, request_iterator: Any, context: grpc.aio.ServicerContext):  # type: ignore[override]
        seen: list[ep_pb2.ProcessingRequest] = []
        self.streams.append(seen)
        try:
            async for req in request_iterator:
                seen.append(req)
                kind = req.WhichOneof("request")
                if kind == "request_headers":
                    if _ext_proc_headers(req.request_headers).get("x-test-action") == "learnfail":
                        await context.abort(grpc.StatusCode.INTERNAL, "processor failure (test)")
                    yield ep_pb2.ProcessingResponse(request_headers=ep_pb2.HeadersResponse())
                elif kind == "response_headers":
                    yield ep_pb2.ProcessingResponse(response_headers=ep_pb2.HeadersResponse())
                elif kind == "request_body":
                    yield ep_pb2.ProcessingResponse(request_body=ep_pb2.BodyResponse())
                elif kind == "response_body":
                    yield ep_pb2.ProcessingResponse(response_body=ep_pb2.BodyResponse())
                elif kind == "request_trailers":
                    yield ep_pb2.ProcessingResponse(request_trailers=ep_pb2.TrailersResponse())
                elif kind == "response_trailers":
                    yield ep_pb2.ProcessingResponse(response_trailers=ep_pb2.TrailersResponse())
        finally:
            self.closed_streams += 1

    # -- helpers for the tests (called from the test thread) --------------------------------------
    def checks_for(self, test_id: str) -> list[auth_pb2.CheckRequest]:
        return [c for c in list(self.checks) if c.attributes.request.http.headers.get("x-test-id") == test_id]

    def streams_for(self, test_id: str) -> list[list[ep_pb2.ProcessingRequest]]:
        out = []
        for s in list(self.streams):
            first = s[0] if s else None
            if first is not None and first.WhichOneof("request") == "request_headers":
                if _ext_proc_headers(first.request_headers).get("x-test-id") == test_id:
                    out.append(s)
        return out


class FakeAuthzServer:
    """FakeAuthz on a grpc.aio server, in its own event loop on a background thread."""

    def __init__(self) -> None:
        self.servicer = FakeAuthz()
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-authz", daemon=True)
        self._server: grpc.aio.Server | None = None

    async def _start(self) -> None:
        self._server = grpc.aio.server()
        auth_grpc.add_AuthorizationServicer_to_server(self.servicer, self._server)
        ep_grpc.add_ExternalProcessorServicer_to_server(self.servicer, self._server)
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self._server.start()

    def __enter__(self) -> FakeAuthzServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(grace=0.5), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAuthzServer]:
    with FakeAuthzServer() as server:
        yield server


@pytest.fixture(scope="module")
def stack(fake: FakeAuthzServer, tokens: TokenIssuer) -> Iterator[Stack]:
    with Stack(None, authz_port=fake.port, tokens=tokens) as s:
        yield s


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


def rpc(method: str, params: dict | None = None, rpc_id: int | str | None = 1) -> dict:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    if rpc_id is not None:
        msg["id"] = rpc_id
    return msg


def initialize_msg(rpc_id: int = 1) -> dict:
    return rpc(
        "initialize",
        {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": "wiring-test", "version": "0"}},
        rpc_id,
    )


def headers(action: str = "allow", test_id: str | None = None, token: str | None = None, **extra: str) -> dict[str, str]:
    h = {"accept": ACCEPT, "content-type": "application/json", "x-test-action": action, "x-test-id": test_id or uuid.uuid4().hex}
    if token:
        h["authorization"] = f"Bearer {token}"
    h.update(extra)
    return h


def sse_messages(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("data:"):
            data = line[5:].strip()
            if data:
                out.append(json.loads(data))
    return out


def settle(seconds: float = 0.3) -> None:
    """Let anything Envoy might still send to the fake server arrive before asserting absence."""
    time.sleep(seconds)


# --------------------------------------------------------------------------------------------------
# (a) denial with HTTP 200 and a JSON-RPC error body
# --------------------------------------------------------------------------------------------------
def test_denied_response_with_status_200_reaches_client(stack: Stack, fake: FakeAuthzServer, client: httpx.Client) -> None:
    tid = uuid.uuid4().hex
    r = client.post(stack.url, headers=headers("deny", tid), json=rpc("tools/call", {"name": "export_customers", "arguments": {}}, 42))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"  # exactly one, not "text/plain, ..."
    assert r.headers.get_list("x-mcp-extauthz-reason") == ["not_allowed"]
    body = r.json()
    assert body["id"] == 42
    assert body["error"]["data"] == {"reason": "not_allowed", "decisionId": tid}
    assert len(fake.servicer.checks_for(tid)) == 1
    settle()
    assert fake.servicer.streams_for(tid) == []


def test_services_own_413_is_not_rewritten(stack: Stack, client: httpx.Client) -> None:
    r = client.post(stack.url, headers=headers("deny413"), json=rpc("tools/list"))
    assert r.status_code == 413
    assert r.json() == {"from": "service"}
    assert r.headers.get_list("x-mcp-extauthz-reason") == ["payload_too_large"]


def test_denied_401_keeps_the_services_reason_header(stack: Stack, fake: FakeAuthzServer, client: httpx.Client) -> None:
    r = client.post(stack.url, headers=headers("deny401"), json=rpc("tools/list"))
    assert r.status_code == 401
    # The local_reply mapper adds "unauthenticated" only when the header is absent.
    assert r.headers.get_list("x-mcp-extauthz-reason") == ["session_hijack"]
    assert r.headers["www-authenticate"] == 'Bearer realm="mcp"'


# --------------------------------------------------------------------------------------------------
# (b) learn header -> ext_proc route; no header -> ext_proc disabled
# --------------------------------------------------------------------------------------------------
def test_learn_header_routes_through_ext_proc(
    stack: Stack, fake: FakeAuthzServer, client: httpx.Client, tokens: TokenIssuer
) -> None:
    tid = uuid.uuid4().hex
    r = client.post(stack.url, headers=headers("learn", tid, tokens.mint("alice")), json=initialize_msg(7))
    assert r.status_code == 200, r.text
    (msg,) = sse_messages(r.text)
    assert msg["id"] == 7 and msg["result"]["serverInfo"]["name"] == "demo-crm"

    settle()
    (stream,) = fake.servicer.streams_for(tid)
    kinds = [req.WhichOneof("request") for req in stream]
    assert kinds[0] == "request_headers"
    assert kinds[1] == "response_headers"
    assert set(kinds[2:]) == {"response_body"}, kinds  # no request body, no trailers

    req_headers = _ext_proc_headers(stream[0].request_headers)
    # ext_proc runs before the router, so it still sees the learn header and the decision id.
    assert req_headers[LEARN_HEADER] == "1"
    assert req_headers["x-mcp-decision-id"] == tid
    assert req_headers[":path"] == "/mcp" and req_headers[":method"] == "POST"
    resp_headers = _ext_proc_headers(stream[1].response_headers)
    assert resp_headers[":status"] == "200"
    assert resp_headers["content-type"].startswith("text/event-stream")
    assert resp_headers.get("mcp-session-id")

    chunks = [req.response_body for req in stream[2:]]
    assert chunks[-1].end_of_stream
    assert b"".join(c.body for c in chunks).decode() == r.text

    # Metadata forwarded to ext_proc: verified claims and what Check put in dynamic metadata.
    fm = {ns: MessageToDict(s) for ns, s in stream[0].metadata_context.filter_metadata.items()}
    assert fm[JWT_NS]["jwt_payload"]["sub"] == "alice"
    # Envoy adds its own "ext_authz_duration" (ms) next to what Check returned.
    assert {k: fm[AUTHZ_NS][k] for k in ("decision_id", "action")} == {"decision_id": tid, "action": "learn"}
    assert "ext_authz_duration" in fm[AUTHZ_NS]


def test_without_learn_header_ext_proc_is_not_called(stack: Stack, fake: FakeAuthzServer, client: httpx.Client) -> None:
    tid = uuid.uuid4().hex
    r = client.post(stack.url, headers=headers("allow", tid), json=initialize_msg())
    assert r.status_code == 200, r.text
    assert sse_messages(r.text)[0]["result"]["serverInfo"]["name"] == "demo-crm"
    assert len(fake.servicer.checks_for(tid)) == 1
    settle()
    assert fake.servicer.streams_for(tid) == []


def test_client_cannot_select_the_learn_route(stack: Stack, fake: FakeAuthzServer, client: httpx.Client) -> None:
    tid = uuid.uuid4().hex
    r = client.post(stack.url, headers=headers("allow", tid, **{LEARN_HEADER: "1"}), json=initialize_msg())
    assert r.status_code == 200, r.text
    (check,) = fake.servicer.checks_for(tid)
    assert LEARN_HEADER not in check.attributes.request.http.headers  # stripped before any filter
    settle()
    assert fake.servicer.streams_for(tid) == []


def test_client_cannot_send_identity_or_decision_headers(stack: Stack, fake: FakeAuthzServer, client: httpx.Client) -> None:
    tid = uuid.uuid4().hex
    forged = {"x-jwt-payload": "eyJzdWIiOiJhZG1pbiJ9", "x-mcp-caller": "admin", "x-mcp-server": "crm"}
    r = client.post(stack.url, headers=headers("allow", tid, **forged), json=initialize_msg())
    assert r.status_code == 200
    (check,) = fake.servicer.checks_for(tid)
    for name in forged:
        assert name not in check.attributes.request.http.headers


def test_mcp_session_only_learnable_calls_hit_ext_proc(
    stack: Stack, fake: FakeAuthzServer, client: httpx.Client, tokens: TokenIssuer
) -> None:
    token = tokens.mint("bob", groups=["support"], sid="user-session-1")
    ids = {name: uuid.uuid4().hex for name in ("init", "initialized", "list", "call")}

    r = client.post(stack.url, headers=headers("learn", ids["init"], token), json=initialize_msg(1))
    assert r.status_code == 200, r.text
    session = r.headers["mcp-session-id"]
    sh = {"mcp-session-id": session, "mcp-protocol-version": PROTOCOL_VERSION}

    r = client.post(stack.url, headers=headers("allow", ids["initialized"], token, **sh), json=rpc("notifications/initialized", rpc_id=None))
    assert r.status_code == 202, r.text

    r = client.post(stack.url, headers=headers("learn", ids["list"], token, **sh), json=rpc("tools/list", {}, 2))
    assert r.status_code == 200, r.text
    tools = {t["name"] for t in sse_messages(r.text)[0]["result"]["tools"]}
    assert {"lookup_customer", "export_customers"} <= tools

    r = client.post(
        stack.url,
        headers=headers("allow", ids["call"], token, **sh),
        json=rpc("tools/call", {"name": "lookup_customer", "arguments": {"customer_id": "c-100"}}, 3),
    )
    assert r.status_code == 200, r.text
    assert "Ada Lovelace" in r.text

    settle()
    assert len(fake.servicer.streams_for(ids["init"])) == 1
    assert len(fake.servicer.streams_for(ids["list"])) == 1
    assert fake.servicer.streams_for(ids["initialized"]) == []
    assert fake.servicer.streams_for(ids["call"]) == []
    (list_stream,) = fake.servicer.streams_for(ids["list"])
    listed = b"".join(req.response_body.body for req in list_stream if req.WhichOneof("request") == "response_body")
    assert b"lookup_customer" in listed


# --------------------------------------------------------------------------------------------------
# (c) raw body and jwt_authn metadata in Check
# --------------------------------------------------------------------------------------------------
def test_check_sees_raw_body_and_verified_claims(
    stack: Stack, fake: FakeAuthzServer, client: httpx.Client, tokens: TokenIssuer
) -> None:
    tid = uuid.uuid4().hex
    token = tokens.mint("alice", groups=["support", "admin"], sid="sess-9", customer_ids=["c-100"])
    # Byte-exact: odd spacing, duplicate key and a non-ASCII escape must reach Check unchanged.
    raw = b'{"jsonrpc":"2.0", "id":5,"method":"tools/call","params":{"name":"lookup_customer","arguments":{"customer_id":"c-100","customer_id":"c-\\u00e9"}}}'
    r = client.post(stack.url, headers=headers("deny", tid, token), content=raw)
    assert r.status_code == 200 and r.json()["id"] == 5

    (check,) = fake.servicer.checks_for(tid)
    http = check.attributes.request.http
    assert http.raw_body == raw
    assert http.body == ""  # pack_as_bytes: only raw_body is filled
    assert http.method == "POST" and http.path == "/mcp"
    assert http.host == f"127.0.0.1:{stack.envoy_port}"
    assert http.headers["authorization"] == f"Bearer {token}"  # forward: true

    fm = check.attributes.metadata_context.filter_metadata
    assert JWT_NS in fm
    payload = MessageToDict(fm[JWT_NS])["jwt_payload"]
    assert payload["sub"] == "alice"
    assert payload["groups"] == ["support", "admin"]
    assert payload["customer_ids"] == ["c-100"]
    assert payload["sid"] == "sess-9"
    assert payload["client_id"] == "demo-agent"
    assert payload["iss"] == tokens.issuer and payload["aud"] == tokens.audience


# --------------------------------------------------------------------------------------------------
# (d) missing token reaches Check; bad token stops at Envoy
# --------------------------------------------------------------------------------------------------
def test_missing_token_reaches_check_without_jwt_metadata(stack: Stack, fake: FakeAuthzServer, client: httpx.Client) -> None:
    tid = uuid.uuid4().hex
    r = client.post(stack.url, headers=headers("deny", tid), json=rpc("tools/list", {}, 1))
    assert r.status_code == 200
    (check,) = fake.servicer.checks_for(tid)
    assert JWT_NS not in check.attributes.metadata_context.filter_metadata
    assert "authorization" not in check.attributes.request.http.headers


@pytest.mark.parametrize("kind", ["wrong_key", "expired", "wrong_audience", "wrong_issuer", "garbage", "no_exp"])
def test_bad_token_is_rejected_by_envoy_with_401(
    kind: str, stack: Stack, fake: FakeAuthzServer, client: httpx.Client, tokens: TokenIssuer, other_tokens: TokenIssuer
) -> None:
    token = {
        "wrong_key": lambda: other_tokens.mint("mallory"),
        "expired": lambda: tokens.mint("alice", ttl=-600),
        "wrong_audience": lambda: tokens.mint("alice", aud="someone-else"),
        "wrong_issuer": lambda: tokens.mint("alice", iss="https://evil.example"),
        "garbage": lambda: "not.a.jwt",
        "no_exp": lambda: tokens.mint("alice", exp=None),
    }[kind]()
    tid = uuid.uuid4().hex
    r = client.post(stack.url, headers=headers("allow", tid, token), json=rpc("tools/list", {}, 1))
    assert r.status_code == 401, r.text  # also for a wrong audience (jwt_authn says 403 there)
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert r.headers.get_list("x-mcp-extauthz-reason") == ["unauthenticated"]
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["data"] == {"reason": "unauthenticated"} and r.json()["id"] is None
    settle(0.1)
    assert fake.servicer.checks_for(tid) == []


def _jwt_cache_hits(stack: Stack) -> int:
    text = httpx.get(f"{stack.envoy_admin_url}/stats?filter=jwt_cache_hit", timeout=5).text
    return sum(int(line.rsplit(":", 1)[1]) for line in text.splitlines() if ":" in line)


def test_cached_token_is_rejected_once_it_expires(stack: Stack, fake: FakeAuthzServer, client: httpx.Client,
                                                  tokens: TokenIssuer) -> None:
    """jwt_authn caches verified tokens (jwt_cache_config): a token that passed and was cached must
    still be refused once it expires. Envoy allows 60 s of clock skew, so exp 57 s ago is valid for
    about 3 more seconds."""
    token = tokens.mint("alice", ttl=-57)
    tid = uuid.uuid4().hex
    hits = _jwt_cache_hits(stack)
    for _ in range(3):                  # verified, then answered from the cache: each reaches Check
        r = client.post(stack.url, headers=headers("deny", tid, token), json=rpc("tools/list", {}, 1))
        assert r.status_code == 200, r.text
    assert len(fake.servicer.checks_for(tid)) == 3
    assert _jwt_cache_hits(stack) >= hits + 1     # the cache really answered (Envoy: one cache per worker)
    settle(4.5)
    r = client.post(stack.url, headers=headers("allow", tid, token), json=rpc("tools/list", {}, 1))
    assert r.status_code == 401, r.text
    assert r.headers.get_list("x-mcp-extauthz-reason") == ["unauthenticated"]
    assert len(fake.servicer.checks_for(tid)) == 3


# --------------------------------------------------------------------------------------------------
# Envoy's own limits and failure modes
# --------------------------------------------------------------------------------------------------
def test_body_over_max_request_bytes_is_413_before_check(stack: Stack, fake: FakeAuthzServer, client: httpx.Client) -> None:
    tid = uuid.uuid4().hex
    big = rpc("tools/call", {"name": "lookup_customer", "arguments": {"customer_id": "x" * 300_000}}, 1)
    r = client.post(stack.url, headers=headers("allow", tid), json=big)
    assert r.status_code == 413
    assert r.headers.get_list("x-mcp-extauthz-reason") == ["payload_too_large"]
    assert r.json()["error"]["data"] == {"reason": "payload_too_large"}
    assert fake.servicer.checks_for(tid) == []


def test_body_at_max_request_bytes_reaches_check(stack: Stack, fake: FakeAuthzServer, client: httpx.Client) -> None:
    tid = uuid.uuid4().hex
    prefix = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":"'
    suffix = b'"}}}'
    raw = prefix + b"y" * (262144 - len(prefix) - len(suffix)) + suffix
    assert len(raw) == 262144
    # Envoy sets x-envoy-auth-partial-body on every Check with a body, overwriting a client's copy.
    r = client.post(stack.url, headers=headers("deny", tid, **{"x-envoy-auth-partial-body": "true"}), content=raw)
    assert r.status_code == 200
    (check,) = fake.servicer.checks_for(tid)
    assert check.attributes.request.http.raw_body == raw
    assert check.attributes.request.http.headers["x-envoy-auth-partial-body"] == "false"


def test_ext_proc_failure_on_learn_route_fails_closed(stack: Stack, fake: FakeAuthzServer, client: httpx.Client) -> None:
    r = client.post(stack.url, headers=headers("learnfail"), json=initialize_msg())
    assert r.status_code == 500
    assert "serverInfo" not in r.text


def test_ext_proc_sees_local_reply_when_upstream_is_down(
    stack_factory: Any, fake: FakeAuthzServer, client: httpx.Client
) -> None:
    s = stack_factory(None, authz_port=fake.port)
    s.process("upstream").terminate()
    s.process("upstream").wait(10)
    tid = uuid.uuid4().hex
    r = client.post(s.url, headers=headers("learn", tid), json=initialize_msg())
    assert r.status_code == 503
    settle()
    (stream,) = fake.servicer.streams_for(tid)
    kinds = [req.WhichOneof("request") for req in stream]
    assert kinds[:2] == ["request_headers", "response_headers"]
    assert _ext_proc_headers(stream[1].response_headers)[":status"] == "503"
    body = b"".join(req.response_body.body for req in stream if req.WhichOneof("request") == "response_body")
    assert body.decode() == r.text


def test_get_without_body_reaches_check(stack: Stack, fake: FakeAuthzServer, client: httpx.Client) -> None:
    tid = uuid.uuid4().hex
    r = client.get(stack.url, headers={"accept": "text/event-stream", "x-test-action": "deny", "x-test-id": tid})
    assert r.status_code == 200  # our fake denies with 200 whatever the method
    (check,) = fake.servicer.checks_for(tid)
    assert check.attributes.request.http.method == "GET"
    assert check.attributes.request.http.raw_body == b""


def test_authz_service_down_fails_closed(stack_factory: Any, client: httpx.Client) -> None:
    dead = stack_factory(None, authz_port=free_port())  # nothing listens there
    r = client.post(dead.url, headers=headers("allow"), json=initialize_msg())
    assert r.status_code == 403


# --------------------------------------------------------------------------------------------------
# The Stack harness itself
# --------------------------------------------------------------------------------------------------
def test_stack_reports_a_failing_process_with_its_log(tmp_path: Any, tokens: TokenIssuer) -> None:
    import sys

    from extauthz.demo.stack import StackError

    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: mcp-extauthz/v1\nkind: Policy\n")
    crash = [sys.executable, "-c", "import sys; print('service exploded on purpose'); sys.exit(3)"]
    stack = Stack(policy, tokens=tokens, service_cmd=crash, service_timeout=10)
    with pytest.raises(StackError) as err:
        stack.start()
    msg = str(err.value)
    assert "service" in msg and "exited with code 3" in msg and "service exploded on purpose" in msg
    # Everything started was stopped again.
    for name in ("upstream", "service", "envoy"):
        proc = stack.process(name)
        assert proc is not None and proc.poll() is not None
    assert "service exploded on purpose" in stack.logs()["service"]


def test_stack_addresses(stack: Stack) -> None:
    assert stack.url == f"http://127.0.0.1:{stack.envoy_port}/mcp"
    assert stack.upstream_url == f"http://127.0.0.1:{stack.upstream_port}/mcp"
    assert set(stack.logs()) == {"upstream", "envoy"}  # no service: the fake stands in for it
    # The upstream accepts the Host Envoy forwards (127.0.0.1:<envoy port>) but is reachable directly too.
    r = httpx.post(stack.upstream_url, headers={"accept": ACCEPT}, json=initialize_msg())
    assert r.status_code == 200
