"""Two replicas behind one real Envoy that round-robins every Check and ext_proc stream between
them (replica A: one process; replica B: `--workers 2`), one real `redis-server`, the real SDK demo
CRM server and SDK client: they enforce as one. Redis killed under traffic and restarted (empty):
no crash, no gRPC error to Envoy, new sessions follow `sessions.sharedStateDown: deny`, state
converges."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import orjson
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc

from extauthz.demo.agent import connect
from extauthz.shared.testing import RedisProcess

from ..unit.envoy.test_check_transport import check_request
from .replicas import behind_envoy, demo_policy, shared_args
from .test_session_end import LOOKUP, headers, open_session

pytestmark = pytest.mark.e2e
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    r = RedisProcess().start()
    yield r
    r.close()


@pytest.fixture(scope="module")
def replicas(redis: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    policy = demo_policy(tmp_path_factory.mktemp("shared"))
    with behind_envoy(policy, shared_args(redis, "e2e"), "--workers", "2") as pair:
        yield {"stack": pair.stack, "a_grpc": pair.a_grpc, "a_admin": pair.a_admin,
               "b_grpc": pair.b.grpc, "b_admin": pair.b.admin}


def decisions(admin: str) -> list[dict[str, Any]]:
    return httpx.get(admin + "/v1/decisions?limit=1000", timeout=10).json()["decisions"]


def test_a_spec_learned_through_one_replica_decides_calls_on_the_other(replicas):
    stack = replicas["stack"]
    token = stack.tokens.mint("sally", groups=["support"], customer_ids=["c-100"])
    lookup = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
              "params": {"name": "lookup_customer", "arguments": {"customer_id": "c-100"}}}
    ghost = {**lookup, "params": {"name": "no_such_tool", "arguments": {}}}

    def learned_by(port: int) -> None:
        """Ask one replica directly until the feed has brought it the spec (eventually consistent:
        which replica Envoy picks for a Check depends on how many ext_proc streams its round robin
        opened in between, so the test chooses the replica, not the load balancer)."""
        deadline, n = time.monotonic() + 15, 0
        while (got := _check(port, "sally-direct", f"spec-{port}-{n}", lookup)) != "allowed":
            assert time.monotonic() < deadline, f"replica on {port} never learned the spec: {got}"
            n += 1
            time.sleep(0.1)

    async def run() -> list[bool]:
        async with connect(stack.url, token) as c:
            await c.list_tools()            # learned on whichever replica streamed it
            for port in (replicas["a_grpc"], replicas["b_grpc"]):
                await asyncio.to_thread(learned_by, port)
            out = []
            for _ in range(24):             # through Envoy, whichever replica decides
                res = await c.call_tool("lookup_customer", {"customer_id": "c-100"})
                out.append(not res.is_error)
            return out
    assert all(asyncio.run(run()))
    for port in (replicas["a_grpc"], replicas["b_grpc"]):      # each replica decides from the spec
        assert [_check(port, "sally-direct", f"spec-{port}-ok", lookup) for _ in range(5)] == ["allowed"] * 5
        assert _check(port, "sally-direct", f"spec-{port}-ok", ghost) == "unknown_capability"


def test_a_stolen_session_id_is_hijack_on_both_replicas_and_the_owner_keeps_working(replicas):
    stack = replicas["stack"]
    alice = stack.tokens.mint("alice-shared", groups=["support"], customer_ids=["c-100"])
    with httpx.Client(timeout=30) as http:
        sid = open_session(http, stack, alice)
        seen: set[str] = set()
        for n in range(8):                  # one attempt each, so none is risk-blocked first
            thief = stack.tokens.mint(f"mallory-{n}", groups=["support"], customer_ids=["c-100"])
            r = http.post(stack.url, headers=headers(thief, sid), json=LOOKUP)
            assert r.headers.get("x-mcp-extauthz-reason") == "session_hijack", r.text
        for _ in range(6):
            r = http.post(stack.url, headers=headers(alice, sid), json=LOOKUP)
            assert r.status_code == 200 and "x-mcp-extauthz-reason" not in r.headers, r.text
    time.sleep(1.5)
    for admin in (replicas["a_admin"], replicas["b_admin"]):
        hij = [d for d in decisions(admin) if d["reason"] == "session_hijack" and d["mcp_session_id"] == sid]
        seen |= {admin} if hij else set()
    assert seen == {replicas["a_admin"], replicas["b_admin"]}, "both replicas must have refused the thief"


def _check(port: int, sub: str, sid: str, msg: dict[str, Any] | None = None) -> str:
    body = orjson.dumps(msg or {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    claims = {"iss": "https://issuer.example", "sub": sub, "groups": ["support"], "customer_ids": ["c-100"]}
    req = check_request(body, headers={"mcp-session-id": sid}, claims=claims, host=HOST)
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        resp = external_auth_pb2_grpc.AuthorizationStub(ch).Check(req, timeout=10)
    return "allowed" if resp.status.code == 0 else next(
        (h.header.value for h in resp.denied_response.headers if h.header.key == "x-mcp-extauthz-reason"), "?")


def test_two_callers_racing_for_a_new_session_id_on_two_replicas_get_one_owner(replicas):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for n in range(12):
            sid = f"race-{n}-{time.monotonic_ns()}"
            fa = pool.submit(_check, replicas["a_grpc"], f"racer-a-{n}", sid)
            fb = pool.submit(_check, replicas["b_grpc"], f"racer-b-{n}", sid)
            got = sorted([fa.result(), fb.result()])
            assert got == ["allowed", "session_hijack"], (n, got)


def test_redis_killed_under_traffic_then_restarted_empty(replicas, redis):
    stack = replicas["stack"]
    owner = stack.tokens.mint("steady", groups=["support"], customer_ids=["c-100"])
    newcomer = stack.tokens.mint("newcomer", groups=["support"], customer_ids=["c-100"])
    with httpx.Client(timeout=30) as http:
        sid = open_session(http, stack, owner)
        for _ in range(4):                  # both replicas have now seen (claimed or learned) it
            assert "x-mcp-extauthz-reason" not in http.post(stack.url, headers=headers(owner, sid), json=LOOKUP).headers
        redis.stop()
        statuses = []
        for _ in range(20):                 # known session: decided from local state, on both replicas
            r = http.post(stack.url, headers=headers(owner, sid), json=LOOKUP)
            statuses.append((r.status_code, r.headers.get("x-mcp-extauthz-reason")))
        assert statuses == [(200, None)] * 20, statuses
        # a session the replicas never saw: its owner cannot be confirmed (sharedStateDown: deny)
        r = http.post(stack.url, headers=headers(newcomer, f"never-seen-{time.monotonic_ns()}"), json=LOOKUP)
        assert r.headers.get("x-mcp-extauthz-reason") == "not_allowed" and "shared state" in r.text, r.text
        health = httpx.get(replicas["a_admin"] + "/healthz", timeout=10).json()
        assert health["status"] == "degraded"
        assert httpx.get(replicas["a_admin"] + "/readyz", timeout=10).status_code == 200
        redis.start()                       # back, and empty
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if httpx.get(replicas["a_admin"] + "/healthz", timeout=10).json()["status"] == "ok":
                break
            time.sleep(0.2)
        else:
            raise AssertionError("replica A never reconnected")
        time.sleep(1.0)
        # the replicas republished what they held: the owner is the owner in Redis again
        thief = stack.tokens.mint("after-restart-thief", groups=["support"], customer_ids=["c-100"])
        for _ in range(4):
            r = http.post(stack.url, headers=headers(thief, sid), json=LOOKUP)
            assert r.headers.get("x-mcp-extauthz-reason") == "session_hijack", r.text
        new_sid = open_session(http, stack, newcomer)      # new sessions work again
        assert "x-mcp-extauthz-reason" not in http.post(stack.url, headers=headers(newcomer, new_sid),
                                                         json=LOOKUP).headers
    metrics = httpx.get(replicas["a_admin"] + "/metrics", timeout=10).text
    assert "mcp_extauthz_shared_state_connected 1.0" in metrics
    denied_here = [d for d in decisions(replicas["a_admin"]) if d.get("rule") == "sessions.sharedStateDown"]
    counted = sum(float(x.split()[-1]) for x in metrics.splitlines()
                  if x.startswith("mcp_extauthz_shared_claims_denied_total"))
    assert counted == len(denied_here)


def test_redis_killed_under_traffic_then_restarted_with_its_data(replicas, redis):
    """Restarted with its data, the feed is resumed by id and what was written meanwhile is
    replayed (only rate reports are dropped and counted, not other writes: docs/shared-state.md)."""
    import redis as redis_client

    stack = replicas["stack"]
    owner = stack.tokens.mint("keeper", groups=["support"], customer_ids=["c-100"])
    admin = redis_client.Redis(port=redis.port)
    with httpx.Client(timeout=30) as http:
        sid = open_session(http, stack, owner)
        for _ in range(4):
            assert "x-mcp-extauthz-reason" not in http.post(stack.url, headers=headers(owner, sid), json=LOOKUP).headers
        time.sleep(0.5)                     # written behind: in Redis before it stops
        redis.stop(keep_data=True)
        for _ in range(10):                 # known session: decided from local state
            r = http.post(stack.url, headers=headers(owner, sid), json=LOOKUP)
            assert (r.status_code, r.headers.get("x-mcp-extauthz-reason")) == (200, None), r.text
        # resources listed (first time) while Redis is away: what the session was shown is queued
        r = http.post(stack.url, headers=headers(owner, sid),
                      json={"jsonrpc": "2.0", "id": 9, "method": "resources/list"})
        assert r.status_code == 200 and '"resources"' in r.text, r.text
        time.sleep(0.5)
        redis.start()                       # back, with its data
        deadline = time.monotonic() + 30
        while httpx.get(replicas["a_admin"] + "/healthz", timeout=10).json()["status"] != "ok":
            assert time.monotonic() < deadline, "replica A never reconnected"
            time.sleep(0.2)
        def replayed() -> bool:
            return any(admin.hexists(k, "resources") for k in admin.scan_iter(match=f"e2e:vis:*|s:{sid}"))
        deadline = time.monotonic() + 15    # the replay lands: the resources view, made only while away
        while not replayed():
            assert time.monotonic() < deadline, "what was listed while Redis was away was not replayed"
            time.sleep(0.2)
        thief = stack.tokens.mint("with-data-thief", groups=["support"], customer_ids=["c-100"])
        for _ in range(4):
            r = http.post(stack.url, headers=headers(thief, sid), json=LOOKUP)
            assert r.headers.get("x-mcp-extauthz-reason") == "session_hijack", r.text
        new_sid = open_session(http, stack, owner)
        assert "x-mcp-extauthz-reason" not in http.post(stack.url, headers=headers(owner, new_sid),
                                                         json=LOOKUP).headers
    admin.close()
    deadline = time.monotonic() + 15        # everything queued is written (new writes come and go)
    while (shared := httpx.get(replicas["a_admin"] + "/healthz", timeout=10).json()["sharedState"])["queued"]:
        assert time.monotonic() < deadline, shared
        time.sleep(0.1)
    assert shared["connected"], shared
