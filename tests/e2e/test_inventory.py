"""End to end: the inventory after real traffic. Two users in different groups drive the real SDK
client through real Envoy to the demo CRM server; the service's `/v1/inventory`, `extauthz
inventory`, `extauthz suggest-policy` (checked with `check-policy` and decided with `replay`) and
the HTML page (rendered by headless Chromium) must all show what happened.

The browser helpers here are shared with test_drift.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from extauthz.demo.agent import attempt, connect
from extauthz.demo.stack import Stack
from extauthz.demo.tokens import TokenIssuer

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "inventory-e2e-admin"
DESCRIPTION = "Look up one customer by id: returns their email address and phone number."
SHADOW_HOST = "shadow-mcp.internal"
WINDOW = (1200, 900)


# -- headless Chromium -----------------------------------------------------------------------------
def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.fail("headless Chromium is needed: apt-get install -y chromium (.ci/run installs it)")


def browse(url: str, profile: Path, *args: str) -> bytes:
    cmd = [chromium(), "--headless", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--hide-scrollbars", f"--user-data-dir={profile}", *args, url]
    if os.geteuid() == 0:
        cmd.insert(2, "--no-sandbox")       # Chromium refuses to sandbox as root
    r = subprocess.run(cmd, capture_output=True, timeout=90)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    return r.stdout


def dump_dom(url: str, profile: Path) -> str:
    """The DOM after Chromium loaded the page (scripts would have run by then)."""
    return browse(url, profile, "--dump-dom").decode()


def screenshot(url: str, profile: Path, out: Path) -> bytes:
    browse(url, profile, f"--screenshot={out}", f"--window-size={WINDOW[0]},{WINDOW[1]}")
    return out.read_bytes()


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes) into rows of pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        typ, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if typ == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif typ == b"IDAT":
            idat.append(body)
        elif typ == b"IEND":
            break
    assert header is not None
    w, h, depth, ctype, _, _, interlace = header
    assert depth == 8 and ctype in (2, 6) and interlace == 0, header
    bpp = 3 if ctype == 2 else 4
    raw, stride = zlib.decompress(b"".join(idat)), w * bpp
    prev, rows = bytearray(stride), []
    for y in range(h):
        off = y * (stride + 1)
        f, line = raw[off], bytearray(raw[off + 1:off + 1 + stride])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif f == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif f == 3:
            for i in range(stride):
                line[i] = (line[i] + (((line[i - bpp] if i >= bpp else 0) + prev[i]) >> 1)) & 0xFF
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line) if bpp == 3 else bytes(b for i, b in enumerate(line) if i % 4 != 3))
        prev = line
    return w, h, rows


# -- the stack and its traffic --------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    d = tmp_path_factory.mktemp("inventory")
    text = resources.files("extauthz.policy").joinpath("default.yaml").read_text()
    assert "unknownServer: deny" in text
    policy = d / "policy.yaml"       # the demo policy, but traffic to unknown servers passes (shadow use)
    policy.write_text(text.replace("unknownServer: deny", "unknownServer: allow") + f"\nadmin: {{token: {ADMIN_TOKEN}}}\n")
    desc = d / "description.txt"
    desc.write_text(DESCRIPTION)
    s = Stack(str(policy), tokens=TokenIssuer(), upstream_args=["--description-file", str(desc)])
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def empty_page(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The page before any traffic (taken first: `traffic` depends on it)."""
    d = tmp_path_factory.mktemp("shots")
    return screenshot(stack.service_admin_url + "/inventory", d / "profile", d / "empty.png")


@pytest.fixture(scope="module")
def traffic(stack: Stack, empty_page: bytes) -> dict[str, tuple[str, str, str]]:
    alice = stack.tokens.mint("alice", groups=["support"], customer_ids=["c-100", "c-300"])
    root = stack.tokens.mint("root", groups=["admin"], customer_ids=["c-100", "c-200", "c-300"])

    async def run() -> dict[str, tuple[str, str, str]]:
        out: dict[str, tuple[str, str, str]] = {}
        async with connect(stack.url, alice, "legacy") as c:
            await c.list_tools()
            await c.list_resources()
            await c.list_resource_templates()
            await c.list_prompts()
            out["alice lookup"] = await attempt(lambda: c.call_tool("lookup_customer", {"customer_id": "c-100"}))
            out["alice search"] = await attempt(lambda: c.call_tool("search_customers", {"query": "a"}))
            out["alice read"] = await attempt(lambda: c.read_resource("crm://customers/c-300"))
            out["alice prompt"] = await attempt(lambda: c.get_prompt("draft_reply", {"customer_id": "c-100"}))
            out["alice export"] = await attempt(lambda: c.call_tool("export_customers", {"format": "csv"}))
        async with connect(stack.url, root, "2026-07-28") as c:
            await c.list_tools()
            out["root export"] = await attempt(lambda: c.call_tool("export_customers", {"format": "csv"}))
            out["root lookup"] = await attempt(lambda: c.call_tool("lookup_customer", {"customer_id": "c-200"}))
        return out

    out = asyncio.run(run())
    # An MCP request for a server the policy does not name (allowed by `unknownServer: allow`).
    r = httpx.post(stack.url, headers={"host": SHADOW_HOST, "authorization": f"Bearer {alice}",
                                       "content-type": "application/json",
                                       "accept": "application/json, text/event-stream"},
                   json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
    assert "x-mcp-extauthz-reason" not in r.headers       # ext_authz let it through
    return out


def inventory(stack: Stack) -> dict[str, Any]:
    return httpx.get(stack.service_admin_url + "/v1/inventory", timeout=10).json()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "extauthz.cli", *args], capture_output=True, text=True, timeout=60)


def test_traffic_was_decided_as_the_policy_says(traffic):
    assert {k: v[:2] for k, v in traffic.items()} == {
        "alice lookup": ("allowed", ""), "alice search": ("allowed", ""), "alice read": ("allowed", ""),
        "alice prompt": ("allowed", ""), "alice export": ("DENIED", "not_allowed"),
        "root export": ("allowed", ""), "root lookup": ("allowed", "")}


def test_v1_inventory_lists_the_server_its_capabilities_and_who_used_them(stack, traffic):
    inv = inventory(stack)
    crm = inv["servers"][0]
    assert crm["server"] == "crm" and crm["covered"] and not crm["shadow"]
    assert crm["serverInfo"]["name"] == "demo-crm"
    assert {"2025-11-25", "2026-07-28"} <= set(crm["protocolVersions"])
    assert crm["traffic"]["authorities"][0].startswith("127.0.0.1") and crm["traffic"]["paths"] == ["/mcp"]
    assert crm["traffic"]["denied"] >= 1 and crm["traffic"]["denyReasons"].get("not_allowed", 0) >= 1
    tools = {t["name"]: t for t in crm["tools"]}
    assert set(tools) == {"lookup_customer", "search_customers", "export_customers", "update_settings"}

    def users(name: str) -> dict[str, list[str]]:
        return {c["subject"]: c["groups"] for c in tools[name]["usage"]["callers"]}

    assert users("lookup_customer") == {"alice": ["support"], "root": ["admin"]}
    assert users("search_customers") == {"alice": ["support"]}
    assert users("export_customers") == {"alice": ["support"], "root": ["admin"]}
    export = tools["export_customers"]["usage"]
    assert (export["allowed"], export["denied"], export["denyReasons"]) == (1, 1, {"not_allowed": 1})
    assert export["usedBy"]["groups"] == ["admin"]
    assert tools["lookup_customer"]["usage"]["usedBy"]["groups"] == ["admin", "support"]
    assert tools["update_settings"]["usage"] is None
    assert tools["lookup_customer"]["rule"]["id"] == "crm.tools[0]" and tools["export_customers"]["covered"]
    assert tools["lookup_customer"]["source"] == "traffic"
    # What the server publishes about it: the description names personal data.
    assert tools["lookup_customer"]["sensitivity"] == ["pii"]
    (tpl,) = crm["resourceTemplates"]
    assert tpl["usage"]["uris"] == ["crm://customers/c-300"] and tpl["usage"]["callers"][0]["subject"] == "alice"
    (prompt,) = crm["prompts"]
    assert prompt["usage"]["allowed"] == 1
    assert {c["subject"] for c in inv["callers"]} == {"alice", "root"}
    # The request for a server outside the policy: shadow exposure.
    shadow = next(s for s in inv["servers"] if s["shadow"])
    assert shadow["server"] == f"shadow:{SHADOW_HOST}/mcp" and not shadow["covered"]
    assert shadow["traffic"]["allowed"] == 1 and shadow["traffic"]["callers"][0].split("|")[1] == "alice"
    assert inv["summary"]["shadowServers"] == 1


def test_extauthz_inventory_prints_servers_then_capabilities(stack, traffic):
    r = cli("inventory", "--admin", stack.service_admin_url)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    servers, caps = out.split("\nCAPABILITIES\n", 1)
    assert servers.startswith("SERVERS\n")
    crm_line = next(line for line in servers.splitlines() if line.startswith("crm "))
    assert "covered" in crm_line and "demo-crm" in crm_line
    assert any(line.startswith(f"shadow:{SHADOW_HOST}/mcp") and "shadow" in line for line in servers.splitlines())
    rows = {line.split()[2]: line for line in caps.splitlines() if line.startswith("crm ")}
    assert "alice(support)" in rows["lookup_customer"] and "root(admin)" in rows["lookup_customer"]
    assert " pii " in rows["lookup_customer"] and "crm.tools[0]" in rows["lookup_customer"]
    assert "alice(support)" in rows["crm://customers/{customer_id}"]
    assert rows["update_settings"].split()[-2:] == ["0", "0"]
    as_json = cli("inventory", "--admin", stack.service_admin_url, "--format", "json", "--server", "crm")
    assert [s["server"] for s in json.loads(as_json.stdout)["servers"]] == ["crm"]


def test_suggested_policy_passes_check_policy_and_allows_exactly_what_was_used(stack, traffic, tmp_path):
    out = tmp_path / "suggested.yaml"
    r = cli("suggest-policy", "--admin", stack.service_admin_url, "--out", str(out))
    assert r.returncode == 0, r.stderr
    checked = cli("check-policy", str(out))
    assert checked.returncode == 0, checked.stdout + out.read_text()
    text = out.read_text()
    assert ADMIN_TOKEN not in text and f"shadow:{SHADOW_HOST}/mcp" in text

    # Decide every (group, capability) pair with the real decision core (`extauthz replay`), against
    # the spec the server really publishes (fetched from it directly).
    async def spec() -> dict[str, Any]:
        async with connect(stack.upstream_url, None, "legacy") as c:
            lists = {"tools": await c.list_tools(), "resources": await c.list_resources(),
                     "resourceTemplates": await c.list_resource_templates(), "prompts": await c.list_prompts()}
        return {k: v.model_dump(by_alias=True, exclude_none=True, mode="json")[k] for k, v in lists.items()}

    published = asyncio.run(spec())
    calls = {
        "lookup_customer": ("tools/call", {"name": "lookup_customer", "arguments": {"customer_id": "c-100"}}),
        "search_customers": ("tools/call", {"name": "search_customers", "arguments": {"query": "a"}}),
        "export_customers": ("tools/call", {"name": "export_customers", "arguments": {"format": "csv"}}),
        "update_settings": ("tools/call", {"name": "update_settings", "arguments": {"key": "k", "value": "v"}}),
        "crm://customers/c-100": ("resources/read", {"uri": "crm://customers/c-100"}),
        "crm://reports/summary": ("resources/read", {"uri": "crm://reports/summary"}),
        "draft_reply": ("prompts/get", {"name": "draft_reply", "arguments": {"customer_id": "c-100"}}),
    }
    groups = ("support", "admin", "qa")
    pairs = list(itertools.product(groups, calls))
    lines = [json.dumps({"spec": {"server": "crm", **published}})]
    for group, cap in pairs:
        method, params = calls[cap]
        lines.append(json.dumps({"authority": "127.0.0.1", "path": "/mcp",
                                 "body": {"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                                 "claims": {"iss": "https://issuer", "sub": f"someone-in-{group}", "groups": [group],
                                            "customer_ids": ["c-100"]}}))
    recorded = tmp_path / "traffic.jsonl"
    recorded.write_text("\n".join(lines) + "\n")
    replayed = cli("replay", "--policy", str(out), "--traffic", str(recorded))
    assert replayed.returncode == 0, replayed.stderr
    decisions = [d for d in map(json.loads, replayed.stdout.splitlines()) if "decision" in d]   # not the summary
    assert len(decisions) == len(pairs)
    observed = {("support", "lookup_customer"), ("support", "search_customers"), ("support", "crm://customers/c-100"),
                ("support", "draft_reply"), ("admin", "export_customers"), ("admin", "lookup_customer")}
    got = {pair: d["decision"] for pair, d in zip(pairs, decisions)}
    assert got == {pair: ("allow" if pair in observed else "deny") for pair in pairs}
    assert all(d["reason"] in ("allowed", "not_allowed") for d in decisions), decisions


def test_html_page_in_headless_chromium(stack, traffic, empty_page, tmp_path):
    url = stack.service_admin_url + "/inventory"
    dom = dump_dom(url, tmp_path / "profile")
    assert "<title>MCP inventory" in dom
    for cap in ("crm/tool/lookup_customer", "crm/tool/search_customers", "crm/tool/export_customers",
                "crm/template/crm://customers/{customer_id}", "crm/prompt/draft_reply"):
        assert f'data-capability="{cap}"' in dom, cap
    row = dom.split('data-capability="crm/tool/lookup_customer"', 1)[1].split("</tr>", 1)[0]
    assert ">pii<" in row and "crm.tools[0]" in row and "alice" in row and "root" in row
    assert "UNCOVERED" not in row
    assert "Shadow MCP server" in dom and SHADOW_HOST in dom

    # The screenshot is a real rendering of this content: right size, not blank, and different
    # from the page before any traffic.
    png = screenshot(url, tmp_path / "profile2", tmp_path / "after.png")
    w, h, rows = png_pixels(png)
    assert (w, h) == WINDOW
    assert rows[5][15:18] == bytes([0x18, 0x20, 0x2E]), "the page header's colour where the header is"
    pixels = [row[i:i + 3] for row in rows[::4] for i in range(0, len(row), 12)]
    commonest = max(set(pixels), key=pixels.count)
    assert len(set(pixels)) > 50 and pixels.count(commonest) < 0.9 * len(pixels), "blank or uniform screenshot"
    _, _, before = png_pixels(empty_page)
    changed = sum(a != b for a, b in zip(rows, before))
    assert changed > h // 4, f"only {changed} of {h} rows differ from the empty inventory"


# -- serve --workers 2: the supervisor's admin port serves the whole inventory ---------------------
def test_supervisor_inventory_covers_every_worker_and_approve_reaches_them(tmp_path):
    import grpc
    import orjson
    from envoy.service.ext_proc.v3 import external_processor_pb2_grpc

    from extauthz.demo.stack import free_port, wait_for_http

    from ..unit.core.conftest import ADMIN, TOOLS, call
    from ..unit.envoy.test_check_transport import check_request
    from ..unit.learn.test_learn_process import body, req_headers, resp_headers
    from .test_workers import POLICY, fresh_check

    def learn(port: int, tools: list[dict[str, Any]]) -> None:
        listing = orjson.dumps({"jsonrpc": "2.0", "id": 2, "result": {"tools": tools}})
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            stub = external_processor_pb2_grpc.ExternalProcessorStub(ch)
            msgs = [req_headers([(2, "tools/list", True)]), resp_headers(ctype="application/json"), body(listing, True)]
            assert len(list(stub.Process(iter(msgs), timeout=5))) == 3

    def until(what: str, ok: Any, timeout: float = 15.0) -> dict[str, Any]:
        import time
        deadline = time.monotonic() + timeout
        while True:
            inv = httpx.get(f"http://127.0.0.1:{ap}/v1/inventory", timeout=5).json()
            if ok(inv):
                return inv
            if time.monotonic() > deadline:
                pytest.fail(f"the supervisor's inventory never showed {what}: {json.dumps(inv)[:2000]}")
            time.sleep(0.2)

    def tool(inv: dict[str, Any], name: str) -> dict[str, Any]:
        return next(t for t in inv["servers"][0]["tools"] if t["name"] == name)

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.read_text() + "admin: {token: workers-admin}\n")
    gp, ap = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "extauthz.cli", "serve", "--policy", str(policy), "--workers", "2",
                             "--grpc-port", str(gp), "--admin-port", str(ap), "--host", "127.0.0.1",
                             "--drain-seconds", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_http(f"http://127.0.0.1:{ap}/readyz", timeout=40), "supervisor never became ready"
        learn(gp, TOOLS)
        lookup, export = orjson.dumps(call("lookup_customer", {"customer_id": "c-100"})), \
            orjson.dumps(call("export_customers", {}))
        assert [fresh_check(gp, check_request(lookup)).status.code for _ in range(20)] == [0] * 20
        assert [fresh_check(gp, check_request(export, claims=ADMIN)).status.code for _ in range(10)] == [0] * 10
        inv = until("20 + 10 calls", lambda i: i["servers"] and tool(i, "lookup_customer")["usage"]
                    and tool(i, "lookup_customer")["usage"]["allowed"] == 20
                    and (tool(i, "export_customers")["usage"] or {}).get("allowed") == 10)
        decisions = httpx.get(f"http://127.0.0.1:{ap}/v1/decisions?limit=1000").json()["decisions"]
        assert {d.get("worker") for d in decisions if d["method"] == "tools/call"} == {0, 1}, \
            "both workers must have answered some of the calls"
        assert [c["subject"] for c in tool(inv, "lookup_customer")["usage"]["callers"]] == ["alice"]
        assert tool(inv, "export_customers")["usage"]["usedBy"]["groups"] == ["admin"]
        assert inv["servers"][0]["traffic"]["requests"] == 30

        # Drift learned by a worker: the supervisor's own spec store sees the relayed snapshot.
        learn(gp, [dict(t, description="changed") if t["name"] == "lookup_customer" else t for t in TOOLS])
        inv = until("the drift", lambda i: i["drift"] and i["quarantined"])
        assert (inv["drift"][0]["name"], inv["drift"][0]["change"]) == ("lookup_customer", "changed")
        reasons = {dict((h.header.key, h.header.value) for h in fresh_check(gp, check_request(lookup))
                        .denied_response.headers)["x-mcp-extauthz-reason"] for _ in range(10)}
        assert reasons == {"quarantined"}
        r = httpx.post(f"http://127.0.0.1:{ap}/v1/approve", json={"server": "crm", "kind": "tools",
                                                                   "name": "lookup_customer"},
                       headers={"authorization": "Bearer workers-admin"})
        assert r.json() == {"approved": True}
        # The relay takes a moment: wait for one worker to allow, then every call on fresh
        # connections (spread over both workers) must pass.
        until("the approval", lambda i: not i["quarantined"])
        for _ in range(50):
            if fresh_check(gp, check_request(lookup)).status.code == 0:
                break
        assert [fresh_check(gp, check_request(lookup)).status.code for _ in range(30)] == [0] * 30, \
            "an approval on the supervisor's admin port must reach every worker"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
