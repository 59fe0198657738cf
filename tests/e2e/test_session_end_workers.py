"""`serve --workers 2` (issue 14.1): the server's answer to an owner's DELETE may reach any
worker's ext_proc; a refusal changes nothing anywhere, a confirmation ends the binding on every
worker (the relayed "end"). Checks and ext_proc streams each go over a fresh connection, so
SO_REUSEPORT spreads them over both workers."""

from __future__ import annotations

import time

import grpc
import httpx
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc

from extauthz.mcp.learnheader import LEARN_HEADER, decode_end_mark

from ..unit.core.conftest import SUPPORT
from ..unit.envoy.test_check_transport import check_request
from ..unit.learn.test_learn_process import hmap
from .test_workers import CALL, fresh_check, learn_tools, service  # noqa: F401 - `service` is a fixture

SID = "ended-across-workers"


def reason(resp) -> str:
    return dict((h.header.key, h.header.value) for h in resp.denied_response.headers).get("x-mcp-extauthz-reason", "")


def server_answers_delete(port: int, mark: str, status: int) -> None:
    """What Envoy's ext_proc filter sends for the DELETE's request and response headers."""
    req = {":method": "DELETE", ":path": "/mcp", ":authority": "crm.example.com", "x-mcp-server": "crm",
           "x-mcp-caller": "x", "mcp-session-id": SID, LEARN_HEADER: mark}
    msgs = [pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=hmap(req))),
            pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=hmap({":status": str(status)}),
                                                                 end_of_stream=True))]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = external_processor_pb2_grpc.ExternalProcessorStub(ch)
        assert len(list(stub.Process(iter(msgs), timeout=5))) == 2


def intruders(port: int, n: int, tag: str) -> list[str]:
    """n different callers, one attempt each (one caller repeating it would soon be risk_blocked)."""
    out = []
    for i in range(n):
        r = fresh_check(port, check_request(CALL, claims=dict(SUPPORT, sub=f"{tag}-{i}"), headers={"mcp-session-id": SID}))
        out.append("allowed" if r.status.code == 0 else reason(r))
    return out


def test_only_a_confirmed_end_is_relayed_to_every_worker(service):  # noqa: F811
    gp, ap, _ = service
    learn_tools(gp)
    time.sleep(0.3)
    assert fresh_check(gp, check_request(CALL, headers={"mcp-session-id": SID})).status.code == 0
    time.sleep(0.3)
    delete = check_request(b"", headers={"mcp-session-id": SID})
    delete.attributes.request.http.method = "DELETE"
    delete.attributes.request.http.headers.pop("content-type")
    ok = fresh_check(gp, delete)
    assert ok.status.code == 0
    (mark,) = [h.header.value for h in ok.ok_response.headers if h.header.key == LEARN_HEADER]
    assert decode_end_mark(mark) == SID

    server_answers_delete(gp, mark, 405)            # refused: the binding stays everywhere
    time.sleep(0.3)
    assert set(intruders(gp, 12, "early")) == {"session_hijack"}

    server_answers_delete(gp, mark, 200)            # confirmed on one worker ...
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sessions = httpx.get(f"http://127.0.0.1:{ap}/v1/sessions", timeout=5).json()["sessions"]
        if all(s["sessionId"] != SID for s in sessions):
            break
        time.sleep(0.1)
    time.sleep(0.3)
    # ... and ended on both: the owner's DELETE is allowed but no worker marks it any more (a
    # worker that still held the binding would), and the id is still nobody else's
    for _ in range(12):
        again = fresh_check(gp, delete)
        assert again.status.code == 0
        assert [h for h in again.ok_response.headers if h.header.key == LEARN_HEADER] == []
    assert set(intruders(gp, 12, "late")) == {"session_hijack"}
    time.sleep(1.5)                                 # workers report decisions once a second
    decisions = httpx.get(f"http://127.0.0.1:{ap}/v1/decisions?limit=1000", timeout=5).json()["decisions"]
    def workers(tag: str, decision: str) -> set[int]:
        return {d.get("worker") for d in decisions
                if (d.get("caller") or {}).get("sub", "").startswith(tag) and d["decision"] == decision}
    assert workers("early-", "deny") == {0, 1}, "both workers must have denied some of the early callers"
    assert workers("late-", "deny") == {0, 1}, "both workers must have denied some of the late callers"
    owner_deletes = [d for d in decisions if d["method"] == "DELETE" and d["decision"] == "allow"]
    assert {d.get("worker") for d in owner_deletes[-12:]} == {0, 1}, "both workers must have seen the DELETE"
