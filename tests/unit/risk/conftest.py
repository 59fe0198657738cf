"""A fake clock for the risk engine: decay, minutes and chain windows without waiting."""

from __future__ import annotations

import pytest

import extauthz.risk.engine as engine_mod


class Clock:
    def __init__(self) -> None:
        self.mono = 6000.0            # minute 100 exactly
        self.wall = 1_800_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(engine_mod, "time", c)
    return c
