"""The inventory store: what one Check records, what the bounds keep, and how `--workers`
reports merge (the Check path itself is exercised through App.check in test_inventory_view)."""

from __future__ import annotations

import gc
import tracemalloc

from extauthz.core.decision import Decision
from extauthz.core.reasons import Reason
from extauthz.identity.caller import Caller
from extauthz.inventory import store
from extauthz.inventory.store import Inventory
from extauthz.mcp.request import HttpRequest
from extauthz.specs.store import DriftEvent


def who(sub: str, *groups: str) -> Caller:
    return Caller("https://issuer", sub, "agent", frozenset(groups), {})


def decide(inv: Inventory, name: str = "lookup_customer", *, caller: Caller | None = None,
           reason: Reason = Reason.ALLOWED, server: str = "crm", method: str = "tools/call",
           version: str = "2025-11-25", authority: str = "crm.example.com", path: str = "/mcp") -> None:
    d = Decision("d", reason, server=server, method=method, name=name, caller=caller, protocol_version=version)
    inv.record(d, HttpRequest("POST", path, authority, {}))
    inv.flush()                 # as App.record_pending does after each batch


def test_one_check_records_server_capability_and_caller():
    inv = Inventory()
    alice, root = who("alice", "support"), who("root", "admin")
    decide(inv, caller=alice)
    decide(inv, caller=alice, version="2026-07-28", path="/mcp?session_id=x")
    decide(inv, "export_customers", caller=alice, reason=Reason.NOT_ALLOWED)
    decide(inv, "export_customers", caller=root)
    s = inv.servers["crm"]
    assert (s.requests, s.allowed, s.denied) == (4, 3, 1)
    assert list(s.versions) == ["2025-11-25", "2026-07-28"]
    assert list(s.paths) == ["/mcp"] and list(s.authorities) == ["crm.example.com"]
    assert s.reasons == {"not_allowed": 1} and s.methods == {"tools/call": 4}
    lookup = inv.usage[("crm", "tools", "lookup_customer")]
    assert (lookup.allowed, lookup.denied) == (2, 0)
    assert list(lookup.callers) == [alice.key]
    assert lookup.group_sets == {frozenset({"support"}): 2}
    export = inv.usage[("crm", "tools", "export_customers")]
    assert (export.allowed, export.denied, export.reasons) == (1, 1, {"not_allowed": 1})
    assert export.group_sets == {frozenset({"admin"}): 1}      # only allowed uses count for suggestions
    assert set(export.callers) == {alice.key, root.key}
    assert inv.callers[alice.key].allowed == 2 and inv.callers[alice.key].denied == 1
    # The caller table's key string is the one every usage record holds (shared, not copied).
    assert next(iter(lookup.callers)) is inv.callers[alice.key].key


def test_a_capability_keeps_its_last_twenty_callers_most_recent_last():
    inv = Inventory()
    for i in range(30):
        decide(inv, caller=who(f"u{i}", "support"))
    decide(inv, caller=who("u12", "support"))
    callers = list(inv.usage[("crm", "tools", "lookup_customer")].callers)
    assert len(callers) == store.MAX_CALLERS_PER_CAPABILITY
    assert callers[-1].split("|")[1] == "u12"
    assert callers[0].split("|")[1] == "u10"           # u0..u9 fell out; u12 moved to the end
    assert len(inv.callers) == 30


def test_a_name_spray_cannot_evict_real_usage(monkeypatch):
    monkeypatch.setattr(store, "MAX_PROBES", 10)
    inv = Inventory()
    decide(inv, caller=who("alice", "support"))
    for i in range(500):
        decide(inv, f"probe_{i}", caller=who("mallory", "support"), reason=Reason.UNKNOWN_CAPABILITY)
    assert ("crm", "tools", "lookup_customer") in inv.usage
    assert len(inv.probes) == 10 and ("crm", "tools", "probe_499") in inv.probes
    assert inv.evicted == 490


def test_a_host_spray_cannot_evict_policy_servers(monkeypatch):
    monkeypatch.setattr(store, "MAX_SHADOW_SERVERS", 5)
    inv = Inventory()
    decide(inv, caller=who("alice", "support"))
    for i in range(50):
        decide(inv, "", server=f"shadow:h{i}.example/mcp", reason=Reason.UNKNOWN_SERVER, authority=f"h{i}.example")
    assert list(inv.servers) == ["crm"]
    assert len(inv.shadow) == 5 and "shadow:h49.example/mcp" in inv.shadow


def test_usage_is_bounded_least_recently_used_first(monkeypatch):
    monkeypatch.setattr(store, "MAX_USAGE", 3)
    inv = Inventory()
    for name in ("a", "b", "c"):
        decide(inv, name, caller=who("alice", "support"))
    decide(inv, "a", caller=who("alice", "support"))        # a is recent again
    decide(inv, "d", caller=who("alice", "support"))        # evicts b
    assert [k[2] for k in inv.usage] == ["c", "a", "d"]


def test_concrete_resource_uris_are_bounded_per_server(monkeypatch):
    monkeypatch.setattr(store, "MAX_URIS_PER_SERVER", 3)
    inv = Inventory()
    for i in range(10):
        decide(inv, f"crm://customers/c-{i}", method="resources/read", caller=who("alice", "support"))
    decide(inv, caller=who("alice", "support"))
    keys = [k for k in inv.usage if k[1] == "resources"]
    assert [k[2] for k in keys] == ["crm://customers/c-0", "crm://customers/c-1", "crm://customers/c-2", ""]
    assert inv.usage[("crm", "resources", "")].allowed == 7    # the rest, counted, not lost
    assert ("crm", "tools", "lookup_customer") in inv.usage


def test_long_attacker_chosen_names_are_clipped():
    inv = Inventory()
    decide(inv, "x" * 5000, caller=who("alice", "support"), reason=Reason.NOT_ALLOWED)
    decide(inv, "", server="shadow:" + "h" * 5000, reason=Reason.UNKNOWN_SERVER)
    (key,) = inv.usage
    assert len(key[2]) == store.MAX_NAME
    assert all(len(k) == store.MAX_NAME for k in inv.shadow)


def test_batches_and_list_calls_count_for_the_server_only():
    inv = Inventory()
    decide(inv, "", method="tools/list", caller=who("alice", "support"))
    decide(inv, "", method="", caller=who("alice", "support"))          # a batch: no single method
    assert inv.servers["crm"].requests == 2 and not inv.usage


def test_drift_is_a_bounded_ring_with_approvals(monkeypatch):
    inv = Inventory()
    for i in range(store.MAX_DRIFT + 10):
        inv.record_drift(DriftEvent("crm", "tools", f"t{i}", "changed", True))
    inv.record_approval("crm", "tool", "t265")
    assert len(inv.drift) == store.MAX_DRIFT
    assert inv.drift[0].name == "t11"
    last = inv.drift[-1]
    assert (last.kind, last.name, last.change, last.quarantined) == ("tools", "t265", "approved", False)


def test_response_findings_are_counts_only():
    inv = Inventory()
    inv.record_response("crm", "tools", "lookup_customer", {"pii.email": 2}, 120)
    inv.record_response("crm", "tools", "lookup_customer", {"pii.email": 1, "secret.api_token": 1}, 80)
    u = inv.usage[("crm", "tools", "lookup_customer")]
    assert (u.responses, u.response_bytes) == (2, 200)
    assert u.findings == {"pii.email": 3, "secret.api_token": 1}
    assert (u.allowed, u.denied) == (0, 0)       # a response is not a call


def _comparable(inv: Inventory) -> dict:
    return {
        "servers": {k: (v.requests, v.allowed, v.denied, sorted(v.versions), sorted(v.methods.items()),
                        sorted(v.reasons.items()), sorted(v.callers)) for k, v in (*inv.servers.items(), *inv.shadow.items())},
        "usage": {k: (v.allowed, v.denied, sorted(v.reasons.items()), sorted(v.callers),
                      sorted((sorted(g), n) for g, n in v.group_sets.items()), sorted(v.subjects.items()),
                      v.responses, sorted(v.findings.items())) for k, v in (*inv.usage.items(), *inv.probes.items())},
        "callers": {k: (v.subject, sorted(v.groups), v.allowed, v.denied) for k, v in inv.callers.items()},
    }


def test_worker_reports_merge_into_what_one_process_would_have_recorded():
    """`--workers N`: each worker drains what it recorded into the stats tick; the supervisor merges."""
    traffic = [
        dict(caller=who("alice", "support")), dict(caller=who("root", "admin")),
        dict(name="export_customers", caller=who("alice", "support"), reason=Reason.NOT_ALLOWED),
        dict(name="nope", caller=who("mallory", "support"), reason=Reason.UNKNOWN_CAPABILITY),
        dict(name="", server="shadow:evil.example/mcp", reason=Reason.UNKNOWN_SERVER),
        dict(name="crm://customers/c-1", method="resources/read", caller=Caller("i", "svc", "c", frozenset(), {})),
        dict(version="2026-07-28", caller=who("bob", "support", "qa")),
    ]
    single, supervisor = Inventory(), Inventory()
    workers = [Inventory(), Inventory()]
    for tick in range(3):
        for i, kw in enumerate(traffic):
            decide(single, **kw)
            decide(workers[(i + tick) % 2], **kw)
        single.record_response("crm", "tools", "lookup_customer", {"pii.email": 1}, 10)
        workers[tick % 2].record_response("crm", "tools", "lookup_customer", {"pii.email": 1}, 10)
        for w in workers:
            supervisor.merge(w.drain())
            assert w.drain() is None           # drained: the next tick ships only what is new
    assert _comparable(supervisor) == _comparable(single)
    supervisor.merge({"servers": {"crm": {"first": "not a number"}}})   # a bad report is ignored, not fatal
    assert _comparable(supervisor) == _comparable(single)


def test_memory_per_record_is_bounded():
    """The numbers in the store's module doc: bytes per capability record (with 20 callers) and per
    caller, measured with tracemalloc on the real record path."""
    callers = [who(f"user-{i}", "support", "team-a") for i in range(store.MAX_CALLERS_PER_CAPABILITY)]
    inv = Inventory()
    for c in callers:                              # callers exist before we measure capabilities
        decide(inv, "warmup", caller=c)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    n = 500
    for i in range(n):
        for c in callers:
            decide(inv, f"tool_{i:04d}", caller=c)
    gc.collect()
    per_capability = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename")) / n
    tracemalloc.stop()

    inv2 = Inventory()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    m = 2000
    for i in range(m):
        decide(inv2, "lookup_customer", caller=Caller("https://issuer.example.com", f"user-{i:05d}", "agent",
                                                      frozenset({"support"}), {}))
    gc.collect()
    per_caller = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename")) / m
    tracemalloc.stop()
    print(f"inventory: {per_capability:.0f} B per capability record with 20 callers, {per_caller:.0f} B per caller")
    assert 300 < per_capability < 4096
    assert 100 < per_caller < 1024


def test_recording_never_raises_into_the_check_path(caplog):
    inv = Inventory()
    d = Decision("d", Reason.ALLOWED, server="crm", method="tools/call", name=["not", "a", "name"])  # type: ignore[arg-type]
    inv.record(d, HttpRequest("POST", "/mcp", "crm.example.com", {}))
    inv.flush()
    assert inv.servers["crm"].requests == 1 and not inv.usage
    broken = HttpRequest("POST", None, "crm.example.com", {})  # type: ignore[arg-type]
    inv.record(Decision("d", Reason.ALLOWED, server="crm", method="tools/call", name="x"), broken)
    inv.flush()
    inv.record(Decision("d", Reason.ALLOWED, server="crm", method="tools/call", name="x"), broken)
    inv.flush()
    assert inv.errors == 2
    assert len([r for r in caplog.records if "could not record" in r.message]) == 1
