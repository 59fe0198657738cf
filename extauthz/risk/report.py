"""Global rate and volume counts: each replica reports what it counted, every REPORT_EVERY seconds.

`risk.callsPerMinute` and `risk.volumePerMinute` hold per caller over every worker and replica. A
Check counts locally and decides on local counts (no I/O); this loop drains the counts made since
the last report (`RiskEngine.report_counts`) and publishes them as `rate` change records on
whichever feed the process is on (the --workers bus or Redis); the others add them
(`RiskEngine.add_counts`). Until a report arrives each replica sees only its own calls, so a
caller can exceed a limit by at most what the other replicas admit in one report interval plus
the feed lag: (replicas - 1) x per-replica rate x (REPORT_EVERY + lag).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from extauthz.risk.engine import RiskEngine

log = logging.getLogger("extauthz.risk")

REPORT_EVERY = 0.25       # seconds: the overshoot bound's interval; an idle replica sends nothing


async def report_counts(engine: RiskEngine, publish: Callable[[str, dict[str, Any]], None],
                        connected: Callable[[], bool] = lambda: True, every: float = REPORT_EVERY,
                        dropped: Callable[[int], None] | None = None) -> None:
    """Publish this process's counts until cancelled. While the feed is down the counts are
    dropped, not queued (a report is worth something only within its minute), and counted
    (`dropped(n)`: the shared_writes_dropped_total metric)."""
    while True:
        await asyncio.sleep(every)
        try:
            records = engine.report_counts()
            if connected():
                for rec in records:
                    publish("rate", rec)
            elif records and dropped is not None:
                dropped(len(records))
        except Exception:  # noqa: BLE001 - a failed report must not end the reports
            log.exception("rate report failed")
