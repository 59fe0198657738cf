"""The actor view under `serve --workers N`: the supervisor asks every worker over the bus.

Each worker decides its own share of the traffic and keeps its own decision ring and timelines;
only scored risk events are relayed. So `/callers/{id}` on the supervisor asks each worker
(`{"op": "query", "qid", "kind": "find" | "facts", "q"}`) and merges the answers with its own
view (`extauthz.admin.actors.merge`). A worker that does not answer within `TIMEOUT` is named on
the page as missing: the view says it is incomplete rather than pretending it is whole.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

import orjson

from extauthz.admin.actors import Hit, find_async, gather_async, merge

if TYPE_CHECKING:
    from extauthz.app import App
    from extauthz.workers.supervisor import Supervisor

TIMEOUT = 3.0


async def answer(app: App, index: int, msg: dict[str, Any]) -> bytes:
    """A worker's answer to one query (on the worker's loop, reads only, in chunks between Checks)."""
    app.record_pending()          # the decisions answered so far are in the ring
    q = str(msg.get("q", ""))
    if msg.get("kind") == "find":
        result: Any = [h.as_json() for h in await find_async(app, q)]
    else:
        result = await gather_async(app, q, index)
    return orjson.dumps({"op": "answer", "qid": msg.get("qid"), "worker": index, "result": result}) + b"\n"


class WorkerActors:
    """`ActorSource` over the supervisor's workers (and the supervisor's own relayed view)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self._ids = itertools.count(1)
        self._pending: dict[tuple[int, int], asyncio.Future[Any]] = {}

    def on_answer(self, msg: dict[str, Any]) -> None:
        fut = self._pending.get((msg.get("qid"), msg.get("worker")))  # type: ignore[arg-type]
        if fut is not None and not fut.done():
            fut.set_result(msg.get("result"))

    async def _ask(self, kind: str, q: str) -> tuple[list[Any], list[str]]:
        qid = next(self._ids)
        line = orjson.dumps({"op": "query", "qid": qid, "kind": kind, "q": q}) + b"\n"
        loop = asyncio.get_running_loop()
        asked: dict[int, asyncio.Future[Any]] = {}
        missing = []
        for w in self.sup.workers:
            if w.writer is None or w.writer.is_closing():
                missing.append(f"worker {w.index}")
                continue
            asked[w.index] = self._pending[(qid, w.index)] = loop.create_future()
            w.writer.write(line)
        try:
            if asked:
                await asyncio.wait(list(asked.values()), timeout=TIMEOUT)
        finally:
            for i in asked:
                self._pending.pop((qid, i), None)
        results = []
        for i, fut in asked.items():
            if fut.done() and not fut.cancelled():
                results.append(fut.result())
            else:
                fut.cancel()
                missing.append(f"worker {i}")
        return results, missing

    async def find(self, query: str) -> list[Hit]:
        answers, _ = await self._ask("find", query)
        hits: dict[str, Hit] = {h.caller: h for h in await find_async(self.sup.app, query)}
        for ans in answers:
            for x in ans or []:
                h = Hit(str(x["caller"]), str(x["via"]), str(x.get("decisionId", "")))
                have = hits.get(h.caller)
                if have is None or (h.decision_id and not have.decision_id) or (h.via == "caller" != have.via):
                    hits[h.caller] = h
        order = {"caller": 0, "decision": 1}
        return sorted(hits.values(), key=lambda h: order.get(h.via, 2))

    async def facts(self, caller: str) -> dict[str, Any]:
        self.sup.app.record_pending()
        answers, missing = await self._ask("facts", caller)
        own = await gather_async(self.sup.app, caller)
        return merge([own, *[a for a in answers if isinstance(a, dict)]], missing)
