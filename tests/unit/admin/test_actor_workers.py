"""The supervisor's actor view under --workers: each worker is asked over the bus, answers are
merged, and a worker that does not answer in time is named as missing (never silently dropped)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

import extauthz.workers.query as query
from extauthz.admin.actor_view import build
from extauthz.workers.query import WorkerActors, answer

from .test_actor_view import EVE, check, claims, new_app


class Writer:
    def __init__(self, on_line: Callable[[dict[str, Any]], None] | None) -> None:
        self.on_line = on_line

    def write(self, line: bytes) -> None:
        if self.on_line is not None:
            self.on_line(orjson.loads(line))

    def is_closing(self) -> bool:
        return False


@dataclass
class Worker:
    index: int
    writer: Writer | None


@dataclass
class Sup:
    app: Any
    workers: list[Worker]


def test_every_worker_is_asked_and_a_silent_one_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(query, "TIMEOUT", 0.3)
    supervisor_app, w0 = new_app(tmp_path), new_app(tmp_path)
    mine = check(w0, "nope_1", who=claims("eve", "u1"), session="s1")

    async def run() -> tuple[list[Any], dict[str, Any]]:
        loop = asyncio.get_running_loop()
        sup = Sup(supervisor_app, [])
        actors = WorkerActors(sup)

        def worker0(msg: dict[str, Any]) -> None:      # answers on its own loop turn, as over the socket
            async def reply() -> None:
                actors.on_answer(orjson.loads(await answer(w0, 0, msg)))
            loop.create_task(reply())
        sup.workers = [Worker(0, Writer(worker0)), Worker(1, Writer(None)), Worker(2, None)]
        return await actors.find("eve"), await actors.facts(EVE)

    hits, facts = asyncio.run(run())
    assert [(h.caller, h.via) for h in hits] == [(EVE, "subject")]
    v = build(facts)
    assert [(s.decision_id, s.worker) for s in v.steps] == [(mine.decision_id, 0)]
    assert v.bounds.missing == ("worker 2", "worker 1")        # no bus; did not answer in time
    assert v.bounds.processes == 2
