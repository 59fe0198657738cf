"""Pinned spec snapshots, the mTLS identity source, and the CLI's answers to bad policies."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import orjson

from extauthz.app import App
from extauthz.core.reasons import Reason

from .conftest import TOOLS, call, http

HERE = Path(__file__).parent


def _policy_with(tmp: Path, extra_server: str = "", sources: str | None = None) -> Path:
    text = (HERE / "policy.yaml").read_text()
    if extra_server:
        text = text.replace("    match: {authority: crm.example.com, pathPrefix: /mcp}\n",
                            "    match: {authority: crm.example.com, pathPrefix: /mcp}\n" + extra_server)
    if sources is not None:
        start = text.index("identity:")
        end = text.index("servers:")
        text = text[:start] + sources + text[end:]
    p = tmp / "policy.yaml"
    p.write_text(text)
    return p


def test_pinned_spec_is_enforced_without_any_learning(tmp_path):
    (tmp_path / "crm-spec.json").write_text(json.dumps({"tools": TOOLS[:1]}))
    app = App(str(_policy_with(tmp_path, "    specFile: crm-spec.json\n")), decision_out=io.BytesIO())
    assert app.check(http(call("lookup_customer", {"customer_id": "c-100"}))).allowed
    assert app.check(http(call("search_customers", {"query": "a"}))).reason is Reason.UNKNOWN_CAPABILITY
    # A learned list that changes the pinned tool does not replace the pin.
    changed = [dict(TOOLS[0], inputSchema={"type": "object", "properties": {"customer_id": {}, "x": {}}})]
    app.specs.apply_page("crm", "tools", changed, first=True, last=True)
    d = app.check(http(call("lookup_customer", {"customer_id": "c-100", "x": 1})))
    assert d.reason is Reason.SCHEMA_VIOLATION


def test_mtls_principal_is_a_caller(tmp_path):
    sources = "identity:\n  sources:\n    - mtls: {}\n"
    app = App(str(_policy_with(tmp_path, sources=sources)), decision_out=io.BytesIO())
    req = http({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, claims=None)
    assert app.check(req).reason is Reason.UNAUTHENTICATED
    req.peer_principal = "spiffe://cluster.local/ns/agents/sa/bot"
    d = app.check(req)
    assert d.allowed and d.caller is not None and d.caller.subject == "spiffe://cluster.local/ns/agents/sa/bot"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "extauthz.cli", *args], capture_output=True, text=True, timeout=60)


def test_check_policy_reports_each_error_with_its_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: mcp-extauthz/v1\nkind: Policy\nmode: enforce\nservers:\n"
                   "  - name: crm\n    match: {authority: crm.example.com}\n    tools:\n"
                   "      - name: x\n        allow: {groups: nope}\n")
    r = _cli("check-policy", str(bad))
    assert r.returncode == 1
    assert "bad.yaml:9" in r.stdout + r.stderr
    ok = _cli("check-policy", str(HERE / "policy.yaml"))
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_serve_refuses_a_bad_policy_with_its_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Nope\n")
    r = _cli("serve", "--policy", str(bad), "--grpc-port", "0", "--admin-port", "0")
    assert r.returncode == 1
    assert "bad.yaml" in r.stderr and "refused" in r.stderr


def test_replay_decides_recorded_traffic(tmp_path):
    traffic = tmp_path / "t.jsonl"
    claims = {"sub": "alice", "groups": ["support"], "customer_ids": ["c-100"]}
    lines = [
        {"spec": {"server": "crm", "tools": TOOLS}},
        {"authority": "crm.example.com", "path": "/mcp", "claims": claims,
         "body": call("lookup_customer", {"customer_id": "c-100"})},
        {"authority": "crm.example.com", "path": "/mcp", "claims": claims,
         "body": call("export_customers", {})},
        {"authority": "crm.example.com", "path": "/mcp", "claims": claims, "bodyText": "{nope"},
    ]
    traffic.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    r = _cli("replay", "--policy", str(HERE / "policy.yaml"), "--traffic", str(traffic))
    assert r.returncode == 0, r.stderr
    out = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert [(o.get("decision"), o.get("reason")) for o in out[:3]] == [
        ("allow", "allowed"), ("deny", "not_allowed"), ("deny", "malformed_request")]
    assert "error" in out[3]
