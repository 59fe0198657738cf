"""Learned and pinned specs, per server. Bounded in memory; a Redis-backed store can slot in later
behind the same methods (`get`, `apply_page`, `note_info`, `pin`)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from extauthz.specs.model import PARSERS, KINDS, ServerSpec

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


class SpecStore:
    """What each server published. A list request without a cursor starts a new snapshot for that
    (server, kind, partition); pages merge; the snapshot replaces the kind when the last page lands."""

    def __init__(self, on_drift: Callable[[DriftEvent], None] | None = None) -> None:
        self._specs: OrderedDict[str, ServerSpec] = OrderedDict()
        self._pending: OrderedDict[tuple[str, str, str], dict[int, Any]] = OrderedDict()
        self._on_drift = on_drift
        # Called with (op, payload) for every change another replica must also make; set by the
        # workers bus. Replicated changes are applied with `replicated=True` and not re-published.
        self.on_change: Callable[[str, dict[str, Any]], None] | None = None
        self.version = 0      # bumped on every change: cheap staleness check for caches
        # screen(kind, entry) -> why it must be held (quarantined) before first use, or None: set by
        # the app (defaults.hiddenInstructions: quarantine). Not applied to pinned specs.
        self.screen: Callable[[str, Any], str | None] | None = None

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

    def note_info(self, server: str, info: dict[str, Any], *, replicated: bool = False) -> None:
        """Remember serverInfo / protocolVersion / capabilities from initialize or server/discover."""
        self._spec(server).info.update(info)
        if self.on_change is not None and not replicated:
            self.on_change("info", {"server": server, "info": info})

    def pin(self, server: str, snapshot: dict[str, Any]) -> None:
        """Install an operator-supplied snapshot. Pinned specs are authoritative: learning never
        replaces them (a server that changes is then drift against the pin)."""
        spec = self._spec(server)
        for kind in KINDS:
            if kind in snapshot:
                self._replace(spec, kind, snapshot[kind] or [], on_drift="accept", initial=True, source="pinned")
        spec.pinned = True
        self.version += 1

    def apply_page(self, server: str, kind: str, items: list[Any], *, first: bool, last: bool,
                   partition: str = "", on_drift: str = "quarantine", replicated: bool = False,
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
        snapshot = list(acc.values())
        if self.on_change is not None and not replicated:
            self.on_change("spec", {"server": server, "kind": kind, "items": snapshot, "on_drift": on_drift,
                                    "source": source, "viewer": partition if viewer is None else viewer})
        spec = self._spec(server)
        if spec.pinned:
            return self._compare_to_pin(spec, kind, snapshot)
        events = self._replace(spec, kind, snapshot, on_drift=on_drift, initial=False, source=source,
                               viewer=partition if viewer is None else viewer)
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

    def approve(self, server: str, kind: str, name: str, *, replicated: bool = False) -> bool:
        """Release a quarantined capability. The approval holds for what it approved (this digest):
        the same entry listed again is not screened again; a new change is."""
        spec = self._specs.get(server)
        ok = bool(spec and spec.quarantined.pop((kind, name), None) is not None)
        if ok and spec is not None:
            entry = spec.table(kind).get(name)
            if entry is not None:
                spec.approved[(kind, name)] = entry.digest
        if ok and self.on_change is not None and not replicated:
            self.on_change("approve", {"server": server, "kind": kind, "name": name,
                                       "digest": spec.approved.get((kind, name), "") if spec else ""})
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
        return entry.uri
    if kind == "resourceTemplates":
        return entry.uri_template
    return entry.name
