"""Ending a session binding: only the server's confirmation of the owner's DELETE ends it.

The learn-header entry (`session-end:<base64url sid>`), decoded strictly; the ext_proc servicer
through a real in-process grpc.aio server, as Envoy drives it; and the App around both."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from extauthz.app import App
from extauthz.core.reasons import Reason
from extauthz.envoy.process import ExternalProcessorServicer, add_to_server
from extauthz.envoy.wire import encode_check_response
from extauthz.mcp.headers import MAX_SESSION_ID_CHARS
from extauthz.mcp.learnheader import LEARN_HEADER, OBSERVE_HEADER, decode_end_mark, end_mark
from extauthz.sessions.ending import outcome_of
from extauthz.shared.changes import Listed
from extauthz.workers.bus import apply_change

from ..core.conftest import SUPPORT, http, learn
from ..core.test_decide_table import rpc
from ..learn.test_learn_process import hmap

POLICY = Path(__file__).parent.parent / "core" / "policy.yaml"
BOB = dict(SUPPORT, sub="bob")
SID = "0f8fad5bd9cb469fa16570867728950e"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- the mark ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("sid", [SID, "a", "~!#$%&'()*+,-./:;<=>?@[\\]^_`{|}", "x" * MAX_SESSION_ID_CHARS])
def test_end_mark_round_trips_every_visible_ascii_session_id(sid):
    mark = end_mark(sid)
    assert mark.startswith("session-end:") and decode_end_mark(mark) == sid
    assert decode_end_mark(mark.encode()) == sid


@pytest.mark.parametrize("value", [
    None, "", "session-end", "session-end:", "session-end:" + b64(SID.encode()) + "=",        # padding
    "Session-end:" + b64(SID.encode()), "session-end;" + b64(SID.encode()), " session-end:" + b64(SID.encode()),
    "session-end:" + b64(SID.encode()) + " ", "session-end:" + b64(SID.encode()) + "A",     # 1 mod 4
    "session-end:" + b64(SID.encode())[:-1] + "z",                                           # trailing bits
    "session-end:" + b64(SID.encode()).replace("M", "+"),                                    # not url-safe
    "session-end:" + b64(b"has space"), "session-end:" + b64(b"nul\x00"), "session-end:" + b64(b"tab\t"),
    "session-end:" + b64("café".encode()), "session-end:" + b64(b"\xff\xfe"),
    "session-end:" + b64(b"x" * (MAX_SESSION_ID_CHARS + 1)),
    "sse-stream", b"session-end:\xff",
], ids=lambda v: repr(v)[:40])
def test_end_mark_decoding_is_strict(value):
    assert decode_end_mark(value) is None


@pytest.mark.parametrize("status,outcome", [
    (200, "ended"), (202, "ended"), (204, "ended"), (404, "not_found"), (405, "refused"), (307, "refused"),
    (308, "refused"), (400, "refused"), (403, "refused"), (500, "refused"), (503, "refused"), (None, "refused"),
])
def test_only_a_2xx_or_404_confirms_the_end(status, outcome):
    assert outcome_of(status) == outcome


# -- through the ext_proc servicer ---------------------------------------------------------------------

class Seen:
    def __init__(self) -> None:
        self.ends: list[tuple[str, str, str]] = []


@pytest.fixture
async def proc() -> AsyncIterator[tuple[pb_grpc.ExternalProcessorStub, Seen, App]]:
    app = App(str(POLICY), decision_out=io.BytesIO())
    seen = Seen()
    real = app.learner.on_session_end
    assert real is not None

    def spy(server: str, sid: str, outcome: str) -> None:
        seen.ends.append((server, sid, outcome))
        real(server, sid, outcome)
    app.learner.on_session_end = spy
    server = grpc.aio.server()
    add_to_server(ExternalProcessorServicer(app.learner), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.ExternalProcessorStub(channel), seen, app
    finally:
        await channel.close()
        await server.stop(None)


def delete_headers(value: str | None, *, sid: str = SID, header: str = LEARN_HEADER) -> pb.ProcessingRequest:
    h = {":method": "DELETE", ":path": "/mcp", ":authority": "crm.example.com", ":scheme": "http",
         "x-mcp-server": "crm", "x-mcp-caller": "alice", "mcp-session-id": sid}
    if value is not None:
        h[header] = value
    return pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=hmap(h)))


def status(code: int, *, eos: bool = True) -> pb.ProcessingRequest:
    h = {":status": str(code), "content-type": "application/json"}
    return pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=hmap(h), end_of_stream=eos))


async def run(stub: pb_grpc.ExternalProcessorStub, msgs: list[pb.ProcessingRequest]) -> list[pb.ProcessingResponse]:
    call = stub.Process()
    out = []
    for m in msgs:
        try:
            await call.write(m)
        except (grpc.aio.AioRpcError, Exception):       # the service closed a stream with nothing to do
            break
        got = await call.read()
        if got is grpc.aio.EOF:
            break
        out.append(got)
    await call.done_writing()
    return out


def bind(app: App, sid: str = SID) -> None:
    learn(app)
    assert app.check(http(rpc("tools/list"), headers={"mcp-session-id": sid})).allowed


@pytest.mark.parametrize("code,outcome,ended", [(200, "ended", True), (204, "ended", True),
                                                (404, "not_found", True), (405, "refused", False),
                                                (307, "refused", False), (503, "refused", False)])
async def test_the_servers_answer_to_the_delete_decides(proc, code, outcome, ended):
    stub, seen, app = proc
    bind(app)
    out = await run(stub, [delete_headers(end_mark(SID)), status(code)])
    assert [r.WhichOneof("response") for r in out] == ["request_headers", "response_headers"]
    assert list(out[0].request_headers.response.header_mutation.remove_headers) == [LEARN_HEADER, OBSERVE_HEADER]
    assert not out[1].response_headers.response.HasField("header_mutation")    # the answer passes untouched
    assert seen.ends == [("crm", SID, outcome)]
    assert (app.sessions.get(SID) is None) is ended and app.sessions.ended(SID) is ended
    # either way nobody else may use the id, and its (former) owner may
    assert app.check(http(rpc("tools/list"), claims=BOB, headers={"mcp-session-id": SID})).reason \
        is Reason.SESSION_HIJACK
    assert app.check(http(rpc("tools/list"), headers={"mcp-session-id": SID})).allowed
    assert (app.sessions.get(SID) is None) is ended                    # an ended id is not bound again
    text = app.metrics.registry.get_sample_value("mcp_extauthz_session_ends_total", {"outcome": outcome})
    assert text == 1.0


@pytest.mark.parametrize("value,header,sid", [
    (end_mark("another-session"), LEARN_HEADER, SID),              # names a session the request does not carry
    (end_mark(SID)[:-2], LEARN_HEADER, SID),                       # cut
    (end_mark(SID) + "=", LEARN_HEADER, SID),
    ("session-end:" + "!" * 8, LEARN_HEADER, SID),
    (end_mark(SID), OBSERVE_HEADER, SID),                           # only the learn header can carry it
])
async def test_a_malformed_mark_ends_nothing(proc, value, header, sid):
    stub, seen, app = proc
    bind(app)
    await run(stub, [delete_headers(value, header=header, sid=sid), status(200)])
    assert seen.ends == []
    assert app.check(http(rpc("tools/list"), claims=BOB, headers={"mcp-session-id": SID})).reason \
        is Reason.SESSION_HIJACK


async def test_a_delete_without_a_mark_is_not_watched(proc):
    stub, seen, app = proc
    bind(app)
    out = await run(stub, [delete_headers(None), status(200)])
    assert len(out) == 1 and seen.ends == []          # the stream closed after request headers


# -- the Check side ------------------------------------------------------------------------------------

@pytest.fixture
def app() -> App:
    a = App(str(POLICY), decision_out=io.BytesIO())
    learn(a)
    return a


def learn_header(d: Any) -> str | None:
    resp = external_auth_pb2.CheckResponse.FromString(encode_check_response(d))
    values = [h.header.value for h in resp.ok_response.headers if h.header.key == LEARN_HEADER]
    return values[0] if values else None


def test_the_owners_delete_is_marked_with_its_session_id(app):
    bind(app)
    d = app.check(http(method="DELETE", headers={"mcp-session-id": SID}))
    assert d.allowed and d.plan.end_session
    assert decode_end_mark(learn_header(d)) == SID
    assert len(app.sessions) == 1                       # nothing ended before the server answered


def test_a_delete_by_anyone_else_is_hijack_and_unmarked(app):
    bind(app)
    d = app.check(http(method="DELETE", claims=BOB, headers={"mcp-session-id": SID}))
    assert d.reason is Reason.SESSION_HIJACK and not d.plan.end_session
    assert app.sessions.get(SID).caller.endswith("|alice|agent")


@pytest.mark.parametrize("path", ["/mcp/", "/mcp/x", "/mcp/mcp"])
def test_a_delete_elsewhere_than_the_sessions_endpoint_is_not_marked(app, path):
    bind(app)
    d = app.check(http(method="DELETE", path=path, headers={"mcp-session-id": SID}))
    assert d.allowed and not d.plan.end_session and learn_header(d) is None
    assert app.check(http(method="DELETE", path="/mcp?x=1", headers={"mcp-session-id": SID})).plan.end_session


def test_a_session_bound_on_initialize_is_marked_on_its_first_delete(app):
    app.learner.on_session("crm", "https://issuer|alice|agent", SID)   # the initialize response named it
    d = app.check(http(method="DELETE", headers={"mcp-session-id": SID}))
    assert d.allowed and d.plan.end_session


def test_an_end_reaches_every_worker_with_its_visibility(app):
    other = App(str(POLICY), decision_out=io.BytesIO())
    sent: list[dict[str, Any]] = []
    app.sessions.on_change = lambda op, payload: sent.append({"op": op, **payload})
    bind(app)
    app.visibility.listed("crm", SID, "https://issuer|alice|agent", "tools", ["lookup_customer"])
    for m in sent:
        apply_change(other, m)
    other.visibility.apply(Listed("crm", SID, "https://issuer|alice|agent", "tools", ("lookup_customer",)))
    assert other.sessions.get(SID) is not None and other.sessions.get(SID).path == "/mcp"
    sent.clear()
    app.learner.on_session_end("crm", SID, "ended")
    assert sent == [{"op": "end", "sid": SID, "server": "crm", "caller": "https://issuer|alice|agent"}]
    apply_change(other, sent[0])
    assert other.sessions.get(SID) is None and other.visibility.view("crm", SID, "")[0] is None
    assert other.sessions.ended(SID) and not other.sessions.owner_ok(SID, "https://issuer|bob|agent")
