"""Hot reload through the real ConfigMap file-swap pattern while traffic flows through Envoy:
a valid edit takes effect within a second, a broken edit is refused and the last good policy stays."""

from __future__ import annotations

import os
import threading
import time
from importlib import resources
from pathlib import Path

import httpx
import orjson
import pytest

from extauthz.demo.stack import Stack
from extauthz.demo.tokens import TokenIssuer

pytestmark = pytest.mark.e2e


def _configmap_dir(root: Path, text: str) -> Path:
    """kubelet's layout: policy.yaml -> ..data/policy.yaml, ..data -> ..<timestamp>/"""
    root.mkdir(parents=True, exist_ok=True)
    _swap(root, text, "..2026_11_25_00_00_00.000000001")
    (root / "policy.yaml").symlink_to("..data/policy.yaml")
    return root


def _swap(root: Path, text: str, stamp: str) -> None:
    d = root / stamp
    d.mkdir()
    (d / "policy.yaml").write_text(text)
    tmp = root / "..data_tmp"
    tmp.symlink_to(stamp)
    os.replace(tmp, root / "..data")      # atomic rename, exactly what kubelet does


def _metric(admin: str, name: str) -> float:
    for line in httpx.get(admin + "/metrics").text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_configmap_swap_reloads_and_broken_edit_keeps_last_good(tmp_path):
    base = resources.files("extauthz.policy").joinpath("default.yaml").read_text()
    cm = _configmap_dir(tmp_path / "policy", base)
    tokens = TokenIssuer()
    with Stack(str(cm), tokens=tokens) as stack:
        tok = tokens.mint("alice", groups=["support"], customer_ids=["c-100"])
        h = {"authorization": f"Bearer {tok}", "content-type": "application/json",
             "accept": "application/json, text/event-stream"}
        with httpx.Client(timeout=10) as c:
            init = c.post(stack.url, headers=h, content=orjson.dumps(
                {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                 "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
            sid = init.headers["mcp-session-id"]
            h2 = {**h, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
            c.post(stack.url, headers=h2, content=b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
            c.post(stack.url, headers=h2, content=b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')

        call = orjson.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                             "params": {"name": "search_customers", "arguments": {"query": "a"}}})
        results: list[tuple[float, int, str]] = []
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    try:
                        r = c.post(stack.url, headers=h2, content=call)
                        results.append((time.monotonic(), r.status_code, r.headers.get("x-mcp-extauthz-reason", "")))
                    except httpx.HTTPError as e:
                        results.append((time.monotonic(), 0, type(e).__name__))

        t = threading.Thread(target=traffic)
        t.start()
        try:
            time.sleep(0.5)
            # 1. A valid edit: search_customers becomes admin-only.
            edited = base.replace("      - name: search_customers\n        allow: {groups: [support, admin]}",
                                  "      - name: search_customers\n        allow: {groups: [admin]}")
            assert edited != base
            swapped = time.monotonic()
            _swap(cm, edited, "..2026_11_25_00_01_00.000000002")
            deadline = swapped + 1.5
            while time.monotonic() < deadline and not any(r[2] == "not_allowed" and r[0] > swapped for r in results):
                time.sleep(0.02)
            first_deny = next(r[0] for r in results if r[2] == "not_allowed" and r[0] > swapped)
            assert first_deny - swapped < 1.0, first_deny - swapped
            errors_before = _metric(stack.service_admin_url, 'mcp_extauthz_policy_reloads_total{result="error"}')
            # 2. A broken edit: refused, the edited policy stays in force, still ready.
            _swap(cm, edited.replace("kind: Policy", "kind: Polcy\nnot: [valid"), "..2026_11_25_00_02_00.000000003")
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and _metric(
                    stack.service_admin_url, 'mcp_extauthz_policy_reloads_total{result="error"}') <= errors_before:
                time.sleep(0.05)
            assert _metric(stack.service_admin_url, 'mcp_extauthz_policy_reloads_total{result="error"}') == errors_before + 1
            broken_at = time.monotonic()
            time.sleep(0.5)
            assert httpx.get(stack.service_admin_url + "/readyz").status_code == 200
        finally:
            stop.set()
            t.join()
        # No request was dropped: every answer is the allow or the policy's deny, never a 5xx/reset.
        assert {code for _, code, _ in results} <= {200}, {code for _, code, _ in results}
        assert {reason for _, _, reason in results} <= {"", "not_allowed"}
        after_broken = [r for r in results if r[0] > broken_at + 0.1]
        assert after_broken and all(r[2] == "not_allowed" for r in after_broken)
        assert len(results) > 50
        log = stack.logs()["service"]
        assert "policy reload failed (keeping the last good policy)" in log
