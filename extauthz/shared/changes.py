"""The change feed's records: what one process changed that every other must also apply.

One frozen record per kind of change. A store that changes builds the record and hands it to its
`on_change` sink as `(op, payload)`, the wire form (`Change.op`, `Change.payload()`: the op dicts
the feed always carried, so processes of two versions still understand each other); a transport
(the `--workers` bus, the Redis stream) carries that form, and the receiving side decodes it
(`decode`) and applies it through the owning store's public `apply(change)` (`apply_to`), which
never publishes it again. Decoding checks every field's type: an entry that does not fit raises
ValueError and is skipped by the transport, never half applied.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

Sink = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Change:
    op: ClassVar[str] = ""
    wire: ClassVar[dict[str, str]] = {}        # attribute -> wire key, where they differ
    omit_empty: ClassVar[frozenset[str]] = frozenset()   # attributes left out of the payload when empty

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in self.omit_empty and (v is None or v is False or v == () or v == ""):
                continue
            out[self.wire.get(f.name, f.name)] = list(v) if isinstance(v, tuple) else v
        return out

    def encode(self) -> dict[str, Any]:
        return {"op": self.op, **self.payload()}


@dataclass(frozen=True, slots=True)
class SpecLearned(Change):
    """A completed list snapshot of one kind (`on_drift` as the learning replica applied it)."""
    op: ClassVar[str] = "spec"
    server: str
    kind: str
    items: tuple[Any, ...]
    on_drift: str = "quarantine"
    source: str = "traffic"
    viewer: str = "replica"


@dataclass(frozen=True, slots=True)
class InfoNoted(Change):
    op: ClassVar[str] = "info"
    server: str
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Approved(Change):
    """An operator released a held capability for `digest` (the entry it approved). Catch-up sends
    the same record; the wire op `approved` (older catch-up) decodes to it too."""
    op: ClassVar[str] = "approve"
    server: str
    kind: str
    name: str
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Quarantined(Change):
    """A capability held (drift, a screen finding): applied as sent, never re-derived."""
    op: ClassVar[str] = "quarantine"
    server: str
    kind: str
    name: str
    why: str


@dataclass(frozen=True, slots=True)
class SessionBound(Change):
    op: ClassVar[str] = "session"
    sid: str
    caller: str
    server: str
    user_session: str = ""
    client_id: str = ""
    protocol_version: str = ""
    path: str = ""


@dataclass(frozen=True, slots=True)
class SessionEnded(Change):
    """The server confirmed the end; the id stays `caller`'s (its former owner) for the TTL."""
    op: ClassVar[str] = "end"
    omit_empty: ClassVar[frozenset[str]] = frozenset({"server"})
    sid: str
    caller: str = ""
    server: str = ""


@dataclass(frozen=True, slots=True)
class Listed(Change):
    """What a session (and its caller) was last shown of one kind."""
    op: ClassVar[str] = "visible"
    server: str
    sid: str
    caller: str
    kind: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LinkGranted(Change):
    op: ClassVar[str] = "link"
    server: str
    sid: str
    caller: str
    uris: tuple[str, ...]
    tool: str = ""


@dataclass(frozen=True, slots=True)
class RiskEvent(Change):
    """A scored (or chain) event, with its final points: the receiver scores it once, as sent."""
    op: ClassVar[str] = "risk"
    wire: ClassVar[dict[str, str]] = {"time": "time", "decision_id": "decisionId", "session_id": "sessionId",
                                      "forgiven_by": "forgivenBy", "volume_minute": "volumeMinute"}
    omit_empty: ClassVar[frozenset[str]] = frozenset({"forgiven_by", "forgives", "volume_minute"})
    caller: str
    time: float
    decision_id: str
    session_id: str
    server: str
    method: str
    name: str
    reason: str
    stage: str | None
    points: float
    signature: int | str | None = None      # what was asked and why refused (app._signature: an int)
    forgives: tuple[str, ...] = ()
    forgiven_by: str | None = None
    volume_minute: int | None = None


@dataclass(frozen=True, slots=True)
class RiskScore(Change):
    """Catch-up: a caller's current score (no timeline)."""
    op: ClassVar[str] = "riskscore"
    caller: str
    score: float


@dataclass(frozen=True, slots=True)
class RateCounts(Change):
    """Calls and sensitive uses counted since the last report (`totals`: the minute's totals so far)."""
    op: ClassVar[str] = "rate"
    omit_empty: ClassVar[frozenset[str]] = frozenset({"totals"})
    minute: int
    calls: dict[str, int]
    uses: dict[str, int]
    totals: bool = False


@dataclass(frozen=True, slots=True)
class StreamExpected(Change):
    """A 2024-11-05 POST decided here: its result may come on a stream another process serves."""
    op: ClassVar[str] = "expect"
    server: str
    sid: str
    entries: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class StreamInjected(Change):
    """... and the denial of one, as a whole SSE event (base64), for wherever that stream is."""
    op: ClassVar[str] = "inject"
    server: str
    sid: str
    event: str


@dataclass(frozen=True, slots=True)
class InventoryDelta(Change):
    """What a worker's inventory recorded since its last report (`InventoryStore.drain()`)."""
    op: ClassVar[str] = "inventory"
    delta: dict[str, Any]


RECORDS: dict[str, type[Change]] = {c.op: c for c in (
    SpecLearned, InfoNoted, Approved, Quarantined, SessionBound, SessionEnded, Listed, LinkGranted,
    RiskEvent, RiskScore, RateCounts, StreamExpected, StreamInjected, InventoryDelta)}
ALIASES = {"approved": "approve"}


def emit(sink: Sink | None, change: Change) -> None:
    """Hand a change made here to the transport (if any)."""
    if sink is not None:
        sink(change.op, change.payload())


def decode(msg: dict[str, Any]) -> Change:
    """The record for one wire message (`{"op": ..., ...}`). Raises ValueError when it does not fit."""
    op = msg.get("op")
    cls = RECORDS.get(ALIASES.get(op, op) if isinstance(op, str) else "")
    if cls is None:
        raise ValueError(f"unknown change {op!r}")
    hints = _hints(cls)
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = cls.wire.get(f.name, f.name)
        if key not in msg or (msg[key] is None and f.default is not dataclasses.MISSING):
            if f.default is dataclasses.MISSING:
                raise ValueError(f"{op}: {key} missing")
            continue
        kw[f.name] = _coerce(hints[f.name], msg[key], key)
    return cls(**kw)


def _coerce(hint: Any, v: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        for alt in (a for a in args if a is not type(None)):
            try:
                return _coerce(alt, v, key)
            except ValueError:
                continue
        raise ValueError(f"{key} has the wrong type")
    if hint is Any:
        return v
    if hint is str:
        if not isinstance(v, str):
            raise ValueError(f"{key} must be a string")
        return v
    if hint is bool:
        return bool(v)
    if hint in (int, float):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{key} must be a number")
        return hint(v)
    if origin is tuple:
        if not isinstance(v, list):
            raise ValueError(f"{key} must be a list")
        if args and args[0] is str and not all(isinstance(x, str) for x in v):
            raise ValueError(f"{key} must hold strings")
        return tuple(v)
    if origin is dict:
        if not isinstance(v, dict):
            raise ValueError(f"{key} must be an object")
        return v
    return v


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    h = _HINTS.get(cls)
    if h is None:
        h = _HINTS[cls] = typing.get_type_hints(cls)
    return h


class Applies(typing.Protocol):
    def apply(self, change: Any) -> None: ...


# Which of the App's stores applies each record (a record may concern two: an end also ends the
# session's visibility).
TARGETS: dict[type[Change], tuple[str, ...]] = {
    SpecLearned: ("specs",), InfoNoted: ("specs",), Approved: ("specs",), Quarantined: ("specs",),
    SessionBound: ("sessions",), SessionEnded: ("sessions", "visibility"), Listed: ("visibility",),
    LinkGranted: ("links",), RiskEvent: ("risk",), RiskScore: ("risk",), RateCounts: ("risk",),
    StreamExpected: ("learner",), StreamInjected: ("learner",), InventoryDelta: ("inventory",),
}


def apply_to(app: Any, change: Change) -> None:
    """Apply a change another process made to this process's stores (never re-published)."""
    for attr in TARGETS[type(change)]:
        store: Applies = getattr(app, attr)
        store.apply(change)
