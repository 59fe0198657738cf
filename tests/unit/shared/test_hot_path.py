"""The Check path with --redis: a session the replica already holds is decided without Redis (no
command sent, no write queued), and a new session costs exactly one pipelined round trip."""

from __future__ import annotations

import time
from typing import Any

import redis as syncredis

from extauthz.app import App
from extauthz.risk.report import REPORT_EVERY
from extauthz.shared.testing import RedisProcess

from ..core.conftest import SUPPORT, http
from .test_redis_state import LOOKUP, check, close, replica, settle

# the replica's liveness and feed loops, our own INFO, and the handshake of a connection the background
# pool opens when its ping and writer meet (the claims have their own pool since s17)
BACKGROUND = {"ping", "xread", "info", "hello", "client|setinfo"}


def commands(r: syncredis.Redis) -> dict[str, int]:
    """Commands redis-server ran, by name (server-side: pipelines and Lua-internal calls included)."""
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in r.info("commandstats").items()}


def caused(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in after.items() if k not in BACKGROUND and n > before.get(k, 0)}


def count_publishes(app: App) -> list[str]:
    ops: list[str] = []
    publish = app.shared.publish

    def counting(op: str, payload: dict[str, Any]) -> None:
        ops.append(op)
        publish(op, payload)
    for store in (app.specs, app.sessions, app.visibility, app.risk):
        store.on_change = counting
    return ops


async def test_known_session_checks_send_no_command_and_queue_no_write(redis_server: RedisProcess) -> None:
    app = await replica(redis_server)
    admin = syncredis.Redis(port=redis_server.port)
    try:
        ops = count_publishes(app)
        before = commands(admin)
        assert (await check(app, LOOKUP, sid="K1")).allowed          # the first call claims it in Redis
        await settle(app)
        first = caused(before, commands(admin))
        assert first.get("eval") == 1 and ops == ["session"]          # the counters see what is sent

        ops.clear()
        req = http(LOOKUP, claims=SUPPORT, headers={"mcp-session-id": "K1"})
        n = 200
        assert n < app.ctx.policy.risk.volume_per_minute              # a volume alert would be a real write
        before, started = commands(admin), time.monotonic()
        for _ in range(n):
            d = app.check(req)
            assert d.allowed and not d.claim                          # decided here: nothing to await
        app.record_pending()
        await settle(app)                                             # the writer and reader had their turn
        # Only the periodic global-count report (extauthz.risk.report: one record per interval, however
        # many Checks) may have written; nothing is sent per Check.
        intervals = int((time.monotonic() - started) / REPORT_EVERY) + 2
        assert [op for op in ops if op != "rate"] == [] and not app.shared.outbox
        sent = caused(before, commands(admin))
        assert set(sent) <= {"hincrby", "expire", "xadd"} and sum(sent.values()) <= 3 * intervals, (sent, intervals)
    finally:
        admin.close()
        await close(app)


async def test_a_new_session_costs_one_round_trip_without_a_script_check(redis_server: RedisProcess) -> None:
    app = await replica(redis_server)
    admin = syncredis.Redis(port=redis_server.port)
    try:
        before = commands(admin)
        for i in range(5):
            assert (await check(app, LOOKUP, sid=f"N{i}")).allowed
        got = caused(before, commands(admin))
        # Per claim: EVAL (its GET and SET run inside) and the visibility HGETALL, pipelined; never
        # the SCRIPT EXISTS a registered Script sends first in a pipeline (a second round trip).
        assert got.get("eval") == 5 and got.get("hgetall") == 5
        assert "script" not in got and "evalsha" not in got
    finally:
        admin.close()
        await close(app)
