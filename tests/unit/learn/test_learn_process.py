"""ExternalProcessorServicer through a real in-process grpc.aio server and channel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from extauthz.envoy.process import ExternalProcessorServicer, add_to_server
from extauthz.mcp.learnheader import LEARN_HEADER, OBSERVE_HEADER, encode_learn_header
from extauthz.specs.learn import Learner
from extauthz.specs.store import SpecStore

SDK_TOOLS = (
    b'event: message\r\ndata: {"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"lookup_customer",'
    b'"description":"Look up one customer by id.","inputSchema":{"properties":{"customer_id":'
    b'{"title":"Customer Id","type":"string"}},"required":["customer_id"],"type":"object"}}]}}\r\n\r\n'
)


class Env:
    def __init__(self, store: SpecStore, learner: Learner, servicer: ExternalProcessorServicer,
                 server: grpc.aio.Server, channel: grpc.aio.Channel) -> None:
        self.store, self.learner, self.servicer = store, learner, servicer
        self.server, self.channel = server, channel
        self.stub = pb_grpc.ExternalProcessorStub(channel)

    async def exchange(self, requests: list[pb.ProcessingRequest]) -> tuple[list[pb.ProcessingResponse],
                                                                            grpc.StatusCode | None]:
        """Lock-step, as Envoy does: send one message, wait for its answer; when the service closed
        the stream (it has nothing to do with this response), go on without it, as Envoy does."""
        call = self.stub.Process()
        out = []
        for req in requests:
            try:
                await call.write(req)
            except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
                # the service closed the stream after its last answer; this write lost the race
                # (Envoy likewise just goes on without the service)
                return out, None
            if not req.observability_mode:
                got = await asyncio.wait_for(call.read(), 5)
                if got is grpc.aio.EOF:
                    return out, await call.code()
                out.append(got)
        await call.done_writing()
        assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF
        return out, await call.code()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    store = SpecStore()
    learner = Learner(store, lambda: "quarantine")
    servicer = ExternalProcessorServicer(learner)
    server = grpc.aio.server()
    add_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Env(store, learner, servicer, server, channel)
    finally:
        await channel.close()
        await server.stop(None)


def hmap(headers: dict[str, str], *, raw: bool = True) -> base_pb2.HeaderMap:
    if raw:
        return base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()])
    return base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, value=v) for k, v in headers.items()])


def req_headers(learn: list[tuple[Any, str, bool]] | None, *, server: str = "crm", raw: bool = True,
                extra: dict[str, str] | None = None) -> pb.ProcessingRequest:
    h = {":method": "POST", ":path": "/mcp", ":authority": "crm.example.com", ":scheme": "http",
         "content-type": "application/json", "accept": "application/json, text/event-stream",
         "x-mcp-server": server, "x-mcp-caller": "alice", "mcp-session-id": "sess-1", **(extra or {})}
    if learn is not None:
        h[LEARN_HEADER] = encode_learn_header(learn)
    return pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=hmap(h, raw=raw)))


def resp_headers(status: int = 200, ctype: str = "text/event-stream", *, raw: bool = True,
                 eos: bool = False, **extra: str) -> pb.ProcessingRequest:
    h = {":status": str(status), "content-type": ctype, **{k.replace("_", "-"): v for k, v in extra.items()}}
    return pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=hmap(h, raw=raw), end_of_stream=eos))


def body(chunk: bytes, eos: bool = False) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=chunk, end_of_stream=eos))


def chunks(data: bytes, n: int) -> list[pb.ProcessingRequest]:
    parts = [data[i:i + n] for i in range(0, len(data), n)]
    return [body(p, i == len(parts) - 1) for i, p in enumerate(parts)]


def phases(responses: list[pb.ProcessingResponse]) -> list[str | None]:
    return [r.WhichOneof("response") for r in responses]


def assert_passthrough(responses: list[pb.ProcessingResponse]) -> None:
    """Nothing but the learn-header removal: no status, no body or other header changes."""
    for r in responses:
        kind = r.WhichOneof("response")
        assert kind != "immediate_response"
        common = getattr(r, kind).response if kind not in ("request_trailers", "response_trailers") else None
        if common is not None:
            assert not common.HasField("body_mutation") and common.status == pb.CommonResponse.CONTINUE
            expect_removed = [LEARN_HEADER, OBSERVE_HEADER] if kind == "request_headers" else []
            assert list(common.header_mutation.remove_headers) == expect_removed
            assert len(common.header_mutation.set_headers) == 0


@pytest.mark.parametrize("raw", [True, False], ids=["raw_value", "value"])
@pytest.mark.parametrize("size", [1, 17, 4096])
async def test_learns_tools_from_streamed_sse(env: Env, raw: bool, size: int) -> None:
    reqs = [req_headers([(2, "tools/list", True)], raw=raw), resp_headers(raw=raw), *chunks(SDK_TOOLS, size)]
    responses, code = await env.exchange(reqs)
    assert code == grpc.StatusCode.OK
    assert phases(responses) == ["request_headers", "response_headers"] + ["response_body"] * (len(reqs) - 2)
    assert_passthrough(responses)
    assert list(responses[0].request_headers.response.header_mutation.remove_headers) == [LEARN_HEADER, OBSERVE_HEADER]
    spec = env.store.get("crm")
    assert spec is not None and set(spec.tools) == {"lookup_customer"}
    assert spec.tools["lookup_customer"].input_schema["required"] == ["customer_id"]
    await _settle(env)


async def test_learns_from_json_batch_and_initialize(env: Env) -> None:
    batch = orjson.dumps([
        {"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-11-25", "capabilities": {},
                                               "serverInfo": {"name": "crm", "version": "1"}}},
        {"jsonrpc": "2.0", "id": "p", "result": {"prompts": [{"name": "draft_reply"}]}},
    ])
    reqs = [req_headers([(1, "initialize", True), ("p", "prompts/list", True)]),
            resp_headers(200, "application/json", mcp_session_id="new-session"), *chunks(batch, 50)]
    responses, code = await env.exchange(reqs)
    assert code == grpc.StatusCode.OK and len(responses) == len(reqs)
    spec = env.store.get("crm")
    assert spec.info["serverInfo"]["name"] == "crm" and set(spec.prompts) == {"draft_reply"}


async def test_other_phases_answered_in_kind(env: Env) -> None:
    reqs = [req_headers([(2, "tools/list", True)]),
            pb.ProcessingRequest(request_body=pb.HttpBody(body=b'{"jsonrpc":"2.0"}', end_of_stream=True)),
            pb.ProcessingRequest(request_trailers=pb.HttpTrailers()),
            resp_headers(),
            body(SDK_TOOLS, False),
            pb.ProcessingRequest(response_trailers=pb.HttpTrailers())]
    responses, code = await env.exchange(reqs)
    assert code == grpc.StatusCode.OK
    assert phases(responses) == ["request_headers", "request_body", "request_trailers",
                                 "response_headers", "response_body", "response_trailers"]
    assert_passthrough(responses)
    assert set(env.store.get("crm").tools) == {"lookup_customer"}


async def test_stream_starting_with_response_headers(env: Env) -> None:
    """An Envoy local reply (401 from jwt_authn, 413) passes through ext_proc with no request."""
    reqs = [resp_headers(401, "application/json", www_authenticate="Bearer"),
            body(b'{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"unauthenticated"}}', True)]
    responses, code = await env.exchange(reqs)
    assert code == grpc.StatusCode.OK
    assert phases(responses) == ["response_headers", "response_body"]
    assert_passthrough(responses)
    assert env.store.servers() == []


async def test_response_headers_only_end_of_stream(env: Env) -> None:
    responses, code = await env.exchange([req_headers([(2, "tools/list", True)]), resp_headers(202, eos=True)])
    assert code == grpc.StatusCode.OK and phases(responses) == ["request_headers", "response_headers"]


@pytest.mark.parametrize("garbage", [
    b"\x00\xff garbage \xfe", b"data: {not json\n\n", b"event: message\r\ndata: [[[[[\r\n\r\n",
    b'{"jsonrpc":"2.0","id":2,"result":{"tools":"nope"}}',
])
@pytest.mark.parametrize("ctype", ["text/event-stream", "application/json"])
async def test_malformed_body_completes_cleanly(env: Env, garbage: bytes, ctype: str) -> None:
    reqs = [req_headers([(2, "tools/list", True)]), resp_headers(200, ctype), *chunks(garbage, 3)]
    responses, code = await env.exchange(reqs)
    assert code == grpc.StatusCode.OK
    assert phases(responses) == ["request_headers", "response_headers"] + ["response_body"] * (len(reqs) - 2)
    assert_passthrough(responses)
    assert env.store.get("crm") is None


@pytest.mark.parametrize("learn", [None])
async def test_no_exchange_still_answers_and_strips(env: Env, learn: str | None) -> None:
    extra = {} if learn is None else {LEARN_HEADER: learn}
    reqs = [req_headers(None, extra=extra), resp_headers(), *chunks(SDK_TOOLS, 64)]
    responses, code = await env.exchange(reqs)
    # the request headers are answered (our headers stripped), then the stream is closed cleanly:
    # nothing to learn from this response, so Envoy goes on without the service
    assert code in (grpc.StatusCode.OK, None) and len(responses) == 1
    assert list(responses[0].request_headers.response.header_mutation.remove_headers) == [LEARN_HEADER, OBSERVE_HEADER]
    assert env.store.get("crm") is None
    for _ in range(100):                       # the service's side of the stream really ended
        if env.servicer.streams_active == 0:
            break
        await asyncio.sleep(0.01)
    assert env.servicer.streams_active == 0


async def test_learning_exception_does_not_break_stream(env: Env, monkeypatch, caplog) -> None:
    def boom(*a: Any, **k: Any) -> None:
        raise RuntimeError("learner bug")
    monkeypatch.setattr(env.learner, "exchange", boom)
    with caplog.at_level(logging.ERROR):
        responses, code = await env.exchange([req_headers([(2, "tools/list", True)]), resp_headers(),
                                              *chunks(SDK_TOOLS, 100)])
    assert code in (grpc.StatusCode.OK, None)
    assert phases(responses) == ["request_headers"]          # then closed: Envoy goes on without us
    assert_passthrough(responses)
    assert "learner bug" in caplog.text


async def test_exchange_method_exception_does_not_break_stream(env: Env, monkeypatch, caplog) -> None:
    from extauthz.specs import exchange

    def boom(self: Any, *a: Any) -> None:
        raise RuntimeError("parser bug")
    monkeypatch.setattr(exchange.Exchange, "_on_body", boom)
    with caplog.at_level(logging.ERROR):
        responses, code = await env.exchange([req_headers([(2, "tools/list", True)]), resp_headers(),
                                              *chunks(SDK_TOOLS, 100)])
    assert code == grpc.StatusCode.OK and len(responses) == 2 + len(chunks(SDK_TOOLS, 100))
    assert caplog.text.count("learning failed on response body") == 1           # logged once; learning then off for the stream


async def test_observability_mode_sends_nothing(env: Env) -> None:
    reqs = [req_headers([(2, "tools/list", True)]), resp_headers(), *chunks(SDK_TOOLS, 50)]
    for r in reqs:
        r.observability_mode = True
    responses, code = await env.exchange(reqs)
    assert responses == [] and code == grpc.StatusCode.OK
    await _settle(env)
    assert set(env.store.get("crm").tools) == {"lookup_customer"}


async def test_observed_stream_is_ended_by_the_service_once_the_result_is_in(env: Env) -> None:
    # Envoy keeps an observability-mode stream open until its deferred close (5 s by default)
    # unless the service ends it: a caller observed at 50 calls/s would hold ~250 streams open.
    call = env.stub.Process()
    reqs = [req_headers([(2, "tools/list", True)]), resp_headers(), *chunks(SDK_TOOLS, 50)]
    for r in reqs:
        r.observability_mode = True
        await call.write(r)
    assert await asyncio.wait_for(call.code(), 5) == grpc.StatusCode.OK      # no done_writing() from us
    await _settle(env)
    assert env.servicer.streams_active == 0
    assert set(env.store.get("crm").tools) == {"lookup_customer"}


async def test_empty_message_ignored(env: Env) -> None:
    call = env.stub.Process()
    await call.write(pb.ProcessingRequest())
    await call.write(resp_headers(500))
    r = await asyncio.wait_for(call.read(), 5)
    assert r.WhichOneof("response") == "response_headers"
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF and await call.code() == grpc.StatusCode.OK


async def test_concurrent_streams_keep_their_own_state(env: Env) -> None:
    def page(rid: int, name: str) -> bytes:
        return b"event: message\r\ndata: " + orjson.dumps(
            {"jsonrpc": "2.0", "id": rid, "result": {"tools": [{"name": name, "inputSchema": {"type": "object"}}]}}) + b"\r\n\r\n"
    a, b = env.stub.Process(), env.stub.Process()
    pa, pb_ = page(1, "from_a"), page(1, "from_b")
    script = [(a, req_headers([(1, "tools/list", True)], server="A")),
              (b, req_headers([(1, "tools/list", True)], server="B")),
              (b, resp_headers()), (a, resp_headers()),
              (a, body(pa[:30])), (b, body(pb_[:11])), (b, body(pb_[11:], True)), (a, body(pa[30:], True))]
    for call, r in script:
        await call.write(r)
        assert (await asyncio.wait_for(call.read(), 5)).WhichOneof("response") == r.WhichOneof("request")
    for call in (a, b):
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK
    assert set(env.store.get("A").tools) == {"from_a"} and set(env.store.get("B").tools) == {"from_b"}


async def test_client_cancel_mid_stream_logs_no_traceback(env: Env, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    call = env.stub.Process()
    await call.write(req_headers([(2, "tools/list", True)]))
    await call.read()
    await call.write(resp_headers())
    await call.read()
    await call.write(body(SDK_TOOLS[:40]))
    await call.read()
    assert env.servicer.streams_active == 1
    call.cancel()
    await _settle(env)
    assert env.servicer.streams_active == 0
    assert env.store.get("crm") is None
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert bad == []


async def _settle(env: Env) -> None:
    for _ in range(200):
        if env.servicer.streams_active == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("server-side stream did not finish")


TOOLS_JSON = orjson.dumps({"jsonrpc": "2.0", "id": 2, "result": {"tools": [
    {"name": "lookup_customer", "inputSchema": {"type": "object"}}]}})


async def test_json_body_ended_by_stream_close_is_learned(env: Env) -> None:
    """Response trailers (skipped by the filter) mean the last body chunk lacks end_of_stream:
    Envoy half-closes the ext_proc stream instead, and the buffered body is parsed then."""
    responses, code = await env.exchange([req_headers([(2, "tools/list", True)]),
                                          resp_headers(200, "application/json"), body(TOOLS_JSON, False)])
    assert code == grpc.StatusCode.OK and len(responses) == 3
    await _settle(env)
    assert set(env.store.get("crm").tools) == {"lookup_customer"}


async def test_cancelled_stream_with_cut_json_learns_nothing_quietly(env: Env, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    call = env.stub.Process()
    for r in (req_headers([(2, "tools/list", True)]), resp_headers(200, "application/json"),
              body(TOOLS_JSON[:-5], False)):
        await call.write(r)
        await call.read()
    call.cancel()
    await _settle(env)
    assert env.store.get("crm") is None
    assert [r for r in caplog.records if r.levelno >= logging.INFO or r.exc_info] == []
