"""Filtered lists fail closed (issue 14, parts 2 and 3): the App's Check marks a list request, and
its ext_proc servicer (a real in-process grpc.aio server) filters the response for the caller it
resolves from what Envoy forwards. Whatever cannot be filtered is shown empty and counted in
`mcp_extauthz_list_filter_failures_total{reason}`; a filtered 2026-07-28 list goes out private."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2
from prometheus_client import generate_latest

from extauthz.app import App
from extauthz.core.decision import Decision
from extauthz.core.reasons import Reason
from extauthz.envoy.convert import to_check_response
from extauthz.envoy.process import ExternalProcessorServicer, add_to_server
from extauthz.mcp.learnheader import LEARN_HEADER, MAX_ENTRIES, MAX_HEADER_CHARS, decode_learn, encode_learn_header
from extauthz.mcp.request import HttpRequest
from extauthz.mcp.rewrite import BodyRewriter
from extauthz.mcp.sse import SseParser
from extauthz.specs.listfilter import View, fingerprint

JWT_NS = "envoy.filters.http.jwt_authn"
SUPPORT = {"iss": "https://issuer", "sub": "alice", "client_id": "agent", "groups": ["support"]}
ADMIN = {"iss": "https://issuer", "sub": "root", "client_id": "agent", "groups": ["admin"]}
# Entra ID sends up to 200 groups: support plus 199 directory-style names.
MANY_GROUPS = {**SUPPORT, "groups": ["support"] + [f"CN=grp-{i:03d}-engineering-platform-team,OU=Security Groups,OU=Corp,DC=emea,DC=example,DC=com"
                                                   for i in range(199)]}
ALL_TOOLS = ["lookup_customer", "search_customers", "export_customers", "update_settings"]
SUPPORT_TOOLS = ["lookup_customer", "search_customers"]
LONG_ID = "req-" + "x" * 700


def tools_result(names: list[str], **extra: Any) -> dict[str, Any]:
    return {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in names], **extra}


def rpc_list(rid: Any, cursor: str | None = None, method: str = "tools/list") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": {"cursor": cursor} if cursor else {}}


class Env:
    def __init__(self, app: App, stub: pb_grpc.ExternalProcessorStub) -> None:
        self.app, self.stub = app, stub

    def check(self, body: Any, claims: dict[str, Any] | None = SUPPORT, **headers: str) -> Decision:
        md = {JWT_NS: {"jwt_payload": claims}} if claims is not None else {}
        return self.app.check(HttpRequest(method="POST", path="/mcp", authority="127.0.0.1:10000",
                                          headers={"content-type": "application/json", **headers},
                                          body=orjson.dumps(body), metadata=md))

    async def respond(self, marker: str | None, response: bytes, *, ctype: str = "application/json",
                      claims: dict[str, Any] | None = SUPPORT, status: int = 200, chunk: int = 97,
                      extra: dict[str, str] | None = None,
                      resp_extra: dict[str, str] | None = None) -> tuple[bytes, list[pb.ProcessingResponse]]:
        """One ext_proc stream the way Envoy drives it: request headers (the Check's marker and,
        in metadata_context, the jwt_authn claims), response headers, body chunks. Returns what the
        client receives and every answer."""
        h = {":method": "POST", ":path": "/mcp", "x-mcp-server": "crm", "x-mcp-caller": "https://issuer|alice|agent",
             "accept-encoding": "gzip", **(extra or {})}
        if marker is not None:
            h[LEARN_HEADER] = marker
        md = base_pb2.Metadata()
        if claims is not None:
            s = struct_pb2.Struct()
            s.update({"jwt_payload": claims})
            md.filter_metadata[JWT_NS].CopyFrom(s)
        hm = lambda d: base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in d.items()])  # noqa: E731
        reqs = [pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=hm(h)), metadata_context=md),
                pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=hm({":status": str(status), "content-type": ctype,
                                                                                    **(resp_extra or {})})))]
        parts = [response[i:i + chunk] for i in range(0, len(response), chunk)] or [b""]
        reqs += [pb.ProcessingRequest(response_body=pb.HttpBody(body=p, end_of_stream=i == len(parts) - 1))
                 for i, p in enumerate(parts)]
        call = self.stub.Process()
        answers: list[pb.ProcessingResponse] = []
        for r in reqs:
            await call.write(r)
            got = await asyncio.wait_for(call.read(), 5)
            assert got is not grpc.aio.EOF
            answers.append(got)
        await call.done_writing()
        out = bytearray()
        for r, a in zip(parts, answers[2:]):
            m = a.response_body.response
            out += m.body_mutation.body if m.HasField("body_mutation") else r
        return bytes(out), answers

    def failures(self) -> dict[str, int]:
        return dict(self.app.metrics.list_filter_failures.counts)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    app = App(None)               # the embedded default policy: crm, support vs admin tools
    server = grpc.aio.server()
    add_to_server(ExternalProcessorServicer(app.learner), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Env(app, pb_grpc.ExternalProcessorStub(channel))
    finally:
        await channel.close()
        await server.stop(None)


def marker_of(d: Decision) -> str:
    """The learn header the Check's answer carries (through the reference protobuf encoder)."""
    assert d.allowed, d.detail
    headers = {h.header.key: h.header.value for h in to_check_response(d).ok_response.headers}
    return headers[LEARN_HEADER]


def names(doc: Any) -> list[str]:
    return [t["name"] for t in doc["result"]["tools"]]


def sse_body(*msgs: Any) -> bytes:
    return b"".join(b"event: message\r\ndata: " + orjson.dumps(m) + b"\r\n\r\n" for m in msgs)


def sse_docs(body: bytes) -> list[Any]:
    return [orjson.loads(e.data) for e in SseParser().feed(body)]


# -- the view does not depend on ids, batches or claims ------------------------------------------------

async def test_a_normal_list_is_filtered_for_the_caller_ext_proc_resolves(env: Env) -> None:
    d = env.check(rpc_list(1))
    marker = marker_of(d)
    assert decode_learn(marker, View.from_json)[1] == fingerprint(View.of(d.caller))   # a fingerprint, not the view
    out, answers = await env.respond(marker, orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": tools_result(ALL_TOOLS)}))
    assert names(orjson.loads(out)) == SUPPORT_TOOLS
    assert set(env.app.specs.get("crm").tools) == set(ALL_TOOLS)        # learned from the unfiltered list
    assert "accept-encoding" in answers[0].request_headers.response.header_mutation.remove_headers
    assert env.failures() == {}


async def test_two_hundred_long_groups_keep_the_marker_small_and_the_list_filtered(env: Env) -> None:
    d = env.check(rpc_list(1), MANY_GROUPS)
    marker = marker_of(d)
    assert len(marker) < 200
    out, _ = await env.respond(marker, orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": tools_result(ALL_TOOLS)}),
                               claims=MANY_GROUPS)
    assert names(orjson.loads(out)) == SUPPORT_TOOLS


@pytest.mark.parametrize("transport", ["json", "sse"])
async def test_a_list_id_longer_than_512_chars_is_filtered_and_learned(env: Env, transport: str) -> None:
    marker = marker_of(env.check(rpc_list(LONG_ID)))
    msg = {"jsonrpc": "2.0", "id": LONG_ID, "result": tools_result(ALL_TOOLS)}
    if transport == "json":
        out, _ = await env.respond(marker, orjson.dumps(msg))
        doc = orjson.loads(out)
    else:
        out, _ = await env.respond(marker, sse_body(msg), ctype="text/event-stream")
        doc = sse_docs(out)[0]
    assert doc["id"] == LONG_ID and names(doc) == SUPPORT_TOOLS
    assert set(env.app.specs.get("crm").tools) == set(ALL_TOOLS)


async def test_a_batch_at_the_limit_is_filtered_message_by_message(env: Env) -> None:
    ids = [f"{i}-" + "y" * 600 for i in range(MAX_ENTRIES)]
    d = env.check([rpc_list(i) for i in ids], **{"mcp-protocol-version": "2025-03-26"})
    marker = marker_of(d)
    assert len(marker) <= MAX_HEADER_CHARS and len(decode_learn(marker, View.from_json)[0]) == MAX_ENTRIES
    out, _ = await env.respond(marker, orjson.dumps([{"jsonrpc": "2.0", "id": i, "result": tools_result(ALL_TOOLS)}
                                                     for i in ids]), chunk=65536)
    docs = orjson.loads(out)
    assert [m["id"] for m in docs] == ids and all(names(m) == SUPPORT_TOOLS for m in docs)


def test_a_batch_beyond_the_limit_is_denied_at_the_check() -> None:
    app = App(None)
    body = [rpc_list(i) for i in range(MAX_ENTRIES + 1)]
    d = app.check(HttpRequest(method="POST", path="/mcp", authority="127.0.0.1", body=orjson.dumps(body),
                              headers={"content-type": "application/json", "mcp-protocol-version": "2025-03-26"},
                              metadata={JWT_NS: {"jwt_payload": SUPPORT}}))
    assert d.reason is Reason.PAYLOAD_TOO_LARGE and f"at most {MAX_ENTRIES}" in d.detail
    assert not d.plan.entries


def test_the_largest_marker_fits_its_bound() -> None:
    worst = "\"\\" * 20                                      # 40 printable chars: inline, each escaped
    value = encode_learn_header([(worst, "resources/templates/list", True)] * MAX_ENTRIES,
                                fingerprint(View("i", "s", "c", ())))
    assert len(value) <= MAX_HEADER_CHARS and decode_learn(value, View.from_json) is not None


# -- fails closed ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("marker", ["%%%garbage", "A" * (MAX_HEADER_CHARS + 1),
                                    encode_learn_header([(1, "tools/list", True)], "not-a-fingerprint")])
@pytest.mark.parametrize("transport", ["json", "sse"])
async def test_an_unreadable_marker_shows_every_list_empty(env: Env, marker: str, transport: str) -> None:
    msg = {"jsonrpc": "2.0", "id": 1, "result": tools_result(ALL_TOOLS, nextCursor="page-2")}
    if transport == "json":
        out, _ = await env.respond(marker, orjson.dumps(msg))
        doc = orjson.loads(out)
    else:
        out, _ = await env.respond(marker, sse_body(msg), ctype="text/event-stream")
        doc = sse_docs(out)[0]
    assert doc["id"] == 1 and doc["result"] == {"tools": [], "cacheScope": "private"}   # no nextCursor either
    assert env.failures() == {"marker_malformed": 1}
    text = generate_latest(env.app.metrics.registry).decode()
    assert 'mcp_extauthz_list_filter_failures_total{reason="marker_malformed"} 1.0' in text


async def test_an_exception_in_the_filter_shows_the_list_empty(env: Env, monkeypatch) -> None:
    def broken(server: str, view: View) -> Any:
        def keep(kind: str, item: Any) -> bool:
            raise RuntimeError("policy bug")
        return keep
    env.app.learner.list_view = broken
    marker = marker_of(env.check(rpc_list(1)))
    out, _ = await env.respond(marker, orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": tools_result(ALL_TOOLS)}))
    assert orjson.loads(out)["result"]["tools"] == []
    assert env.failures() == {"filter_error": 1}


async def test_an_exception_in_the_rewriter_cuts_the_list(env: Env, monkeypatch) -> None:
    def boom(self: Any, chunk: bytes, end: bool) -> bytes:
        raise RuntimeError("rewriter bug")
    monkeypatch.setattr(BodyRewriter, "feed", boom)
    marker = marker_of(env.check(rpc_list(1)))
    out, _ = await env.respond(marker, orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": tools_result(ALL_TOOLS)}))
    assert b"export_customers" not in out and orjson.loads(out)["error"]["code"] == -32603
    assert env.failures() == {"internal_error": 1}


async def test_a_caller_ext_proc_cannot_resolve_sees_nothing(env: Env) -> None:
    marker = marker_of(env.check(rpc_list(1)))
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": tools_result(ALL_TOOLS)})
    out, _ = await env.respond(marker, body, claims=None)          # Envoy forwarded no claims
    assert orjson.loads(out)["result"]["tools"] == []
    out, _ = await env.respond(marker, body, claims=ADMIN)          # another caller than the Check's
    assert orjson.loads(out)["result"]["tools"] == []
    out, _ = await env.respond(marker, body, claims={"iss": "x"})   # claims without a subject
    assert orjson.loads(out)["result"]["tools"] == []
    assert env.failures() == {"view_unresolved": 2, "view_mismatch": 1}


@pytest.mark.parametrize("response,ctype", [
    (b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"export_customers","description":"\\ud800"}]}}',
     "application/json"),                                              # a lone surrogate: JS parses it, we cannot
    (b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"export_customers"}]}} trailing', "text/plain"),
    (b'event: message\r\ndata: {"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"export_customers",\r\n\r\n',
     "text/event-stream"),
])
async def test_a_body_that_cannot_be_parsed_is_replaced_by_an_error(env: Env, response: bytes, ctype: str) -> None:
    marker = marker_of(env.check(rpc_list(1)))
    out, _ = await env.respond(marker, response, ctype=ctype)
    assert b"export_customers" not in out and b"-32603" in out
    assert env.failures() == {"body_unreadable": 1}


async def test_a_list_over_the_bound_is_replaced_not_passed(env: Env) -> None:
    env.app.learner.max_body_bytes = env.app.learner.max_event_bytes = 2048
    marker = marker_of(env.check(rpc_list(1)))
    big = {"jsonrpc": "2.0", "id": 1, "result": tools_result(ALL_TOOLS * 40)}
    out, _ = await env.respond(marker, sse_body(big, {"jsonrpc": "2.0", "method": "notifications/x"}),
                               ctype="text/event-stream", chunk=500)
    assert b"export_customers" not in out
    docs = sse_docs(out)
    assert docs[0]["error"]["code"] == -32603 and docs[1]["method"] == "notifications/x"
    assert env.failures() == {"body_too_large": 1}


async def test_a_compressed_list_response_is_replaced(env: Env) -> None:
    # the service removes accept-encoding from list requests; a server that compresses anyway is
    # answered with an error, content-encoding and content-type fixed
    marker = marker_of(env.check(rpc_list(1)))
    out, answers = await env.respond(marker, b"\x1f\x8b\x08\x00gzipped", resp_extra={"content-encoding": "gzip"})
    mut = answers[1].response_headers.response.header_mutation
    assert set(mut.remove_headers) == {"content-length", "content-encoding"}
    assert [(h.header.key, h.header.raw_value) for h in mut.set_headers] == [("content-type", b"application/json")]
    assert orjson.loads(out)["error"]["code"] == -32603
    assert env.failures() == {"body_encoded": 1}


# -- part 3: a filtered list is private ---------------------------------------------------------------------

async def test_a_public_2026_list_goes_out_private_when_filtered(env: Env) -> None:
    marker = marker_of(env.check(rpc_list(1)))
    msg = {"jsonrpc": "2.0", "id": 1, "result": tools_result(SUPPORT_TOOLS, ttlMs=60000, cacheScope="public",
                                                             resultType="complete")}
    out, _ = await env.respond(marker, orjson.dumps(msg))
    res = orjson.loads(out)["result"]
    assert res["cacheScope"] == "private" and res["ttlMs"] == 60000 and res["resultType"] == "complete"
    assert [t["name"] for t in res["tools"]] == SUPPORT_TOOLS      # nothing hidden: still private


async def test_an_unfiltered_list_keeps_the_servers_cache_scope(tmp_path) -> None:
    from importlib import resources
    policy = resources.files("extauthz.policy").joinpath("default.yaml").read_text()
    path = tmp_path / "p.yaml"
    path.write_text(policy.replace("filterLists: true", "filterLists: false"))
    app = App(str(path))
    d = app.check(HttpRequest(method="POST", path="/mcp", authority="127.0.0.1", body=orjson.dumps(rpc_list(1)),
                              headers={"content-type": "application/json"}, metadata={JWT_NS: {"jwt_payload": SUPPORT}}))
    assert d.plan.view is None
    ex = app.learner.exchange("crm", "alice", "", encode_learn_header(d.plan.entries, d.plan.view))
    ex.on_response_headers(200, {"content-type": "application/json"})
    assert ex.rewriter is None                                      # passes exactly as the server sent it


async def test_an_anonymous_caller_is_filtered_too(tmp_path) -> None:
    # unauthenticated: allow used to mark no view at all, so an anonymous list passed whole
    from importlib import resources
    policy = resources.files("extauthz.policy").joinpath("default.yaml").read_text()
    path = tmp_path / "p.yaml"
    path.write_text(policy.replace("unauthenticated: deny", "unauthenticated: allow"))
    app = App(str(path))
    d = app.check(HttpRequest(method="POST", path="/mcp", authority="127.0.0.1", body=orjson.dumps(rpc_list(1)),
                              headers={"content-type": "application/json"}))
    assert d.allowed and d.caller is None and d.plan.view == fingerprint(View.of(None))
    ex = app.learner.exchange("crm", "-", "", encode_learn_header(d.plan.entries, d.plan.view), ({}, {}))
    ex.on_response_headers(200, {"content-type": "application/json"})
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": tools_result(ALL_TOOLS)})
    assert orjson.loads(ex.rewriter.feed(body, True))["result"]["tools"] == []   # no rule permits an anonymous caller
    assert app.metrics.list_filter_failures.counts == {}


def test_the_check_marks_a_resumed_stream_with_the_callers_view() -> None:
    app = App(None)
    d = app.check(HttpRequest(method="GET", path="/mcp", authority="127.0.0.1",
                              headers={"mcp-session-id": "s-1", "last-event-id": "4", "accept": "text/event-stream"},
                              metadata={JWT_NS: {"jwt_payload": SUPPORT}}))
    assert d.allowed and d.resumed
    assert decode_learn(marker_of(d), View.from_json) == ([], fingerprint(View.of(d.caller)))
    d = app.check(HttpRequest(method="GET", path="/mcp", authority="127.0.0.1",
                              headers={"mcp-session-id": "s-1", "accept": "text/event-stream"},
                              metadata={JWT_NS: {"jwt_payload": SUPPORT}}))
    assert d.allowed and not d.resumed and d.plan.view is None     # a plain GET stream carries no responses


@pytest.mark.parametrize("method", ["tools/list", "resources/list", "resources/templates/list", "prompts/list"])
@pytest.mark.parametrize("batch", [False, True])
def test_every_allowed_list_request_carries_the_marker_with_a_view(method: str, batch: bool) -> None:
    # the learn route is chosen by this header: a list request without it would never be filtered
    app = App(None)
    msgs = [rpc_list(1, method=method), rpc_list("two", method=method, cursor="c")]
    body: Any = msgs if batch else msgs[0]
    d = app.check(HttpRequest(method="POST", path="/mcp", authority="127.0.0.1", body=orjson.dumps(body),
                              headers={"content-type": "application/json", "mcp-protocol-version": "2025-03-26"},
                              metadata={JWT_NS: {"jwt_payload": MANY_GROUPS}}))
    entries, ref = decode_learn(marker_of(d), View.from_json)
    assert [(e.method, e.first) for e in entries] == [(method, True), (method, False)][:len(msgs) if batch else 1]
    assert ref == fingerprint(View.of(d.caller))
