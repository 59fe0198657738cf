"""SIGTERM under load: readiness drops, in-flight Checks finish, nothing is cut off mid-call."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc

from extauthz.demo.stack import free_port, wait_for_http

from ..unit.envoy.test_check_transport import check_request

pytestmark = pytest.mark.e2e
POLICY = Path(__file__).parent.parent / "unit" / "core" / "policy.yaml"


async def _load(port: int, stop_at: list[float], results: list[tuple[float, str]],
                ready: list[bool]) -> None:
    """Like Envoy: keep sending while the endpoint is ready, stop once readiness drops."""
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": "open_tool", "arguments": {"a": "x" * 3000}}})
    req = check_request(body)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = external_auth_pb2_grpc.AuthorizationStub(ch)
        while ready[0]:
            try:
                resp = await stub.Check(req, timeout=5)
                results.append((time.monotonic(), "ok" if resp.HasField("status") else "empty"))
            except grpc.aio.AioRpcError as e:
                results.append((time.monotonic(), e.code().name))
                if e.code() is grpc.StatusCode.UNAVAILABLE:
                    return
            if stop_at and time.monotonic() > stop_at[0] + 15:
                return


def test_sigterm_drains_in_flight_checks():
    grpc_port, admin_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "extauthz.cli", "serve", "--policy", str(POLICY),
                             "--grpc-port", str(grpc_port), "--admin-port", str(admin_port),
                             "--host", "127.0.0.1", "--drain-seconds", "5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for_http(f"http://127.0.0.1:{admin_port}/readyz", timeout=30)
        results: list[tuple[float, str]] = []
        stop_at: list[float] = []
        ready = [True]

        seen: list[int] = []     # /readyz answers: the admin port must outlive the drain

        async def watch_readiness() -> None:
            async with httpx.AsyncClient() as c:
                while ready[0]:
                    await asyncio.sleep(0.05)
                    r = await c.get(f"http://127.0.0.1:{admin_port}/readyz")
                    seen.append(r.status_code)
                    ready[0] = r.status_code == 200

        async def run() -> None:
            tasks = [asyncio.create_task(_load(grpc_port, stop_at, results, ready)) for _ in range(16)]
            watcher = asyncio.create_task(watch_readiness())
            await asyncio.sleep(1.0)
            stop_at.append(time.monotonic())
            os.kill(proc.pid, signal.SIGTERM)
            await asyncio.gather(*tasks, watcher)

        try:
            asyncio.run(run())
        except Exception:
            proc.wait(timeout=20)
            print("server stderr:", proc.stderr.read().decode()[-3000:] if proc.stderr else "")
            raise
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        err = proc.stderr.read().decode() if proc.stderr else ""
    assert rc == 0, err[-2000:]
    codes = {c for _, c in results}
    # Every call sent while the endpoint was ready completed: no CANCELLED/UNAVAILABLE/INTERNAL
    # (an in-flight call cut off) and no empty answers.
    assert codes == {"ok"}, codes
    before = sum(1 for t, c in results if t < stop_at[0])
    after = sum(1 for t, c in results if t >= stop_at[0])
    assert before > 50 and after > 0
    assert '"draining' in err or "draining" in err
    assert seen[-1] == 503 and 200 in seen, seen
