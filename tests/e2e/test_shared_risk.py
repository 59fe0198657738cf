"""Risk over two replicas on one real `redis-server` (replica A: one process; replica B:
`--workers 2`, each worker a replica of its own): `risk.callsPerMinute` holds over all of them
within the stated bound, and a recon -> probe -> extract chain split across the replicas is
blocked on both. Checks go to each replica directly (what Envoy's round robin would send), so
which replica decides what is the test's choice, not the load balancer's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from extauthz.shared.testing import RedisProcess

from ..unit.envoy.test_check_transport import check_request
from ..unit.risk.test_risk_app import ALICE_CLAIMS, POLICY, TOOLS
from .replicas import Replica, shared_args
from .test_workers import fresh_check, learn_tools

pytestmark = pytest.mark.e2e
LIMIT = 20
ROUND = 4            # calls between two reports, over all replicas: the overshoot bound


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    text = POLICY.read_text().replace("risk: {enabled: true, blockAt: 30, decayPerMinute: 1, volumePerMinute: 2}",
                                      f"risk: {{enabled: true, blockAt: 100, callsPerMinute: {LIMIT}}}")
    assert f"callsPerMinute: {LIMIT}" in text
    policy = tmp_path_factory.mktemp("shared-risk") / "policy.yaml"
    policy.write_text(text)
    redis = RedisProcess().start()
    shared = shared_args(redis, "risk-e2e")
    a, b = Replica(policy, shared, name="A"), Replica(policy, shared, "--workers", "2")
    try:
        a.start()
        b.start()
        learn_tools(a.grpc, TOOLS)                  # learned on A only
        deadline = time.monotonic() + 15
        while reason(b.grpc, "open_tool", "warmup") != "allowed":     # ... until the feed brought it to B
            assert time.monotonic() < deadline, "B never learned the tools"
            time.sleep(0.1)
        yield {"a": a.grpc, "b": b.grpc, "a_admin": a.admin, "b_admin": b.admin}
    finally:
        a.stop()
        b.stop()
        redis.close()


def reason(port: int, name: str, sub: str) -> str:
    msg = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {"q": "x"}}})
    r = fresh_check(port, check_request(msg, claims={**ALICE_CLAIMS, "sub": sub}))
    if r.status.code == 0:
        return "allowed"
    return dict((h.header.key, h.header.value) for h in r.denied_response.headers)["x-mcp-extauthz-reason"]


def scored(admin: str, sub: str) -> int:
    """How many scored events of this caller the replica holds (its own and those relayed to it)."""
    caller = f"{ALICE_CLAIMS['iss']}|{sub}|{ALICE_CLAIMS['client_id']}"
    r = httpx.get(f"{admin}/v1/callers/{caller}/timeline", timeout=10)
    return 0 if r.status_code == 404 else sum(1 for e in r.json()["events"] if e["points"] > 0)


def test_calls_per_minute_holds_over_both_replicas_within_the_bound(replicas):
    while time.time() % 60 > 25:                     # the whole run inside one minute (counts restart)
        time.sleep(0.5)
    got: list[str] = []
    for _ in range(10):                              # 40 calls, ROUND at a time, half on each replica
        for port in (replicas["a"], replicas["b"]) * (ROUND // 2):
            got.append(reason(port, "open_tool", "rater"))
        time.sleep(1.0)                              # > one report interval and the feed: counts exchanged
    allowed = got.count("allowed")
    assert set(got) <= {"allowed", "rate_limited"}
    assert LIMIT <= allowed <= LIMIT + ROUND, got   # counted per replica: up to 3 x LIMIT
    for port in (replicas["a"], replicas["b"]):
        assert reason(port, "open_tool", "rater") == "rate_limited"
    assert reason(replicas["b"], "open_tool", "someone-else") == "allowed"


def test_a_chain_split_across_replicas_is_blocked_on_both(replicas):
    a, b = replicas["a"], replicas["b"]
    for i in range(3):                               # recon on B
        assert reason(b, f"phantom_{i}", "mallory") == "unknown_capability"
    for i in range(6):                               # probes on B
        assert reason(b, f"admin_{i}", "mallory") == "not_allowed"
    deadline = time.monotonic() + 15
    while scored(replicas["a_admin"], "mallory") < 9:  # the feed brings B's evidence to A
        assert time.monotonic() < deadline, "A never heard of B's recon and probes"
        time.sleep(0.1)
    assert reason(a, "export_data", "mallory") == "allowed"      # the extraction, on A: the chain completes
    assert [reason(a, "open_tool", "mallory") for _ in range(3)] == ["risk_blocked"] * 3
    deadline = time.monotonic() + 15
    while (got := reason(b, "open_tool", "mallory")) != "risk_blocked":   # the block reaches B over the feed
        assert got == "allowed" and time.monotonic() < deadline, got
        time.sleep(0.1)
    assert [reason(b, "open_tool", "mallory") for _ in range(4)] == ["risk_blocked"] * 4
    assert reason(b, "open_tool", "bystander") == "allowed"     # only the attacker is blocked
