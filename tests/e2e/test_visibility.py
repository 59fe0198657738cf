"""End to end: `sessions.visibilityBinding` against an SDK server that lists different tools to
different users. The policy allows every tool to everyone, so only the binding can stop a caller
from calling a tool the server never showed it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from extauthz.demo.agent import attempt, connect
from extauthz.demo.stack import Stack

from .sdk_servers import stack_for

pytestmark = pytest.mark.e2e


def _stack(tmp: Path, binding: bool, stateless: bool = False) -> Stack:
    return stack_for("per_user_server.py", "peruser", tmp / f"policy-{binding}-{stateless}.yaml",
                     extra=f"sessions: {{visibilityBinding: {'true' if binding else 'false'}}}\n",
                     args=("--stateless",) if stateless else ())


@pytest.fixture(scope="module")
def bound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with _stack(tmp_path_factory.mktemp("vis"), True) as s:
        yield s


async def _scenario(stack: Stack, mode: str) -> dict[str, tuple[str, str, str]]:
    auditor = stack.tokens.mint(f"aud-{mode}", groups=["auditor"])
    user = stack.tokens.mint(f"usr-{mode}", groups=["staff"])
    out: dict[str, tuple[str, str, str]] = {}
    async with connect(stack.url, auditor, mode) as c:
        tools = sorted(t.name for t in (await c.list_tools()).tools)
        out["auditor list"] = ("allowed", "", ",".join(tools))
        out["auditor call"] = await attempt(lambda: c.call_tool("audit_log", {"limit": 1}))
    async with connect(stack.url, user, mode) as c:
        tools = sorted(t.name for t in (await c.list_tools()).tools)
        out["user list"] = ("allowed", "", ",".join(tools))
        out["user call listed"] = await attempt(lambda: c.call_tool("whoami", {}))
        out["user call unlisted"] = await attempt(lambda: c.call_tool("audit_log", {"limit": 1}))
    async with connect(stack.url, user, mode) as c:       # a new session that never lists
        out["user new session"] = await attempt(lambda: c.call_tool("audit_log", {"limit": 1}))
    return out


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_a_tool_never_listed_to_this_caller_is_unknown(bound, mode):
    out = asyncio.run(asyncio.wait_for(_scenario(bound, mode), 60))
    assert out["auditor list"][2] == "audit_log,whoami"
    assert out["auditor call"][0] == "allowed"
    assert out["user list"][2] == "whoami"
    assert out["user call listed"][0] == "allowed"
    assert out["user call unlisted"][:2] == ("DENIED", "unknown_capability")
    # the caller's last snapshot covers its sessions that never listed (and stateless traffic)
    assert out["user new session"][:2] == ("DENIED", "unknown_capability")


def test_without_the_binding_the_unlisted_tool_goes_through(tmp_path):
    with _stack(tmp_path, False) as s:
        out = asyncio.run(asyncio.wait_for(_scenario(s, "legacy"), 60))
    assert out["user call unlisted"][0] == "allowed", out["user call unlisted"]
