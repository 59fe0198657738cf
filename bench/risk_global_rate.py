"""How far a global `risk.callsPerMinute` overshoots (issue 17): two replicas (two Apps, one real
redis-server), one caller's calls spread evenly over both at a steady rate, the engine's minute
held fixed. Prints the calls allowed above the limit next to the stated bound
(replicas - 1) x per-replica rate x (report interval + feed lag), the lag as measured.

    python bench/risk_global_rate.py [--limit 200] [--rates 20,100,400]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extauthz.app import App  # noqa: E402
from extauthz.mcp.request import HttpRequest  # noqa: E402
from extauthz.risk.report import REPORT_EVERY  # noqa: E402
from extauthz.shared.config import redis_config  # noqa: E402
from extauthz.shared.redis import RedisShared  # noqa: E402
from extauthz.shared.testing import RedisProcess  # noqa: E402

POLICY = ROOT / "tests" / "unit" / "risk" / "policy.yaml"
CLAIMS = {"iss": "https://issuer", "sub": "alice", "groups": ["support"], "client_id": "agent"}
BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"open_tool","arguments":{"q":"x"}}}'


class OneMinute:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return 1_800_000_005.0


async def replica(url: str, policy: Path, prefix: str) -> App:
    app = App(str(policy), decision_out=io.BytesIO(), clock=OneMinute())
    shared = RedisShared(redis_config(url, prefix=prefix), app)
    app.use_shared(shared)
    await shared.start()
    await asyncio.wait_for(shared.loaded.wait(), 10)
    app.specs.apply_page("crm", "tools", [{"name": "open_tool", "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}}}], first=True, last=True)
    return app


async def run(url: str, limit: int, rate: float, n: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "policy.yaml"
        p.write_text(POLICY.read_text().replace("blockAt: 30, decayPerMinute: 1, volumePerMinute: 2",
                                                f"blockAt: 100000, volumePerMinute: 100000, callsPerMinute: {limit}"))
        apps = [await replica(url, p, f"bench{n}") for _ in range(2)]
        req = HttpRequest(method="POST", path="/mcp", authority="crm.example.com",
                          headers={"content-type": "application/json"}, body=BODY, partial=False,
                          metadata={"envoy.filters.http.jwt_authn": {"jwt_payload": CLAIMS}})
        first = apps[0].check(req)
        assert first.allowed, first.detail
        allowed, gap, t = 1, 1.0 / (2 * rate), time.monotonic()
        lags: list[float] = []
        for i in range(1, 3 * limit):               # well past the limit, alternating replicas
            allowed += apps[i % 2].check(req).allowed
            t += gap
            await asyncio.sleep(max(0.0, t - time.monotonic()))
            if i % 50 == 0:
                lags += [a.shared.lag for a in apps]
        for a in apps:
            await a.shared.close()
        return allowed - limit, max(lags)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--rates", default="20,100,400")
    args = ap.parse_args()
    redis = RedisProcess().start()
    try:
        print(f"limit {args.limit}/min, 2 replicas, report every {REPORT_EVERY}s")
        print(f"{'calls/s per replica':>20} {'allowed over limit':>19} {'bound (lag as seen)':>20} {'max lag s':>10}")
        for n, r in enumerate(float(x) for x in args.rates.split(",")):
            over, lag = await run(redis.url, args.limit, r, n)
            bound = (2 - 1) * r * (REPORT_EVERY + lag)
            print(f"{r:>20.0f} {over:>19d} {bound:>20.1f} {lag:>10.3f}")
    finally:
        redis.close()


if __name__ == "__main__":
    asyncio.run(main())
