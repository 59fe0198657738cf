"""`serve --workers 2`: `risk.callsPerMinute` holds over both workers within the stated bound (the
bus carries each worker's counts every 250 ms), and the supervisor's risk_blocks_total and
risk_alerts_total are the sums of the workers'."""

from __future__ import annotations

import subprocess
import time

import httpx
import orjson
import pytest

from ..unit.envoy.test_check_transport import check_request
from ..unit.risk.test_risk_app import ALICE_CLAIMS, POLICY, TOOLS
from .test_workers import fresh_check, learn_tools, serve_workers

pytestmark = pytest.mark.e2e
LIMIT = 20
ROUND = 4            # calls between two reports: the overshoot bound over 2 workers is (2 - 1) x ROUND


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    text = POLICY.read_text().replace("risk: {enabled: true, blockAt: 30, decayPerMinute: 1, volumePerMinute: 2}",
                                      f"risk: {{enabled: true, blockAt: 100, callsPerMinute: {LIMIT}}}")
    assert f"callsPerMinute: {LIMIT}" in text
    policy = tmp_path_factory.mktemp("workers-risk") / "policy.yaml"
    policy.write_text(text)
    with serve_workers(policy, stderr=subprocess.PIPE) as (gp, ap, _):
        learn_tools(gp, TOOLS)
        time.sleep(0.5)                              # the snapshot reaches the other worker
        yield gp, ap


def reason(gp: int, name: str, sub: str) -> str:
    msg = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {"q": "x"}}})
    r = fresh_check(gp, check_request(msg, claims={**ALICE_CLAIMS, "sub": sub}))
    if r.status.code == 0:
        return "allowed"
    return dict((h.header.key, h.header.value) for h in r.denied_response.headers)["x-mcp-extauthz-reason"]


def metric(ap: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{ap}/metrics").text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_calls_per_minute_holds_over_both_workers_within_the_bound(service):
    gp, ap = service
    while time.time() % 60 > 25:                     # the whole run inside one minute (counts restart)
        time.sleep(0.5)
    got: list[str] = []
    for _ in range(10):                              # 40 calls, ROUND at a time, spread by SO_REUSEPORT
        got += [reason(gp, "open_tool", "rater") for _ in range(ROUND)]
        time.sleep(1.5)                              # > one report interval and the relay: counts exchanged
    allowed = got.count("allowed")
    assert set(got) <= {"allowed", "rate_limited"}
    assert LIMIT <= allowed <= LIMIT + (2 - 1) * ROUND, got   # counted per worker: up to 2 x LIMIT
    decisions = httpx.get(f"http://127.0.0.1:{ap}/v1/decisions?limit=1000").json()["decisions"]
    workers = {d.get("worker") for d in decisions if (d.get("caller") or {}).get("sub") == "rater"}
    assert workers == {0, 1}, "both workers must have decided some of the calls"


def test_the_supervisor_sums_the_workers_risk_counters(service):
    gp, ap = service
    # eve probes names that do not exist until blocked, then keeps calling
    eve = [reason(gp, f"ghost_{i}", "eve") for i in range(17)]
    time.sleep(0.5)
    eve += [reason(gp, "open_tool", "eve") for _ in range(10)]
    assert eve[-10:] == ["risk_blocked"] * 10
    # mallory: recon and probes, then extraction: one chain, completed on one worker, relayed to the other
    for i in range(3):
        assert reason(gp, f"phantom_{i}", "mallory") == "unknown_capability"
    for i in range(6):
        assert reason(gp, f"admin_{i}", "mallory") == "not_allowed"
    time.sleep(0.5)
    assert reason(gp, "export_data", "mallory") == "allowed"
    time.sleep(0.5)
    mallory = [reason(gp, "open_tool", "mallory") for _ in range(4)]
    assert mallory == ["risk_blocked"] * 4
    blocked = eve.count("risk_blocked") + mallory.count("risk_blocked")
    deadline = time.time() + 20
    while time.time() < deadline:                    # workers report once a second
        if metric(ap, "mcp_extauthz_risk_blocks_total") == blocked and metric(ap, "mcp_extauthz_risk_alerts_total") == 1:
            break
        time.sleep(0.3)
    assert metric(ap, "mcp_extauthz_risk_blocks_total") == blocked
    assert metric(ap, "mcp_extauthz_risk_alerts_total") == 1          # once, not once per worker
