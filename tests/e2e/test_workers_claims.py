"""`serve --workers 2` without Redis: the supervisor is the claim authority for session ids
(extauthz.workers.claims). Issue 17's problems 1 (idle takeover) and 2 (first-claim race), each
driven through real gRPC connections pinned to one worker each (SO_REUSEPORT spreads connections;
the decision log's `worker` field says which worker a connection reached)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc

from ..unit.core.conftest import SUPPORT, TOOLS, call
from ..unit.envoy.test_check_transport import check_request
from ..unit.learn.test_learn_process import body, req_headers, resp_headers
from .test_workers import CALL, learn_tools, serve_workers

pytestmark = pytest.mark.e2e
POLICY = Path(__file__).parent.parent / "unit" / "core" / "policy.yaml"
TTL = 3      # sessions.idleTtlSeconds: short, so that a worker's copy idles out within the test


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, subprocess.Popen[bytes]]]:
    text = POLICY.read_text().replace("sessions: {bindToCaller: true}", f"sessions: {{bindToCaller: true, idleTtlSeconds: {TTL}}}")
    assert f"idleTtlSeconds: {TTL}" in text
    policy = tmp_path_factory.mktemp("claims") / "policy.yaml"
    policy.write_text(text)
    with serve_workers(policy) as (gp, ap, proc):
        learn_tools(gp)
        time.sleep(0.5)
        yield gp, ap, proc


class Pinned:
    """One gRPC connection, so every Check on it reaches the same worker."""

    def __init__(self, port: int) -> None:
        self.ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        self.stub = external_auth_pb2_grpc.AuthorizationStub(self.ch)

    def check(self, claims: dict[str, Any], sid: str) -> external_auth_pb2.CheckResponse:
        return self.stub.Check(check_request(CALL, claims=claims, headers={"mcp-session-id": sid}), timeout=10)


def reason(r: external_auth_pb2.CheckResponse) -> str:
    if r.status.code == 0:
        return "allow"
    return dict((h.header.key, h.header.value) for h in r.denied_response.headers).get("x-mcp-extauthz-reason", "?")


def one_per_worker(gp: int, ap: int) -> tuple[Pinned, Pinned]:
    """Two connections that reached different workers."""
    conns = [Pinned(gp) for _ in range(8)]
    for i, c in enumerate(conns):
        c.stub.Check(check_request(CALL, claims=dict(SUPPORT, sub=f"probe-{ap}-{i}")), timeout=10)
    deadline = time.time() + 15
    where: dict[str, int] = {}
    while time.time() < deadline and len(where) < len(conns):
        time.sleep(0.5)                 # workers report their decisions once a second
        for d in httpx.get(f"http://127.0.0.1:{ap}/v1/decisions?limit=1000").json()["decisions"]:
            sub = (d.get("caller") or {}).get("sub", "")
            if sub.startswith(f"probe-{ap}-"):
                where[sub] = d["worker"]
    by_worker: dict[int, Pinned] = {}
    for i, c in enumerate(conns):
        w = where.get(f"probe-{ap}-{i}")
        if w is not None:
            by_worker.setdefault(w, c)
    assert set(by_worker) == {0, 1}, f"8 connections did not reach both workers: {where}"
    return by_worker[0], by_worker[1]


def test_a_session_idle_on_one_worker_is_not_free_there(service):
    """Problem 1: alice uses S only on worker A; B's copy idles out; mallory presenting S on B is
    session_hijack (the supervisor kept its copy alive from A's reports), and alice keeps working."""
    gp, ap, _ = service
    a, b = one_per_worker(gp, ap)
    alice = dict(SUPPORT, sub="alice-idle")
    sid = "idle-takeover-1"
    assert reason(a.check(alice, sid)) == "allow"
    # alice keeps S busy on A for well past the TTL; B heard of the binding once, at its start
    end = time.time() + TTL + 2.5
    while time.time() < end:
        assert reason(a.check(alice, sid)) == "allow"
        time.sleep(0.4)
    tries = [reason(b.check(dict(SUPPORT, sub=f"mallory-{i}"), sid)) for i in range(5)]
    assert tries == ["session_hijack"] * 5
    time.sleep(0.3)
    assert reason(a.check(alice, sid)) == "allow"
    assert reason(b.check(alice, sid)) == "allow"         # B now knows alice owns it


def test_two_callers_racing_for_one_new_session_get_one_owner(service):
    """Problem 2: alice on A and mallory on B send the first request of the same new id at once:
    exactly one of them is allowed, and both workers agree on the owner afterwards."""
    gp, ap, _ = service
    a, b = one_per_worker(gp, ap)
    with ThreadPoolExecutor(2) as pool:
        for n in range(12):
            sid = f"race-{n}"
            alice, mallory = dict(SUPPORT, sub=f"alice-race-{n}"), dict(SUPPORT, sub=f"mallory-race-{n}")
            fa = pool.submit(a.check, alice, sid)
            fb = pool.submit(b.check, mallory, sid)
            got = (reason(fa.result()), reason(fb.result()))
            assert sorted(got) == ["allow", "session_hijack"], (sid, got)
            winner = alice if got[0] == "allow" else mallory
            loser = mallory if winner is alice else alice
            time.sleep(0.1)
            for conn in (a, b):
                assert reason(conn.check(winner, sid)) == "allow"
                assert reason(conn.check(loser, sid)) == "session_hijack"
    metrics = httpx.get(f"http://127.0.0.1:{ap}/metrics").text.splitlines()
    assert "mcp_extauthz_shared_state_connected 1.0" in metrics       # every worker's bus is open
    assert "mcp_extauthz_shared_claims_denied_total 0.0" in metrics    # every claim was answered


def _header(r: external_auth_pb2.CheckResponse, name: str) -> str:
    return dict((h.header.key, h.header.value) for h in r.denied_response.headers).get(name, "")


def test_a_restarted_worker_knows_what_an_old_session_was_listed(service):
    """Problem 4: kill a worker; its replacement, caught up by the supervisor, still enforces
    sessions.visibilityBinding for a session listed before it started (no fallback to the
    server-wide spec). Runs last in this module: it replaces a worker."""
    gp, ap, proc = service
    sid = "vis-old"
    alice = dict(SUPPORT, sub="alice-vis")
    listing = orjson.dumps({"jsonrpc": "2.0", "id": 2, "result": {"tools": [t for t in TOOLS if t["name"] == "lookup_customer"]}})
    with grpc.insecure_channel(f"127.0.0.1:{gp}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = external_processor_pb2_grpc.ExternalProcessorStub(ch)
        msgs = [req_headers([(2, "tools/list", True)], extra={"mcp-session-id": sid, "x-mcp-caller": "alice-vis"}),
                resp_headers(ctype="application/json"), body(listing, True)]
        assert len(list(stub.Process(iter(msgs), timeout=5))) == 3
    search = orjson.dumps(call("search_customers", {"query": "a"}))

    def fresh(payload: bytes) -> external_auth_pb2.CheckResponse:
        with grpc.insecure_channel(f"127.0.0.1:{gp}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            return external_auth_pb2_grpc.AuthorizationStub(ch).Check(
                check_request(payload, claims=alice, headers={"mcp-session-id": sid}), timeout=10)
    time.sleep(0.3)
    assert reason(fresh(CALL)) == "allow"
    assert {reason(fresh(search)) for _ in range(6)} == {"unknown_capability"}
    # another session of hers, never listed anything, may call it: it is in the server-wide spec
    with grpc.insecure_channel(f"127.0.0.1:{gp}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        other = external_auth_pb2_grpc.AuthorizationStub(ch).Check(
            check_request(search, claims=alice, headers={"mcp-session-id": "vis-other"}), timeout=10)
    assert reason(other) == "allow"

    pids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(pids) == 2
    subprocess.run(["kill", "-9", pids[0]])
    deadline = time.time() + 30
    while time.time() < deadline:
        now = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        if len(now) == 2 and pids[0] not in now and httpx.get(f"http://127.0.0.1:{ap}/readyz").status_code == 200:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the killed worker was not replaced")
    answers = [fresh(search) for _ in range(24)]
    assert {reason(r) for r in answers} == {"unknown_capability"}
    # (search_customers is in the server-wide spec and support may call it: only the session's
    # own listing makes it unknown)
    ids = {_header(r, "x-mcp-decision-id") for r in answers}
    time.sleep(1.5)                     # workers report their decisions once a second
    records = [d for d in httpx.get(f"http://127.0.0.1:{ap}/v1/decisions?limit=1000").json()["decisions"]
               if d["decision_id"] in ids]
    assert len(records) == len(ids) == 24 and all("never listed" in d.get("detail", "") for d in records), orjson.dumps(records[0]).decode()
    decided = {d["worker"] for d in records}
    assert decided == {0, 1}, "both workers, the restarted one among them, must have decided some"
