"""An approval made on one replica holds on the other, and after that replica restarts: two
replicas on one real `redis-server` behind one real Envoy (round robin), the real SDK demo CRM
server and SDK client. The server changes a tool (a rug pull); the drift is learned over ext_proc on
whichever replica streamed the list, and held on both; an operator approves it on replica A's
admin port; replica B, which never saw the approval request, allows it, and so does B restarted
(it loads the approval, with its digest, before it reports ready)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from extauthz.demo.agent import attempt, connect
from extauthz.demo.stack import Stack, free_port, wait_for_http
from extauthz.demo.tokens import TokenIssuer
from extauthz.shared.testing import RedisProcess

from .test_drift import POISON
from .test_shared_redis import _check

pytestmark = pytest.mark.e2e
ADMIN_TOKEN = "shared-approval-admin"
LOOKUP = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
          "params": {"name": "lookup_customer", "arguments": {"customer_id": "c-100"}}}
GHOST = {**LOOKUP, "params": {"name": "no_such_tool", "arguments": {}}}


class Replica:
    """Replica B: its own `extauthz serve` process on fixed ports, so it can be restarted."""

    def __init__(self, policy: Path, shared: list[str]) -> None:
        self.grpc, self.admin_port = free_port(), free_port()
        self.argv = [sys.executable, "-m", "extauthz.cli", "serve", "--policy", str(policy),
                     "--grpc-port", str(self.grpc), "--admin-port", str(self.admin_port), "--host", "127.0.0.1",
                     "--drain-seconds", "1", *shared]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for_http(self.admin + "/readyz", timeout=60), "replica B never became ready"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("shared-approval")
    policy = d / "policy.yaml"          # the demo policy (onDrift: quarantine), with write access for approve
    policy.write_text(resources.files("extauthz.policy").joinpath("default.yaml").read_text()
                      + f"\nadmin: {{token: {ADMIN_TOKEN}}}\n")
    desc = d / "description.txt"        # absent: the server publishes its own description
    redis = RedisProcess().start()
    shared = ["--redis", redis.url, "--redis-prefix", "approval"]
    b = Replica(policy, shared)
    b.start()
    stack = Stack(str(policy), tokens=TokenIssuer(), service_args=shared,
                  upstream_args=["--description-file", str(desc)], envoy_options={"more_authz_ports": (b.grpc,)})
    stack.start()
    try:
        yield {"stack": stack, "desc": desc, "b": b, "a_grpc": stack.authz_port, "a_admin": stack.service_admin_url}
    finally:
        stack.stop()
        b.stop()
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
