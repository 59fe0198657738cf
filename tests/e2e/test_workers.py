"""`serve --workers 2`: what one worker learns, every worker decides with; sessions bound on one
worker are enforced on all; the supervisor's admin port shows the whole service; a dead worker is
replaced and caught up."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc

from extauthz.demo.stack import free_port, wait_for_http

from ..unit.core.conftest import SUPPORT, TOOLS, call
from ..unit.envoy.test_check_transport import check_request
from ..unit.learn.test_learn_process import body, req_headers, resp_headers

pytestmark = pytest.mark.e2e
POLICY = Path(__file__).parent.parent / "unit" / "core" / "policy.yaml"
CALL = orjson.dumps(call("lookup_customer", {"customer_id": "c-100"}))


@contextmanager
def serve_workers(policy: Path, *, stderr: int | None = subprocess.DEVNULL
                  ) -> Iterator[tuple[int, int, subprocess.Popen[bytes]]]:
    """`extauthz serve --workers 2` on free ports, ready: (gRPC port, admin port, supervisor)."""
    gp, ap = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "extauthz.cli", "serve", "--policy", str(policy), "--workers", "2",
                             "--grpc-port", str(gp), "--admin-port", str(ap), "--host", "127.0.0.1",
                             "--drain-seconds", "2"], stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        assert wait_for_http(f"http://127.0.0.1:{ap}/readyz", timeout=40), "supervisor never became ready"
        yield gp, ap, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def service():
    with serve_workers(POLICY, stderr=subprocess.PIPE) as s:
        yield s


def fresh_check(port: int, req: external_auth_pb2.CheckRequest) -> external_auth_pb2.CheckResponse:
    """One Check on a brand-new TCP connection: SO_REUSEPORT spreads these across workers."""
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        return external_auth_pb2_grpc.AuthorizationStub(ch).Check(req, timeout=5)


def learn_tools(port: int, tools: list[dict[str, Any]] = TOOLS) -> None:
    listing = orjson.dumps({"jsonrpc": "2.0", "id": 2, "result": {"tools": tools}})
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = external_processor_pb2_grpc.ExternalProcessorStub(ch)
        msgs = [req_headers([(2, "tools/list", True)]), resp_headers(ctype="application/json"), body(listing, True)]
        assert len(list(stub.Process(iter(msgs), timeout=5))) == 3


def workers_that_allowed(admin: int) -> set[int]:
    decisions = httpx.get(f"http://127.0.0.1:{admin}/v1/decisions?limit=1000").json()["decisions"]
    return {d.get("worker") for d in decisions if d["decision"] == "allow" and d["method"] == "tools/call"}


def test_learning_on_one_worker_reaches_every_worker(service):
    gp, ap, _ = service
    before = [fresh_check(gp, check_request(CALL)) for _ in range(10)]
    assert all(r.status.code == 7 for r in before)     # nothing learned yet: unknown_capability
    learn_tools(gp)
    time.sleep(0.3)
    after = [fresh_check(gp, check_request(CALL)) for _ in range(30)]
    assert [r.status.code for r in after] == [0] * 30
    time.sleep(1.5)                                     # workers report once a second
    assert workers_that_allowed(ap) == {0, 1}, "both workers must have allowed some of the calls"


def test_session_bound_on_one_worker_is_enforced_on_all(service):
    gp, ap, _ = service
    learn_tools(gp)
    sid = {"mcp-session-id": "bound-on-one-worker"}
    assert fresh_check(gp, check_request(CALL, headers=sid)).status.code == 0
    time.sleep(0.3)
    # 20 different intruders, one attempt each (one caller repeating it would soon be risk_blocked)
    answers = [fresh_check(gp, check_request(CALL, claims=dict(SUPPORT, sub=f"bob-{i}"), headers=sid))
               for i in range(20)]
    reasons = {dict((h.header.key, h.header.value) for h in r.denied_response.headers)["x-mcp-extauthz-reason"]
               for r in answers}
    assert reasons == {"session_hijack"}


def test_supervisor_metrics_and_inventory_cover_all_workers(service):
    gp, ap, _ = service
    learn_tools(gp)
    n = 40
    for _ in range(n):
        fresh_check(gp, check_request(CALL))
    time.sleep(1.5)
    text = httpx.get(f"http://127.0.0.1:{ap}/metrics").text
    count = next(float(x.split()[-1]) for x in text.splitlines() if x.startswith("mcp_extauthz_check_duration_seconds_count"))
    assert count >= n
    inv = httpx.get(f"http://127.0.0.1:{ap}/v1/inventory").json()
    assert {t["name"] for t in inv["servers"][0]["tools"]} == {t["name"] for t in TOOLS}


def test_a_dead_worker_is_replaced_and_caught_up(service):
    gp, ap, proc = service
    learn_tools(gp)
    # a caller that probes 17 names that do not exist (17 x 6 >= 100) is blocked on every worker
    eve = dict(SUPPORT, sub="eve")
    for i in range(17):
        fresh_check(gp, check_request(orjson.dumps(call(f"ghost_{i}", {})), claims=eve))
    time.sleep(1.2)
    pids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(pids) == 2
    subprocess.run(["kill", "-9", pids[0]])
    deadline = time.time() + 20
    while time.time() < deadline:
        now = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        if len(now) == 2 and pids[0] not in now and httpx.get(f"http://127.0.0.1:{ap}/readyz").status_code == 200:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the killed worker was not replaced")
    # Every Check, whichever worker (old or new) answers it, knows the learned tools.
    assert [fresh_check(gp, check_request(CALL)).status.code for _ in range(30)] == [0] * 30
    # ... and the risk scores: the new worker was caught up too, so no Check of eve gets through.
    reasons = {dict((h.header.key, h.header.value) for h in fresh_check(gp, check_request(CALL, claims=eve))
                    .denied_response.headers).get("x-mcp-extauthz-reason") for _ in range(30)}
    assert reasons == {"risk_blocked"}
