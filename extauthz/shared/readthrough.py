"""Read-through for denials our own feed lag can cause (`--redis` only).

A client may list tools through one replica and call through another before the change feed has
brought the new spec (or what the session was listed) there: the second replica would deny an
honest call `unknown_capability` and score it as an unknown name. Before such a deny stands,
`App.confirm_claim` (the same pending-decision path as a new session's first claim) asks this
class to read the durable keys of that server (spec snapshots, holds, approvals) or of that
session/caller (visibility) once, applies what Redis holds that is newer here through the stores'
public `apply`, and decides again.

Bounds, fail closed: one round trip, the claim's budget (`cfg.timeout`, 0.25 s); Redis down, slow
or erroring: the deny stands. Concurrent read-throughs of one key share one read, and a read
leaves the key fresh for FRESH_FOR seconds (or until the feed brings a change of it), so probing
unknown names costs at most one Redis read per server (per session and caller for visibility)
and interval. "Newer": Redis holds the latest durable write of every replica (the feed entry of a
change is written after its durable key), so a field differs from ours only because the feed has
not brought it yet, or because our own write of it is still queued: fields with a write of ours
pending are skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from extauthz.shared.changes import Approved, Change, Listed, Quarantined, SpecLearned

if TYPE_CHECKING:
    from extauthz.shared.redis import RedisShared

log = logging.getLogger("extauthz.shared")

FRESH_FOR = 1.0            # seconds a read leaves its key fresh (no second read for it meanwhile)
MAX_REMEMBERED = 10_000    # fresh keys remembered (oldest dropped: at worst one more read)
OUTCOMES = ("found", "nothing", "down")

# Every field of one server in the spec, quarantine and approved hashes, in one round trip (the
# hashes are shared by all servers; fields are JSON lists starting with the server name).
_SCAN = """
local out = {}
for i, key in ipairs(KEYS) do
  local got, cursor = {}, "0"
  repeat
    local r = redis.call('HSCAN', key, cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
    cursor = r[1]
    for j = 1, #r[2] do got[#got + 1] = r[2][j] end
  until cursor == "0"
  out[i] = got
end
return out
"""


class ReadThrough:
    def __init__(self, shared: RedisShared) -> None:
        self.shared = shared
        self.counts = dict.fromkeys(OUTCOMES, 0)     # per round trip made (`shared_readthrough_total`)
        self._fresh: OrderedDict[tuple[str, ...], float] = OrderedDict()
        self._reading: dict[tuple[str, ...], asyncio.Task[str]] = {}

    # -- what to read -------------------------------------------------------------------------------
    def keys(self, server: str, sid: str, caller: str, *, unseen: bool, visibility: bool) -> list[tuple[str, ...]]:
        """The keys a denial needs read, none fresh (empty: the deny stands as decided). `unseen`:
        the server publishes the name, this session was never listed it; else the name is unknown
        (then the session's visibility too, when the policy binds it: the new spec may come with a
        new list)."""
        now = time.monotonic()
        vis = [("vis", server, p) for p in _parts(sid, caller)] if unseen or visibility else []
        if unseen:
            return [k for k in vis if not self._is_fresh(k, now)]
        spec = ("spec", server)
        if self._is_fresh(spec, now):
            return []               # an unknown name again: Redis had nothing newer a moment ago
        return [spec, *(k for k in vis if not self._is_fresh(k, now))]

    def _is_fresh(self, key: tuple[str, ...], now: float) -> bool:
        at = self._fresh.get(key)
        return at is not None and now - at < FRESH_FOR

    def heard(self, change: Change) -> None:
        """A feed entry applied here: what it concerns may have moved on since the last read."""
        if isinstance(change, (SpecLearned, Approved, Quarantined)):
            self._fresh.pop(("spec", change.server), None)
        elif isinstance(change, Listed):
            for p in _parts(change.sid, change.caller):
                self._fresh.pop(("vis", change.server, p), None)

    # -- reading ------------------------------------------------------------------------------------
    async def read(self, keys: list[tuple[str, ...]]) -> bool:
        """Read `keys` (joining reads of them already under way: counted once, by whoever started
        them), apply what is newer. True when something was applied. Never raises; gives up after
        the claim's budget."""
        if not self.shared.connected:
            self.counts["down"] += 1
            return False
        tasks, started = [], False
        for k in keys:
            t = self._reading.get(k)
            if t is None:
                t = self._reading[k] = asyncio.create_task(self._read_one(k))
                t.add_done_callback(self._done(k))
                started = True
            tasks.append(t)
        try:
            got = await asyncio.wait_for(asyncio.gather(*map(asyncio.shield, tasks)), self.shared.cfg.timeout)
        except TimeoutError:
            got = ["down"]
        outcome = "down" if "down" in got else "found" if "found" in got else "nothing"
        if started:
            self.counts[outcome] += 1
        return "found" in got

    def _done(self, key: tuple[str, ...]) -> Callable[[asyncio.Task[str]], None]:
        def done(_t: asyncio.Task[str]) -> None:
            self._reading.pop(key, None)
        return done

    async def _read_one(self, key: tuple[str, ...]) -> str:
        s = self.shared
        # The claims' pool and slots (RedisShared.claim_slot): a burst of reads waits for a connection
        # within the budget and never takes the feed's; a slow answer fails this read alone.
        try:
            async with s.claim_slot():
                if key[0] == "spec":
                    found = await asyncio.wait_for(self._spec(key[1]), s.cfg.timeout)
                else:
                    found = await asyncio.wait_for(self._vis(key[1], key[2]), s.cfg.timeout)
        except (TimeoutError, RedisTimeoutError):       # also NoFreeSlot: no claim connection came free
            return "down"
        except (RedisError, OSError) as e:
            s._down(e)
            return "down"
        except (ValueError, TypeError, KeyError) as e:      # a record that does not fit: nothing applied
            log.warning("read-through of %s: unreadable record (%s)", key, e)
            return "down"
        self._fresh[key] = time.monotonic()
        self._fresh.move_to_end(key)
        while len(self._fresh) > MAX_REMEMBERED:
            self._fresh.popitem(last=False)
        return "found" if found else "nothing"

    async def _spec(self, server: str) -> bool:
        s, specs = self.shared, self.shared.app.specs
        pattern = "[" + _glob_escape(orjson.dumps(server).decode()) + ",*"
        pattern = "\\" + pattern            # the field's leading '[' literally
        before, generation = s.pending_own(server), s.published[server]
        approved, spec_fields, held = await s.rc.eval(_SCAN, 3, s._k("approved"), s._k("spec"), s._k("quarantine"),
                                                     pattern)
        if s.published[server] != generation:
            return False            # changed here meanwhile: what was read may be older; the deny stands
        pending = before | s.pending_own(server)
        local = specs.get(server)
        changes: list[Approved | SpecLearned] = []
        for f, digest in _pairs(approved):            # approvals before snapshots, as at load
            _, kind, name = orjson.loads(f)
            if ("approve", kind) not in pending and (local is None or local.approved.get((kind, name)) != _s(digest)):
                changes.append(Approved(server, kind, name, _s(digest)))
        on_drift = s.app.ctx.policy.defaults.on_drift if s.app.ctx is not None else "quarantine"
        for f, items in _pairs(spec_fields):
            _, kind, viewer, source = orjson.loads(f)
            snapshot = orjson.loads(items)
            if ("spec", kind) not in pending and specs.lacks(server, kind, snapshot):
                changes.append(SpecLearned(server, kind, tuple(snapshot), on_drift, source, viewer or "replica"))
        for c in changes:
            specs.apply(c)
        found = bool(changes)
        local = specs.get(server)
        for f, why in _pairs(held):                    # holds after snapshots: held as the writer held them
            _, kind, name = orjson.loads(f)
            if ("approve", kind) not in pending and (local is None or (kind, name) not in local.quarantined):
                specs.apply(Quarantined(server, kind, name, _s(why)))
                found = True
        return found

    async def _vis(self, server: str, part: str) -> bool:
        s, vis = self.shared, self.shared.app.visibility
        before, generation = s.pending_own(server), s.published[server]
        got = await s.rc.hgetall(s._vis(server, part))
        if s.published[server] != generation:
            return False
        sid, caller = (part[2:], "") if part.startswith("s:") else ("", part[2:])
        pending = before | s.pending_own(server)
        current = vis.view(server, sid, caller)
        mine = current[0] if sid else current[1]
        found = False
        for raw_kind, raw_names in (got or {}).items():
            kind, names = _s(raw_kind), frozenset(orjson.loads(raw_names))
            if ("visible", kind) in pending or (mine is not None and mine.get(kind) == names):
                continue
            vis.apply(Listed(server, sid, caller, kind, tuple(sorted(names))))
            found = True
        return found

    def status(self) -> dict[str, int]:
        return dict(self.counts)


def _parts(sid: str, caller: str) -> list[str]:
    return ([f"s:{sid}"] if sid else []) + ([f"c:{caller}"] if caller else [])


def _pairs(flat: Any) -> list[tuple[Any, Any]]:
    flat = list(flat or ())
    return list(zip(flat[0::2], flat[1::2], strict=False))   # an odd tail (never sent) is dropped


def _glob_escape(s: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in s)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)
