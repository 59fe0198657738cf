"""Active discovery inside `extauthz serve`: every policy server with an `upstream` has its spec
fetched at start-up, every `interval` seconds (jittered), and on a spec miss.

A spec miss is a Check for a server that is still *waiting* (never discovered since start-up or
since its `upstream` changed) whose request needs a kind the store has nothing for: a
`tools/call` before any `tools/list` was learned or discovered. The Check then awaits that
server's discovery for at most `miss_timeout` (and never past the gRPC deadline Envoy set, minus a
margin) before deciding. Results are cached:

* one run per server at a time; concurrent misses share it (`asyncio.shield`, so one waiter's
  timeout never cancels the run, which goes on to `run_timeout` and still lands in the store);
* a server discovered less than `min_interval` ago is not discovered again on a miss (and once
  discovered it is no longer waiting at all: later changes come from the periodic refresh);
* a failure blocks runs on a miss for a backoff that doubles from `backoff_first` to
  `backoff_max`, so a dead or black-holed upstream costs at most one Check per backoff a wait;
  the other Checks meanwhile decide at once.

The common path costs the Check one truthiness test (`waiting` is empty once every upstream has
been discovered); a server that is waiting costs a memoised route lookup, and only a request that
needs a kind the store lacks costs a parse of its body.

Everything discovered goes through `SpecStore.apply_page` (partition "discovery", source
"discovery") and `note_info`, which publish to the other `--workers` like anything learned from
traffic. With workers, only worker 0 runs the start-up and periodic discovery; every worker runs
on-miss discovery (the Check that needs it landed there), and a worker stops waiting for a
server as soon as another worker's discovery of it reaches its store (`info["discovery"]`).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from extauthz.mcp.kinds import KIND_NAMES as KINDS

log = logging.getLogger("extauthz.discovery")

INTERVAL = 600.0            # periodic refresh, seconds (jittered by JITTER either way)
JITTER = 0.1
MISS_TIMEOUT = 2.0          # longest a Check waits for an on-miss discovery
DEADLINE_MARGIN = 0.25      # ...and it leaves this much of Envoy's ext_authz timeout to decide and answer
RUN_TIMEOUT = 10.0          # one discovery run, all lists included
MIN_INTERVAL = 30.0         # no on-miss run for a server discovered this recently
BACKOFF_FIRST = 1.0         # after a failure, no on-miss run for 1 s, then 2, 4, ... up to BACKOFF_MAX
BACKOFF_MAX = 60.0
TICK = 1.0                  # the scheduler's poll (policy reloads, due refreshes)
MAX_SNIFF_MESSAGES = 256
INFO_KEY = "discovery"      # spec info: {"url", "at", "transport", "protocolVersion"} of the last run

# What a request needs from the spec: groups of kinds, a group is present when any kind in it is.
TOOLS, PROMPTS, TEMPLATES = ("tools",), ("prompts",), ("resourceTemplates",)
RESOURCES = ("resources", "resourceTemplates")
_NEEDS = {"tools/call": TOOLS, "prompts/get": PROMPTS, "resources/read": RESOURCES,
          "resources/subscribe": RESOURCES, "resources/unsubscribe": RESOURCES}

Fetch = Callable[[str, float], Awaitable[Any]]       # (upstream, timeout) -> Snapshot


async def fetch_snapshot(upstream: str, timeout: float) -> Any:
    """The real fetch: `extauthz.discovery.client.discover` (imported lazily: the SDK is large)."""
    from extauthz.discovery.client import discover
    return await discover(upstream, timeout=timeout)


def needed_kinds(body: bytes) -> list[tuple[str, ...]]:
    """The spec kinds the JSON-RPC message(s) in `body` need. Best effort and lenient: the decision
    core does the strict parse; anything unreadable here needs nothing."""
    try:
        doc = orjson.loads(body)
    except (orjson.JSONDecodeError, TypeError):
        return []
    msgs = doc[:MAX_SNIFF_MESSAGES] if isinstance(doc, list) else [doc]
    out: list[tuple[str, ...]] = []
    for m in msgs:
        if not isinstance(m, dict):
            continue
        method, params = m.get("method"), m.get("params")
        need = _NEEDS.get(method) if isinstance(method, str) else None
        if need is None and isinstance(params, dict):
            if method == "completion/complete":
                ref = params.get("ref")
                kind = ref.get("type") if isinstance(ref, dict) else None
                need = PROMPTS if kind == "ref/prompt" else TEMPLATES if kind == "ref/resource" else None
            elif method == "subscriptions/listen":
                n = params.get("notifications")
                need = RESOURCES if isinstance(n, dict) and n.get("resourceSubscriptions") else None
        if need is not None and need not in out:
            out.append(need)
    return out


@dataclass(slots=True, eq=False)
class ServerState:
    name: str
    upstream: str
    inflight: asyncio.Task[bool] | None = None
    ok_at: float | None = None       # last successful run (monotonic)
    failures: int = 0                # consecutive
    retry_at: float = 0.0            # no on-miss run before this (failure backoff)
    next_at: float = 0.0             # next scheduled run
    last_error: str = ""


class Discoverer:
    def __init__(self, app: Any, *, fetch: Fetch = fetch_snapshot, interval: float = INTERVAL,
                 jitter: float = JITTER, miss_timeout: float = MISS_TIMEOUT, run_timeout: float = RUN_TIMEOUT,
                 min_interval: float = MIN_INTERVAL, backoff_first: float = BACKOFF_FIRST,
                 backoff_max: float = BACKOFF_MAX, scheduled: bool = True,
                 clock: Callable[[], float] = time.monotonic, rand: Callable[[], float] = random.random) -> None:
        self.app = app
        self.fetch = fetch
        self.interval, self.jitter = interval, jitter
        self.miss_timeout, self.run_timeout, self.min_interval = miss_timeout, run_timeout, min_interval
        self.backoff_first, self.backoff_max = backoff_first, backoff_max
        self.scheduled = scheduled and interval > 0
        self.clock, self.rand = clock, rand
        self.waiting: set[str] = set()          # read by every Check: keep it empty when nothing waits
        self.states: dict[str, ServerState] = {}
        self.runs = 0                           # runs started (for tests and the log)
        self._policy: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        ctx = getattr(app, "ctx", None)
        if ctx is not None:
            self.sync(ctx.policy)

    @classmethod
    def from_env(cls, app: Any, *, scheduled: bool = True, env: dict[str, str] | None = None) -> Discoverer:
        """Knobs for `serve` (the policy format has no place for them):
        EXTAUTHZ_DISCOVERY_INTERVAL (seconds; 0 = on a miss only), EXTAUTHZ_DISCOVERY_MISS_TIMEOUT,
        EXTAUTHZ_DISCOVERY_TIMEOUT (one run)."""
        e = os.environ if env is None else env

        def num(name: str, default: float) -> float:
            raw = e.get(name, "")
            try:
                v = float(raw) if raw.strip() else default
            except ValueError:
                log.error("%s=%r is not a number; using %g", name, raw, default)
                return default
            return v if v >= 0 else default

        return cls(app, interval=num("EXTAUTHZ_DISCOVERY_INTERVAL", INTERVAL),
                   miss_timeout=num("EXTAUTHZ_DISCOVERY_MISS_TIMEOUT", MISS_TIMEOUT),
                   run_timeout=num("EXTAUTHZ_DISCOVERY_TIMEOUT", RUN_TIMEOUT) or RUN_TIMEOUT, scheduled=scheduled)

    # -- which servers ---------------------------------------------------------------------------
    def sync(self, policy: Any) -> None:
        """Follow the policy: a server whose `upstream` appeared or changed waits for discovery."""
        targets = {s.name: s.upstream for s in policy.servers if getattr(s, "upstream", None)}
        for name, st in list(self.states.items()):
            if targets.get(name) != st.upstream:
                if st.inflight is not None:
                    st.inflight.cancel()
                del self.states[name]
                self.waiting.discard(name)
        now = self.clock()
        for name, upstream in targets.items():
            if name not in self.states:
                self.states[name] = ServerState(name, upstream, next_at=now)
                if not self._discovered_elsewhere(self.states[name]):
                    self.waiting.add(name)
        self._policy = policy

    def _discovered_elsewhere(self, st: ServerState) -> bool:
        """Another worker (or an earlier run) already put this upstream's spec into the store."""
        spec = self.app.specs.get(st.name)
        mark = spec.info.get(INFO_KEY) if spec is not None else None
        return isinstance(mark, dict) and mark.get("url") == st.upstream

    # -- runs ------------------------------------------------------------------------------------
    def start(self, name: str, *, force: bool = False) -> asyncio.Task[bool] | None:
        """The server's in-flight run, a new one, or None when the cache says not now (discovered
        less than `min_interval` ago, or failed within the backoff); `force` skips the cache."""
        st = self.states.get(name)
        if st is None:
            return None
        if st.inflight is not None:
            return st.inflight
        now = self.clock()
        if not force:
            if now < st.retry_at:
                return None
            if st.ok_at is not None and now - st.ok_at < self.min_interval:
                return None
        self.runs += 1
        task = st.inflight = asyncio.get_running_loop().create_task(self._run(st), name=f"discover {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, st: ServerState) -> bool:
        ok, error = False, ""
        try:
            async with asyncio.timeout(self.run_timeout + 1.0):     # the fetch bounds itself; this is a backstop
                snap = await self.fetch(st.upstream, self.run_timeout)
            if self.states.get(st.name) is st:                     # not dropped by a policy reload meanwhile
                self._apply(st, snap)
            ok = True
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            error = f"{st.upstream}: no complete answer within {self.run_timeout:g}s"
        except Exception as e:  # noqa: BLE001 - discovery never takes the service down
            error = str(e) or type(e).__name__
            if type(e).__name__ != "DiscoveryError":
                log.exception("discovery of %s failed", st.name)
        finally:
            if st.inflight is asyncio.current_task():
                st.inflight = None
        if self.states.get(st.name) is not st:
            return ok                       # the policy dropped or re-pointed this server meanwhile
        now = self.clock()
        if ok:
            st.ok_at, st.failures, st.retry_at, st.last_error = now, 0, 0.0, ""
            st.next_at = now + self.interval * (1.0 + self.jitter * (2.0 * self.rand() - 1.0))
            self.waiting.discard(st.name)
        else:
            st.failures += 1
            backoff = min(self.backoff_max, self.backoff_first * 2.0 ** (st.failures - 1))
            st.retry_at = st.next_at = now + backoff
            st.last_error = error
            log.warning("discovery of %s failed (%d in a row, next try in %gs): %s",
                        st.name, st.failures, backoff, error)
        return ok

    def _apply(self, st: ServerState, snap: Any) -> None:
        store = self.app.specs
        ctx = self.app.ctx
        on_drift = ctx.policy.defaults.on_drift if ctx is not None else "quarantine"
        counts = []
        for kind in KINDS:
            if snap.complete(kind):
                store.apply_page(st.name, kind, snap.lists[kind], first=True, last=True, partition="discovery",
                                 on_drift=on_drift, source="discovery")
                counts.append(f"{len(snap.lists[kind])} {kind}")
            elif kind in snap.lists:
                why = snap.errors.get(kind) or "truncated at a page/item bound"
                log.warning("discovery of %s: %s not applied: %s", st.name, kind, why)
        info: dict[str, Any] = {"protocolVersion": snap.protocol_version, "capabilities": snap.capabilities}
        if snap.server_info:
            info["serverInfo"] = snap.server_info
        if snap.instructions:
            info["instructions"] = snap.instructions
        if snap.supported_versions:
            info["supportedVersions"] = snap.supported_versions
        # Last, so another worker that sees this mark already has the lists (same ordered relay).
        info[INFO_KEY] = {"url": st.upstream, "transport": snap.transport, "protocolVersion": snap.protocol_version,
                          "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        store.note_info(st.name, info)
        log.info("discovered %s at %s (%s): %s", st.name, st.upstream, snap.protocol_version,
                 ", ".join(counts) or "no lists")

    # -- the Check path --------------------------------------------------------------------------
    async def before_check(self, http: Any, time_remaining: float | None = None) -> None:
        """Called by Check only while `waiting` is not empty. Returns once the spec this request
        needs is there, or could not be had within the bound. Never raises (but a cancelled Check
        is cancelled)."""
        try:
            task, wait = self._miss(http, time_remaining)
        except Exception:  # noqa: BLE001
            log.exception("on-miss discovery check failed; deciding with what we have")
            return
        if task is None or wait <= 0:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            log.info("on-miss discovery still running after %.2fs; deciding with what we have", wait)
        except asyncio.CancelledError:
            if task.cancelled() and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                return          # the run was cancelled (policy reload), not this Check
            raise
        except Exception:  # noqa: BLE001 - the run logs its own failure
            pass

    def _miss(self, http: Any, time_remaining: float | None) -> tuple[asyncio.Task[bool] | None, float]:
        ctx = self.app.ctx
        if ctx is None or http.method != "POST":
            return None, 0.0
        server = ctx.policy.server_for(http.authority, http.path)
        if server is None or server.name not in self.waiting:
            return None, 0.0
        st = self.states.get(server.name)
        if st is None:
            return None, 0.0
        if self._discovered_elsewhere(st):
            self.waiting.discard(st.name)
            return None, 0.0
        if st.inflight is None and self.clock() < st.retry_at:
            return None, 0.0                # failed recently: decide now, don't even parse
        spec = self.app.specs.get(st.name)
        if spec is not None and all(spec.table(k) for k in KINDS):
            return None, 0.0                # nothing missing (learned from traffic, or pinned)
        needs = needed_kinds(http.body)
        if not needs:
            return None, 0.0
        if spec is not None and all(any(spec.table(k) for k in group) for group in needs):
            return None, 0.0                # learned from traffic already
        wait = self.miss_timeout
        if time_remaining is not None:
            wait = min(wait, time_remaining - DEADLINE_MARGIN)
        return self.start(st.name), wait    # no time to wait: the run still helps the next Check

    # -- start-up and periodic -------------------------------------------------------------------
    async def run(self, *, wait_for_bus: bool = False) -> None:
        """The scheduler: follow policy reloads, notice other workers' discoveries, and (when
        `scheduled`) discover each server at start-up and every `interval`. Cancel to stop."""
        from extauthz.discovery.client import silence_sdk_logs
        silence_sdk_logs()          # failures are logged here, one line each
        if wait_for_bus:
            # A worker publishes what it discovers on the bus: start once it is connected.
            for _ in range(100):
                if self.app.specs.on_change is not None:
                    break
                await asyncio.sleep(0.05)
        while True:
            try:
                self.tick()
            except Exception:  # noqa: BLE001
                log.exception("discovery scheduler failed; retrying")
            await asyncio.sleep(TICK)

    def tick(self) -> None:
        ctx = self.app.ctx
        if ctx is not None and ctx.policy is not self._policy:
            self.sync(ctx.policy)
        now = self.clock()
        for st in list(self.states.values()):
            if st.name in self.waiting and st.inflight is None and self._discovered_elsewhere(st):
                self.waiting.discard(st.name)
            if self.scheduled and st.inflight is None and now >= st.next_at:
                self.start(st.name, force=True)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
