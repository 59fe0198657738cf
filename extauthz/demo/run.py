"""`extauthz demo`: real Envoy, the demo CRM MCP server, this service with the embedded default
policy, and a scripted agent (the real MCP SDK client) as a support user and an admin."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import urllib.request
from importlib import resources

from extauthz.demo.agent import script, table
from extauthz.demo.stack import Stack, StackError
from extauthz.demo.tokens import TokenIssuer


def _terminate(*_: object) -> None:
    raise KeyboardInterrupt     # SIGTERM stops the demo like Ctrl-C: the stack is torn down


def _risk_lines(admin_url: str) -> str:
    """One actor across sessions: each caller's risk score and attack-chain alerts, from /v1/sessions."""
    try:
        with urllib.request.urlopen(admin_url + "/v1/sessions", timeout=5) as r:
            callers = json.load(r).get("callers", [])
    except (OSError, ValueError):
        return ""
    lines = ["\nRisk per caller (all their sessions; blocked at 100):"]
    for c in sorted(callers, key=lambda c: -c["score"]):
        who = c["caller"].split("|")[1] if c["caller"].count("|") == 2 else c["caller"]
        alert = f"  alert: {c['alerts'][-1]['summary']}" if c["alerts"] else ""
        lines.append(f"  {who:<6} score {c['score']:>5.1f}{'  BLOCKED' if c['blocked'] else ''}{alert}")
    return "\n".join(lines)[:2000]


def demo_main(once: bool = False) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    tokens = TokenIssuer()
    policy_text = resources.files("extauthz.policy").joinpath("default.yaml").read_text()
    with tempfile.TemporaryDirectory(prefix="extauthz-demo-") as tmp:
        policy_path = os.path.join(tmp, "policy.yaml")
        with open(policy_path, "w") as f:
            f.write(policy_text)
        print("starting the demo CRM MCP server, extauthz and Envoy ...", flush=True)
        try:
            stack = Stack(policy_path, tokens=tokens)
            # active discovery goes to the demo server's real (random) port
            with open(policy_path, "w") as f:
                f.write(policy_text.replace("http://127.0.0.1:8000/mcp", stack.upstream_url))
            stack.start()
        except StackError as e:
            print(f"demo could not start: {e}", file=sys.stderr)
            return 1
        try:
            support = [tokens.mint(who, groups=["support"], customer_ids=["c-100", "c-300"], sid=f"web-{who}")
                       for who in ("alice", "bea")]
            admin = tokens.mint("root", groups=["admin"], customer_ids=["c-100", "c-200", "c-300"])
            print(f"MCP endpoint through Envoy: {stack.url}")
            print(f"admin API: {stack.service_admin_url}  (try /inventory, /v1/sessions, /v1/decisions, /metrics)\n")
            try:
                rows = asyncio.run(script(stack.url, support, admin))
            except KeyboardInterrupt:
                return 130
            print(table(rows))
            denied = sum(r.verdict == "DENIED" for r in rows)
            print(f"\n{len(rows)} calls: {len(rows) - denied} allowed, {denied} denied before reaching the server.")
            print("Every decision is a JSON line in the service log; the policy is extauthz/policy/default.yaml.")
            print(_risk_lines(stack.service_admin_url))
            if not once:
                print("\nThe stack keeps running; point your own MCP client at the endpoint above. Ctrl-C stops it.")
                print(f"  a support token: {support[0]}\n")
                try:
                    while True:
                        asyncio.run(asyncio.sleep(3600))
                except KeyboardInterrupt:
                    pass
        finally:
            stack.stop()
    return 0
