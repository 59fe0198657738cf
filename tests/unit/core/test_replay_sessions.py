"""`extauthz replay` shows sessions and alerts for recorded traffic (issue 7, item 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson

from .conftest import TEMPLATES, TOOLS, call

HERE = Path(__file__).parent


def _policy(tmp_path: Path) -> Path:
    text = (HERE / "policy.yaml").read_text().replace(
        '      - {uri: "crm://customers/*", allow: {groups: [support, admin]}}',
        '      - {uri: "crm://customers/*", allow: {groups: [support, admin]}, sensitive: true}')
    assert "sensitive: true" in text
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    return p


def _req(body, sid: str, sub: str = "mallory") -> dict:
    claims = {"iss": "https://issuer", "sub": sub, "groups": ["support"], "customer_ids": ["c-100"]}
    return {"authority": "crm.example.com", "path": "/mcp", "claims": claims, "body": body,
            "headers": {"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}}


def test_replay_shows_sessions_and_the_alert_of_a_three_session_attack(tmp_path):
    lines: list[dict] = [{"spec": {"server": "crm", "tools": TOOLS, "resourceTemplates": TEMPLATES}}]
    lines.append(_req({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, "s-1"))
    lines += [_req(call(n, {}), "s-1") for n in ("drop_db", "shell", "debug")]
    bad = [{"customer_id": 7}, {"customer_id": ["c-100"]}, {}, {"customer_id": "c-100", "notes": True}]
    lines += [_req(call("lookup_customer", args), "s-2") for args in bad]
    lines += [_req({"jsonrpc": "2.0", "id": 9, "method": "resources/read",
                    "params": {"uri": "crm://customers/c-100"}}, "s-3") for _ in range(3)]
    lines.append(_req({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, "s-9", sub="benign"))
    traffic = tmp_path / "t.jsonl"
    traffic.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    r = subprocess.run([sys.executable, "-m", "extauthz.cli", "replay", "--policy", str(_policy(tmp_path)),
                        "--traffic", str(traffic)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = [orjson.loads(x) for x in r.stdout.splitlines()]
    decisions, summary = out[:-1], out[-1]["summary"]
    assert [d["reason"] for d in decisions[1:4]] == ["unknown_capability"] * 3
    assert [d["reason"] for d in decisions[4:8]] == ["schema_violation"] * 4
    # 3 x 6 + 4 x 8 = 50, the chain adds 40: still under 100, so every read is allowed
    assert [d["reason"] for d in decisions[8:11]] == ["allowed"] * 3
    with_alert = [d for d in decisions if "alert" in d]
    assert len(with_alert) == 1 and with_alert[0]["line"] == 10
    # bound sessions: only allowed requests bind one (a denied request must not claim an id), but
    # the caller's timeline knows every session it used
    assert {s["sessionId"] for s in summary["sessions"]} == {"s-1", "s-3", "s-9"}
    owners = {s["sessionId"]: s["caller"].split("|")[1] for s in summary["sessions"]}
    assert owners["s-9"] == "benign" and owners["s-3"] == "mallory"
    (alert,) = summary["alerts"]
    assert alert["sessions"] == ["s-1", "s-2", "s-3"]
    assert alert["stages"]["extract"][0]["decisionId"] == with_alert[0]["decision_id"]
    mallory = next(c for c in summary["callers"] if c["caller"].endswith("|mallory|"))
    assert mallory["score"] >= 89 and not mallory["blocked"] and mallory["chain"] == []
    assert mallory["sessions"] == ["s-1", "s-2", "s-3"]
    benign = next(c for c in summary["callers"] if "|benign|" in c["caller"])
    assert benign["score"] == 0 and benign["alerts"] == []
