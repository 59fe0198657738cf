"""An approval made on one replica holds on the other, and after that replica restarts: two
replicas on one real `redis-server` behind one real Envoy (round robin), the real SDK demo CRM
server and SDK client. The server changes a tool (a rug pull); the drift is learned over ext_proc on
whichever replica streamed the list, and held on both; an operator approves it on replica A's
admin port; replica B, which never saw the approval request, allows it, and so does B restarted
(it loads the approval, with its digest, before it reports ready)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from extauthz.demo.agent import attempt, connect
from extauthz.shared.testing import RedisProcess

from .replicas import behind_envoy, demo_policy, shared_args
from .test_drift import POISON
from .test_shared_redis import _check

pytestmark = pytest.mark.e2e
ADMIN_TOKEN = "shared-approval-admin"
LOOKUP = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
          "params": {"name": "lookup_customer", "arguments": {"customer_id": "c-100"}}}
GHOST = {**LOOKUP, "params": {"name": "no_such_tool", "arguments": {}}}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("shared-approval")
    # the demo policy (onDrift: quarantine), with write access for approve
    policy = demo_policy(d, f"\nadmin: {{token: {ADMIN_TOKEN}}}\n")
    desc = d / "description.txt"        # absent: the server publishes its own description
    redis = RedisProcess().start()
    try:
        # replica B: one process (no --workers), which the test restarts
        with behind_envoy(policy, shared_args(redis, "approval"),
                          upstream_args=["--description-file", str(desc)]) as pair:
            yield {"stack": pair.stack, "desc": desc, "b": pair.b, "a_grpc": pair.a_grpc, "a_admin": pair.a_admin}
    finally:
        redis.close()


def until(port: int, want: str, tag: str, timeout: float = 15.0) -> None:
    """Ask one replica directly until the feed has brought it `want` (eventually consistent)."""
    deadline, n, got = time.monotonic() + timeout, 0, ""
    while time.monotonic() < deadline:
        got = _check(port, "sam", f"{tag}-{n}", LOOKUP)
        if got == want:
            return
        n += 1
        time.sleep(0.1)
    raise AssertionError(f"replica on {port}: {got!r}, not {want!r}, within {timeout}s")


def test_an_approval_on_one_replica_holds_on_the_other_and_after_it_restarts(replicas):
    stack, b = replicas["stack"], replicas["b"]
    ports = (replicas["a_grpc"], b.grpc)
    token = stack.tokens.mint("alice", groups=["support"], customer_ids=["c-100"])
    seen: dict[str, Any] = {}

    async def learn_drift() -> None:
        async with connect(stack.url, token) as c:
            await c.list_tools()
            for port in ports:                          # the spec reaches the other replica over the feed
                await asyncio.to_thread(until, port, "allowed", f"learned-{port}")
            seen["before"] = await attempt(lambda: c.call_tool("lookup_customer", {"customer_id": "c-100"}))
            replicas["desc"].write_text(POISON)        # the server changes the published tool
            await c.list_tools()                        # ... and the client lists again: drift is learned
    asyncio.run(learn_drift())
    assert seen["before"][:2] == ("allowed", "")
    for port in ports:                                  # held on both, wherever it was learned
        until(port, "quarantined", f"held-{port}")

    r = httpx.post(replicas["a_admin"] + "/v1/approve", headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                   json={"server": "crm", "kind": "tools", "name": "lookup_customer"}, timeout=10)
    assert r.status_code == 200 and r.json() == {"approved": True}, r.text
    until(b.grpc, "allowed", "approved-b")              # the approval reached B over the feed
    for port in ports:
        assert [_check(port, "sam", f"ok-{port}-{n}", LOOKUP) for n in range(4)] == ["allowed"] * 4
    # B's own admin port knows the tool as approved: nothing is held there any more
    assert httpx.get(b.admin + "/v1/inventory", timeout=10).json()["quarantined"] == []

    b.stop()
    b.start()                                           # ready only once it loaded the shared state
    assert [_check(b.grpc, "sam", f"restarted-{n}", LOOKUP) for n in range(4)] == ["allowed"] * 4
    assert _check(b.grpc, "sam", "restarted-ghost", GHOST) == "unknown_capability"   # it holds the spec

    async def after() -> list[tuple[Any, ...]]:         # and through Envoy, whichever replica decides
        async with connect(stack.url, token) as c:
            return [await attempt(lambda: c.call_tool("lookup_customer", {"customer_id": "c-100"}))
                    for _ in range(6)]
    assert [a[:2] for a in asyncio.run(after())] == [("allowed", "")] * 6
