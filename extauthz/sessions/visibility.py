"""What the server listed to each MCP session (stateless traffic: to each caller).

Servers often list different capabilities to different users. The server-wide spec is the union of
what anyone was shown; this store remembers, per (server, session) and per (server, caller), the
names of the last complete `*/list` snapshot of each kind, so that a call to something this session
was never shown is `unknown_capability` (policy `sessions.visibilityBinding`).

Lookup order for one request: the MCP session's own snapshot of that kind, else the caller's (the
most recent snapshot any of its sessions completed), else nothing (the decision core then falls
back to the server-wide spec: a client that never listed this kind cannot have been shown less).

Memory: identical name sets are interned, so a session costs one dict entry and a reference per
kind it listed, not a copy of the list. Bounded by `max_partitions` (oldest first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Protocol

from extauthz.shared.changes import Listed, SessionEnded, Sink, emit

MAX_PARTITIONS = 200_000
MAX_PENDING = 4096
MAX_NAMES = 20_000          # per kind and snapshot, like the spec store


# (session view, caller view): what this session and this caller were listed, per kind
SeenView = tuple[dict[str, frozenset[str]] | None, dict[str, frozenset[str]] | None]


class VisibilityStore(Protocol):
    """The seam: what each session and caller was listed, as the Check path and transports use it."""
    on_change: Sink | None

    def listed(self, server: str, session_id: str, caller: str, kind: str, names: Any) -> None: ...
    def view(self, server: str, session_id: str, caller: str) -> tuple[dict[str, frozenset[str]] | None,
                                                                    dict[str, frozenset[str]] | None]: ...
    def apply(self, change: Listed | SessionEnded) -> None: ...


class Visibility:
    def __init__(self, max_partitions: int = MAX_PARTITIONS) -> None:
        # (server, partition) -> {kind: frozenset(names)}; partition is "s:<session id>" or "c:<caller key>"
        self._seen: OrderedDict[tuple[str, str], dict[str, frozenset[str]]] = OrderedDict()
        self._pending: OrderedDict[tuple[str, str, str], set[str]] = OrderedDict()
        self._interned: dict[frozenset[str], frozenset[str]] = {}
        self.max_partitions = max_partitions
        # (op, payload) for other replicas (set by the workers bus)
        self.on_change: Sink | None = None

    def __len__(self) -> int:
        return len(self._seen)

    def listed_page(self, server: str, session_id: str, caller: str, kind: str, keys: list[str], *,
                    first: bool, last: bool) -> None:
        """One page of a `*/list` result the server sent to this session/caller."""
        part = f"s:{session_id}" if session_id else f"c:{caller}"
        pkey = (server, part, kind)
        if first:
            self._pending.pop(pkey, None)
        acc = self._pending.get(pkey)
        if acc is None:
            if not first:
                return
            acc = self._pending[pkey] = set()
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
        room = MAX_NAMES - len(acc)
        if room > 0:
            acc.update(keys[:room])
        if not last:
            return
        del self._pending[pkey]
        self.listed(server, session_id, caller, kind, acc)

    def listed(self, server: str, session_id: str, caller: str, kind: str, names: Any) -> None:
        """A complete snapshot: it becomes this session's and this caller's view of `kind`; published."""
        names = self._listed(server, session_id, caller, kind, names)
        emit(self.on_change, Listed(server, session_id, caller, kind, tuple(sorted(names))))

    def apply(self, change: Listed | SessionEnded) -> None:
        """Another process's snapshot (applied, not published again), or a confirmed end."""
        if isinstance(change, Listed):
            self._listed(change.server, change.sid, change.caller, change.kind, change.names)
        elif isinstance(change, SessionEnded):
            if change.server:
                self.end_session(change.server, change.sid)
        else:
            raise TypeError(f"not a visibility change: {change!r}")

    def _listed(self, server: str, session_id: str, caller: str, kind: str, listed: Iterable[str]) -> frozenset[str]:
        names = frozenset(listed)
        names = self._interned.setdefault(names, names)
        if len(self._interned) > 4 * self.max_partitions:
            self._interned.clear()        # only an optimisation: drop it rather than grow
        for part in ((f"s:{session_id}",) if session_id else ()) + ((f"c:{caller}",) if caller else ()):
            key = (server, part)
            view = self._seen.get(key)
            if view is None:
                view = self._seen[key] = {}
                while len(self._seen) > self.max_partitions:
                    self._seen.popitem(last=False)
            else:
                self._seen.move_to_end(key)
            view[kind] = names
        return names

    def view(self, server: str, session_id: str, caller: str) -> tuple[dict[str, frozenset[str]] | None,
                                                                    dict[str, frozenset[str]] | None]:
        """(session view, caller view); either may be None. Two dict lookups: the Check path."""
        return (self._seen.get((server, "s:" + session_id)) if session_id else None,
                self._seen.get((server, "c:" + caller)) if caller else None)

    def snapshots(self) -> list[tuple[str, str, str, frozenset[str]]]:
        """(server, partition, kind, names) for every snapshot held (catch-up, republishing)."""
        return [(server, part, kind, names) for (server, part), view in self._seen.items()
                for kind, names in view.items()]

    def end_session(self, server: str, session_id: str) -> None:
        self._seen.pop((server, "s:" + session_id), None)


def shown(view: tuple[dict[str, frozenset[str]] | None, dict[str, frozenset[str]] | None] | None,
          kind: str, key: str) -> bool | None:
    """True/False if this session (else this caller) has a snapshot of `kind`; None if neither has."""
    if view is None:
        return None
    for v in view:
        if v is not None:
            names = v.get(kind)
            if names is not None:
                return key in names
    return None
