"""Learned and pinned specs, per server, bounded in memory. What another process must also know
(completed snapshots, server info, holds, approvals with their digests) leaves through `on_change`
as change records (extauthz.shared.changes) and arrives through `apply`."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from extauthz.mcp.kinds import KIND_NAMES
from extauthz.shared.changes import Approved, InfoNoted, Quarantined, Sink, SpecLearned, emit
from extauthz.specs.model import PARSERS, ServerSpec

log = logging.getLogger("extauthz.specs")

MAX_SERVERS = 1024            # shadow servers come from traffic: never let them grow without bound
MAX_ITEMS_PER_KIND = 20000
MAX_PENDING = 4096
MAX_VIEWERS = 256             # callers remembered per capability (who was shown it)


@dataclass(frozen=True, slots=True)
class DriftEvent:
    server: str
    kind: str
    name: str
    change: str               # "changed" | "added" | "removed"
    quarantined: bool


class Specs(Protocol):
    """The seam: what the Check path, the learner and the transports use of a spec store."""
    on_change: Sink | None

    def get(self, server: str) -> ServerSpec | None: ...
    def servers(self) -> list[ServerSpec]: ...
    def apply_page(self, server: str, kind: str, items: list[Any], *, first: bool, last: bool,
                   partition: str = "", on_drift: str = "quarantine", source: str = "traffic",
                   viewer: str | None = None) -> list[DriftEvent]: ...
    def approve(self, server: str, kind: str, name: str) -> bool: ...
    def apply(self, change: SpecLearned | InfoNoted | Approved | Quarantined) -> None: ...


class SpecStore:
    """What each server published. A list request without a cursor starts a new snapshot for that
    (server, kind, partition); pages merge; the snapshot replaces the kind when the last page lands."""

    def __init__(self, on_drift: Callable[[DriftEvent], None] | None = None,
                 screen: Callable[[str, Any], str | None] | None = None) -> None:
        self._specs: OrderedDict[str, ServerSpec] = OrderedDict()
        self._pending: OrderedDict[tuple[str, str, str], dict[int, Any]] = OrderedDict()   # items by id()
        self._on_drift = on_drift
        # Gets every change another replica must also make (a change record's wire form); set by
        # the transport. Changes from elsewhere come in through `apply` and are not re-published.
        self.on_change: Sink | None = None
        self.version = 0      # bumped on every change: cheap staleness check for caches
        # screen(kind, entry) -> why it must be held (quarantined) before first use, or None (the
        # app's defaults.hiddenInstructions: quarantine). Not applied to pinned specs.
        self.screen = screen

    def get(self, server: str) -> ServerSpec | None:
        return self._specs.get(server)

    def servers(self) -> list[ServerSpec]:
        return list(self._specs.values())

    def _spec(self, server: str) -> ServerSpec:
        spec = self._specs.get(server)
        if spec is None:
            spec = self._specs[server] = ServerSpec(server)
            while len(self._specs) > MAX_SERVERS:
                self._specs.popitem(last=False)
        return spec

    def note_info(self, server: str, info: dict[str, Any]) -> None:
        """Remember serverInfo / protocolVersion / capabilities from initialize or server/discover."""
        self._spec(server).info.update(info)
        emit(self.on_change, InfoNoted(server, info))

    def apply(self, change: SpecLearned | InfoNoted | Approved | Quarantined) -> None:
        """A change another replica made (or catch-up): applied as sent, not published again."""
        if isinstance(change, SpecLearned):
            self._complete(change.server, change.kind, list(change.items), on_drift=change.on_drift,
                           source=change.source, viewer=change.viewer, relayed=True)
        elif isinstance(change, InfoNoted):
            self._spec(change.server).info.update(change.info)
        elif isinstance(change, Approved):
            if change.digest:          # for the digest approved, never whatever this process holds
                self.note_approval(change.server, change.kind, change.name, change.digest)
            else:
                self._release(change.server, change.kind, change.name)
        elif isinstance(change, Quarantined):
            self.hold(change.server, change.kind, change.name, change.why)
        else:
            raise TypeError(f"not a spec change: {change!r}")

    def lacks(self, server: str, kind: str, items: list[Any]) -> bool:
        """Whether a snapshot of `kind` names something this store does not know for `server`
        (a read-through applies only such snapshots: extauthz.shared.readthrough)."""
        parse = PARSERS.get(kind)
        if parse is None:
            return False
        spec = self._specs.get(server)
        table = spec.table(kind) if spec is not None else {}
        for item in items:
            entry = parse(item)
            if entry is not None and _key(kind, entry) not in table:
                return True
        return False

    def pin(self, server: str, snapshot: dict[str, Any]) -> None:
        """Install an operator-supplied snapshot. Pinned specs are authoritative: learning never
        replaces them (a server that changes is then drift against the pin)."""
        spec = self._spec(server)
        for kind in KIND_NAMES:
            if kind in snapshot:
                self._replace(spec, kind, snapshot[kind] or [], on_drift="accept", initial=True, source="pinned")
        spec.pinned = True
        self.version += 1

    def apply_page(self, server: str, kind: str, items: list[Any], *, first: bool, last: bool,
                   partition: str = "", on_drift: str = "quarantine",
                   source: str = "traffic", viewer: str | None = None) -> list[DriftEvent]:
        """Merge one page of a `*/list` result. Returns drift events once the snapshot completes.
        `source` says where the list came from (traffic over ext_proc, or active discovery);
        `viewer` who was shown it (the caller; defaults to the partition). Servers list different
        capabilities to different users, so the server-wide spec is the union of what each viewer
        was last shown: a capability leaves it only when every viewer who was shown it has since
        been shown a list without it (never because somebody else was shown less)."""
        if kind not in PARSERS:
            return []
        key = (server, kind, partition)
        if first:
            self._pending.pop(key, None)
        acc = self._pending.get(key)
        if acc is None:
            if not first:
                return []     # a continuation page whose start we never saw: nothing safe to merge
            acc = self._pending[key] = {}
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
        for item in items:
            if isinstance(item, dict) and len(acc) < MAX_ITEMS_PER_KIND:
                acc[id(item)] = item
        if not last:
            return []
        del self._pending[key]
        return self._complete(server, kind, list(acc.values()), on_drift=on_drift, source=source,
                              viewer=partition if viewer is None else viewer, relayed=False)

    def _complete(self, server: str, kind: str, snapshot: list[Any], *, on_drift: str, source: str,
                  viewer: str, relayed: bool) -> list[DriftEvent]:
        if kind not in PARSERS:
            return []
        if not relayed:
            emit(self.on_change, SpecLearned(server, kind, tuple(snapshot), on_drift, source, viewer))
        spec = self._spec(server)
        if spec.pinned:
            return self._compare_to_pin(spec, kind, snapshot)
        held = dict(spec.quarantined) if not relayed and self.on_change is not None else None
        events = self._replace(spec, kind, snapshot, on_drift=on_drift, initial=False, source=source,
                               viewer=viewer)
        if held is not None:
            # A hold made here (drift, a screen finding) is a record of its own, after the snapshot:
            # a replica that loads the snapshot later (with on_drift accept) still holds it.
            for (k, name), why in spec.quarantined.items():
                if held.get((k, name)) != why:
                    emit(self.on_change, Quarantined(server, k, name, why))
        self.version += 1
        return events

    def _replace(self, spec: ServerSpec, kind: str, items: list[Any], *, on_drift: str,
                 initial: bool, source: str, viewer: str = "") -> list[DriftEvent]:
        parse = PARSERS[kind]
        table = spec.table(kind)
        had_snapshot = bool(table) and not initial
        new: dict[str, Any] = {}
        for item in items:
            entry = parse(item)
            if entry is not None:
                new[_key(kind, entry)] = entry
        events: list[DriftEvent] = []
        if had_snapshot:
            for name, entry in new.items():
                old = table.get(name)
                if old is None:
                    events.append(DriftEvent(spec.server, kind, name, "added", False))
                elif old.digest != entry.digest:
                    q = on_drift == "quarantine" and spec.approved.get((kind, name)) != entry.digest
                    if q:
                        spec.quarantined[(kind, name)] = f"changed from {old.digest[:12]} to {entry.digest[:12]}"
                    events.append(DriftEvent(spec.server, kind, name, "changed", q))
        seen = spec.seen_by
        if initial:
            table.clear()
            for k in [k for k in seen if k[0] == kind]:
                del seen[k]
            for k in [k for k in spec.sources if k[0] == kind]:
                del spec.sources[k]
        else:
            for name in [n for n in table if n not in new]:
                viewers = seen.get((kind, name))
                if viewers is not None:
                    viewers.discard(viewer)
                if not viewers:
                    del table[name]
                    seen.pop((kind, name), None)
                    spec.sources.pop((kind, name), None)
        if not initial and self.screen is not None:
            for name, entry in new.items():
                old = table.get(name)
                if (old is None or old.digest != entry.digest) and (kind, name) not in spec.quarantined \
                        and spec.approved.get((kind, name)) != entry.digest:
                    why = self.screen(kind, entry)
                    if why:
                        spec.quarantined[(kind, name)] = why
                        log.warning("quarantined %s %s %s: %s", spec.server, kind, name, why)
        table.update(new)
        for name in new:
            spec.sources[(kind, name)] = source
            viewers = seen.setdefault((kind, name), set())
            if len(viewers) < MAX_VIEWERS:
                viewers.add(viewer)
        for ev in events:
            log.warning("spec drift: %s %s %s %s%s", ev.server, ev.kind, ev.name, ev.change,
                        " (quarantined)" if ev.quarantined else "")
            if self._on_drift:
                self._on_drift(ev)
        return events

    def _compare_to_pin(self, spec: ServerSpec, kind: str, items: list[Any]) -> list[DriftEvent]:
        parse, table = PARSERS[kind], spec.table(kind)
        events = []
        for item in items:
            entry = parse(item)
            if entry is None:
                continue
            old = table.get(_key(kind, entry))
            if old is not None and old.digest != entry.digest:
                events.append(DriftEvent(spec.server, kind, _key(kind, entry), "changed", False))
        for ev in events:
            log.warning("server %s differs from its pinned spec: %s %s", ev.server, ev.kind, ev.name)
            if self._on_drift:
                self._on_drift(ev)
        return events

    def approve(self, server: str, kind: str, name: str) -> bool:
        """Release a quarantined capability. The approval holds for what it approved (this digest):
        the same entry listed again is not screened again; a new change is."""
        ok = self._release(server, kind, name)
        if ok:
            spec = self._specs.get(server)
            emit(self.on_change, Approved(server, kind, name, spec.approved.get((kind, name), "") if spec else ""))
        return ok

    def _release(self, server: str, kind: str, name: str) -> bool:
        spec = self._specs.get(server)
        ok = bool(spec and spec.quarantined.pop((kind, name), None) is not None)
        if ok and spec is not None:
            entry = spec.table(kind).get(name)
            if entry is not None:
                spec.approved[(kind, name)] = entry.digest
        return ok

    def note_approval(self, server: str, kind: str, name: str, digest: str) -> None:
        """Another replica's approval (or one loaded at start): it holds for that digest only. Applied
        before the snapshot arrives, it keeps the snapshot's screen from holding the capability again."""
        spec = self._spec(server)
        spec.approved[(kind, name)] = digest
        entry = spec.table(kind).get(name)
        if entry is not None and (not digest or entry.digest == digest):
            spec.quarantined.pop((kind, name), None)

    def hold(self, server: str, kind: str, name: str, why: str) -> None:
        """A quarantine decided elsewhere (catch-up): kept unless this very digest was approved."""
        spec = self._spec(server)
        entry = spec.table(kind).get(name)
        if entry is not None and spec.approved.get((kind, name)) == entry.digest:
            return
        spec.quarantined[(kind, name)] = why


def _key(kind: str, entry: Any) -> str:
    if kind == "resources":
        return str(entry.uri)
    if kind == "resourceTemplates":
        return str(entry.uri_template)
    return str(entry.name)
