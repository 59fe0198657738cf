"""The actor view over replicas (`--redis`): this replica's view (one process, or the supervisor's
merged workers) joined with every replica's decisions of that caller from the shared actor log
(`extauthz.shared.actor_log`).

Local facts come first and win a tie (they know the worker and the risk stage); the shared log
adds what other replicas decided, deduplicated by decision id and ordered by time. When Redis
does not answer the view is still served, from this replica alone, with `partial` naming why.
"""

from __future__ import annotations

from typing import Any

from extauthz.admin.actor_view import _wall
from extauthz.admin.actors import MAX_HITS, ActorSource, Hit, _event_of
from extauthz.shared.actor_log import ActorLog, ActorLogUnavailable, caller_of


class SharedActors:
    """`ActorSource` over `inner` and the shared actor log."""

    def __init__(self, inner: ActorSource, log: ActorLog) -> None:
        self.inner, self.log = inner, log

    async def find(self, query: str) -> list[Hit]:
        hits = list(await self.inner.find(query))
        try:
            remote = await self.log.find(query)
        except ActorLogUnavailable:
            return hits       # what this replica knows; the page of a hit says it is partial
        have = {h.caller for h in hits}
        for caller, via, did in remote:
            if caller and caller not in have and len(hits) < MAX_HITS:
                have.add(caller)
                hits.append(Hit(caller, via, did))
        return hits

    async def facts(self, caller: str) -> dict[str, Any]:
        local = await self.inner.facts(caller)
        remote, partial = await self.remote(caller)
        return merge_shared(local, remote, self.log.keep, partial)

    async def remote(self, caller: str) -> tuple[list[dict[str, Any]], str]:
        """(the shared log's records of `caller`, "" or why they could not be read)."""
        try:
            return await self.log.read(caller), ""
        except ActorLogUnavailable as e:
            return [], f"the shared decision log (Redis) did not answer ({e}): other replicas' decisions are missing"

    async def timeline_events(self, callers: list[str],
                              events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
        """`/v1/callers/{id}/timeline`: the local risk-timeline events plus the other replicas'
        decisions of these callers (as events without a stage), by time, each decision once."""
        out = {e["decisionId"]: e for e in events}
        partial = ""
        for caller in callers:
            recs, why = await self.remote(caller)
            partial = partial or why
            for r in recs:
                e = _event_of(r)
                out.setdefault(e["decisionId"], {**e, "time": round(_wall(r.get("time")), 3),
                                                 "caller": caller, "replica": r.get("replica", "")})
        return sorted(out.values(), key=lambda e: (_wall(e["time"]), e["decisionId"])), partial

    async def callers_named(self, ident: str) -> list[str]:
        """Callers the shared log knows by key or subject (for a caller unknown here)."""
        try:
            return [c for c, via, _ in await self.log.find(ident) if via in ("caller", "subject")]
        except ActorLogUnavailable:
            return []


def merge_shared(local: dict[str, Any], remote: list[dict[str, Any]], keep: int, partial: str = "") -> dict[str, Any]:
    """`local` facts with `remote` decision records added: deduplicated by decision id (the local
    copy kept), ordered by time; `shared` says the bound and `partial` why it is incomplete."""
    out = dict(local)
    caller = str(local.get("caller", ""))
    mine = [r for r in remote if caller_of(r) == caller]
    seen: dict[str, dict[str, Any]] = {}
    for r in [*local.get("decisions", []), *mine]:
        did = str(r.get("decision_id", ""))
        if did and did not in seen:
            seen[did] = r
    decisions = sorted(seen.values(), key=lambda r: (_wall(r.get("time")), str(r.get("decision_id", ""))))
    out["decisions"] = decisions
    out["known"] = bool(local.get("known")) or bool(mine)
    if mine:
        # The inventory counts what this replica decided; with other replicas' decisions on the
        # page the totals are at least what is kept.
        ident = dict(local.get("identity") or {})
        allowed = sum(1 for r in decisions if r.get("decision") == "allow")
        ident["allowed"] = max(int(ident.get("allowed", 0)), allowed)
        ident["denied"] = max(int(ident.get("denied", 0)), len(decisions) - allowed)
        out["identity"] = ident
    out["shared"] = {"keep": keep, "records": len(mine),
                     "replicas": sorted({str(r.get("replica", "")) for r in mine if r.get("replica")})}
    out["partial"] = partial
    return out


def with_shared_log(app: Any, inner: ActorSource, shared: Any, *, write: bool) -> tuple[ActorSource, ActorLog | None]:
    """`inner`, joined with the shared actor log when `shared` is Redis. `write`: this process
    decides (a replica or a worker of one), so its decisions go to the log too."""
    if shared is None or not getattr(shared, "remote", False):
        return inner, None
    log = ActorLog(shared)
    if write:
        app.decisions.tap = log.add
        log.start()
    return SharedActors(inner, log), log
