"""Issue 17 problem 5 under `serve --workers 2`: a 2024-11-05 (HTTP+SSE) session whose GET event
stream is served by one worker while its POSTs are decided by another. The learn entries a POST
leaves (`Learner.expect`) live in the process that decided it, so the stream's worker often has
none; its lists must still be filtered for the stream's caller (by the result's shape), never
passed whole: an admin-only tool never reaches a support user's list."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from google.protobuf import struct_pb2

from extauthz.mcp.learnheader import LEARN_HEADER

from ..unit.core.conftest import ADMIN, SUPPORT, TOOLS
from ..unit.envoy.test_check_transport import check_request
from ..unit.learn.test_learn_process import body, hmap, resp_headers
from .test_workers import learn_tools, serve_workers

pytestmark = pytest.mark.e2e
POLICY = Path(__file__).parent.parent / "unit" / "core" / "policy.yaml"
SESSIONS = 10


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[int, int]]:
    with serve_workers(POLICY) as (gp, ap, _):
        learn_tools(gp)
        time.sleep(0.5)
        yield gp, ap


def channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])


def ok_headers(r: external_auth_pb2.CheckResponse) -> dict[str, str]:
    assert r.status.code == 0, r.denied_response.body
    return {h.header.key: h.header.value for h in r.ok_response.headers}


def stream_open(port: int, claims: dict[str, Any]) -> dict[str, str]:
    """The Check of the GET that opens the event stream: what Envoy then forwards to ext_proc."""
    req = check_request(b"", claims=claims)
    req.attributes.request.http.method, req.attributes.request.http.path = "GET", "/mcp/sse"
    del req.attributes.request.http.headers["content-type"]
    with channel(port) as ch:
        return ok_headers(external_auth_pb2_grpc.AuthorizationStub(ch).Check(req, timeout=10))


def post_list(port: int, claims: dict[str, Any], sid: str) -> str:
    """The session's POST of tools/list, on a fresh connection (either worker); its decision id."""
    req = check_request(orjson.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}), claims=claims)
    req.attributes.request.http.path = f"/mcp/messages/?session_id={sid}"
    with channel(port) as ch:
        return ok_headers(external_auth_pb2_grpc.AuthorizationStub(ch).Check(req, timeout=10))["x-mcp-decision-id"]


def event(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\r\ndata: " + data + b"\r\n\r\n"


def stream_lists(stub: Any, opened: dict[str, str], claims: dict[str, Any], sid: str,
                 tools: list[dict[str, Any]] = TOOLS) -> list[str]:
    """The tool names the client receives in the list result the server sends on the stream."""
    lists = [m for m in stream_events(stub, opened, claims, sid, tools) if "result" in m]
    assert len(lists) == 1, lists
    return sorted(t["name"] for t in lists[0]["result"]["tools"])


def stream_events(stub: Any, opened: dict[str, str], claims: dict[str, Any], sid: str,
                  tools: list[dict[str, Any]] = TOOLS) -> list[dict[str, Any]]:
    """The event stream through ext_proc: the endpoint event, then the list result the server sends
    on it (id 2). Returns the JSON-RPC messages the client receives."""
    h = {":method": "GET", ":path": "/mcp/sse", ":authority": "crm.example.com", ":scheme": "http",
         "accept": "text/event-stream", "x-mcp-server": opened["x-mcp-server"], "x-mcp-caller": opened["x-mcp-caller"],
         LEARN_HEADER: opened[LEARN_HEADER]}
    md = base_pb2.Metadata()
    s = struct_pb2.Struct()
    s.update({"jwt_payload": claims})
    md.filter_metadata["envoy.filters.http.jwt_authn"].CopyFrom(s)
    listing = orjson.dumps({"jsonrpc": "2.0", "id": 2, "result": {"tools": tools}})
    parts = [event("endpoint", f"/mcp/messages/?session_id={sid}".encode()), event("message", listing)]
    msgs = [pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=hmap(h)), metadata_context=md),
            resp_headers(ctype="text/event-stream"), *[body(p) for p in parts]]
    answers = list(stub.Process(iter(msgs), timeout=10))
    assert len(answers) == len(msgs)
    out = bytearray()
    for part, a in zip(parts, answers[2:]):
        m = a.response_body.response
        out += m.body_mutation.body if m.HasField("body_mutation") else part
    return [orjson.loads(line[6:]) for line in bytes(out).splitlines() if line.startswith(b"data: {")]


def test_lists_on_a_stream_are_filtered_whichever_worker_decided_the_post(service):
    gp, ap = service
    alice = dict(SUPPORT, sub="alice-sse")
    opened = stream_open(gp, alice)
    assert opened[LEARN_HEADER].startswith("sse-stream:")       # a stream filtered for alice's view
    shown: list[list[str]] = []
    ids = set()
    with channel(gp) as ch:            # every stream on one connection: one worker serves them all
        stub = external_processor_pb2_grpc.ExternalProcessorStub(ch)
        for n in range(SESSIONS):
            sid = f"sse-split-{n}"
            ids.add(post_list(gp, alice, sid))      # fresh connections: spread over both workers
            shown.append(stream_lists(stub, opened, alice, sid))
    assert all("export_customers" not in names for names in shown), shown
    assert all(names and set(names) <= {t["name"] for t in TOOLS} - {"export_customers"} for names in shown)
    # the POSTs were decided by both workers, and the streams by one: some pairs were split
    time.sleep(1.5)
    decided = {d["worker"] for d in httpx.get(f"http://127.0.0.1:{ap}/v1/decisions?limit=1000").json()["decisions"]
               if d["decision_id"] in ids}
    assert decided == {0, 1}
    # an admin's stream still shows the admin-only tool (filtering, not blanking)
    root = dict(ADMIN, sub="root-sse")
    opened = stream_open(gp, root)
    with channel(gp) as ch:
        stub = external_processor_pb2_grpc.ExternalProcessorStub(ch)
        post_list(gp, root, "sse-admin")
        assert "export_customers" in stream_lists(stub, opened, root, "sse-admin")


def fresh_call(port: int, claims: dict[str, Any], sid: str, name: str, args: dict[str, Any], mid: int = 5) -> str:
    """A session's POST of a call on a fresh connection: its reason."""
    req = check_request(orjson.dumps({"jsonrpc": "2.0", "id": mid, "method": "tools/call",
                                      "params": {"name": name, "arguments": args}}), claims=claims)
    req.attributes.request.http.path = f"/mcp/messages/?session_id={sid}"
    with channel(port) as ch:
        r = external_auth_pb2_grpc.AuthorizationStub(ch).Check(req, timeout=10)
    if r.status.code == 0:
        return "allow"
    return {h.header.key: h.header.value for h in r.denied_response.headers}.get("x-mcp-extauthz-reason", "?")


def test_what_a_split_stream_listed_binds_the_session_on_every_worker(service):
    """The POST's learn entries reach the stream's worker (relayed over the bus), so what the stream
    listed to this session is recorded (sessions.visibilityBinding) and learned, whichever worker
    decided the POST: a tool the server never listed to the session is unknown on both workers."""
    gp, ap = service
    # one caller per session: what one caller's other session was listed must not stand in for it
    callers = [dict(SUPPORT, sub=f"alice-sse-vis-{n}") for n in range(SESSIONS)]
    subset = [t for t in TOOLS if t["name"] == "lookup_customer"]
    with channel(gp) as ch:
        stub = external_processor_pb2_grpc.ExternalProcessorStub(ch)
        for n, alice in enumerate(callers):
            sid = f"sse-vis-{n}"
            opened = stream_open(gp, alice)
            post_list(gp, alice, sid)
            time.sleep(0.05)            # the server answers on the stream after the POST reached it
            assert stream_lists(stub, opened, alice, sid, subset) == ["lookup_customer"]
    time.sleep(0.3)
    for n, alice in enumerate(callers):
        sid = f"sse-vis-{n}"
        got = {fresh_call(gp, alice, sid, "search_customers", {"query": "a"}) for _ in range(4)}
        assert got == {"unknown_capability"}, (sid, got)
        assert fresh_call(gp, alice, sid, "lookup_customer", {"customer_id": "c-100"}) == "allow"


def test_a_denied_post_is_answered_on_a_stream_the_other_worker_serves(service):
    """A 2024-11-05 client reads every answer from its event stream: the denial of a POST decided
    on one worker is written into the session's stream on the other."""
    gp, ap = service
    alice = dict(SUPPORT, sub="alice-sse-deny")
    opened = stream_open(gp, alice)
    with channel(gp) as ch:
        stub = external_processor_pb2_grpc.ExternalProcessorStub(ch)
        for n in range(SESSIONS):
            sid = f"sse-deny-{n}"
            post_list(gp, alice, sid)           # binds the session to alice
            assert fresh_call(gp, alice, sid, "export_customers", {"format": "csv"}, mid=40 + n) == "not_allowed"
            time.sleep(0.05)
            out = stream_events(stub, opened, alice, sid)
            errors = [m for m in out if "error" in m]
            assert [m["id"] for m in errors] == [40 + n], (sid, out)
