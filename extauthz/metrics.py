"""Prometheus metrics (DESIGN.md names, prefix mcp_extauthz_). Label values are bounded: unknown
methods and shadow servers collapse into one value so an attacker cannot explode cardinality."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from extauthz import __version__
from extauthz.mcp.kinds import BY_CAPABILITY_METHOD, KIND_NAMES
from extauthz.mcp.methods import FREE_METHODS, NOTIFICATIONS

_KNOWN_METHODS = frozenset({*BY_CAPABILITY_METHOD, *FREE_METHODS, *NOTIFICATIONS, "completion/complete",
                            "subscriptions/listen", "GET", "DELETE", ""})


class _SpecCollector:
    def __init__(self, specs: Callable[[], Iterable[Any]]) -> None:
        self._specs = specs

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("mcp_extauthz_spec_capabilities", "Capabilities in each server's spec",
                              labels=["server", "kind"])
        for spec in self._specs():
            for kind in KIND_NAMES:
                g.add_metric([spec.server, kind], len(spec.table(kind)))
        yield g


BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class _CheckCollector:
    """The two per-Check metrics, kept as plain ints and exposed at scrape time.

    prometheus_client's Counter/Histogram take a lock and walk label tuples on every update;
    Checks all run on the event loop thread, so lock-free increments are both safe and the
    cheapest thing on the hot path."""

    def __init__(self) -> None:
        self.decisions: dict[tuple[str, str, str, str], int] = {}
        self.bucket_counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.count = 0

    def collect(self) -> Iterator[Metric]:
        c = CounterMetricFamily("mcp_extauthz_decisions", "Check decisions",
                                labels=["server", "method", "decision", "reason"])
        for labels, n in list(self.decisions.items()):
            c.add_metric(list(labels), n)
        yield c
        h = HistogramMetricFamily("mcp_extauthz_check_duration_seconds", "Time spent deciding one Check")
        cumulative, acc = [], 0
        for le, n in zip([*map(str, BUCKETS), "+Inf"], self.bucket_counts, strict=True):
            acc += n
            cumulative.append((le, acc))
        h.add_metric([], cumulative, self.total)
        yield h


class _SharedCollector:
    """DESIGN.md's shared-state metrics, read from the shared store's status at scrape time."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        st = self._status()
        yield GaugeMetricFamily("mcp_extauthz_shared_state_connected", "1 while the shared store (Redis) answers",
                                value=1.0 if st.get("connected") else 0.0)
        yield GaugeMetricFamily("mcp_extauthz_shared_state_lag_seconds",
                                "Age of the newest change-feed entry applied here",
                                value=float(st.get("lagSeconds", 0)))
        yield CounterMetricFamily("mcp_extauthz_shared_claims_denied",
                                  "First requests of a session denied because its owner could not be confirmed",
                                  value=float(st.get("claimsDenied", 0)))
        yield CounterMetricFamily("mcp_extauthz_shared_writes_dropped",
                                  "Shared-state writes dropped (queue full while the store was away)",
                                  value=float(st.get("writesDropped", 0)))
        rt = CounterMetricFamily("mcp_extauthz_shared_readthrough",
                                 "Redis reads before a deny the feed lag may explain (found: newer state applied)",
                                 labels=["outcome"])
        counts = st.get("readThrough") or {}
        for outcome in ("found", "nothing", "down"):
            rt.add_metric([outcome], float(counts.get(outcome, 0)))
        yield rt


class _FilterFailureCollector:
    """`list_filter_failures_total{reason}`: lists shown empty, or list bodies replaced, because they
    could not be filtered for their caller (reasons: extauthz.specs.listfilter.FAILURES)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def inc(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1

    def collect(self) -> Iterator[Metric]:
        c = CounterMetricFamily("mcp_extauthz_list_filter_failures",
                                "List responses that could not be filtered for their caller (shown empty)",
                                labels=["reason"])
        for reason, n in list(self.counts.items()):
            c.add_metric([reason], n)
        yield c


class _Tally:
    """A counter kept as a plain int and exposed at scrape time (`value` may be set: a sum)."""

    def __init__(self, name: str, doc: str) -> None:
        self._name, self._doc, self.value = name, doc, 0

    def inc(self, n: int = 1) -> None:
        self.value += n

    def collect(self) -> Iterable[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._doc, value=float(self.value))


class _CountCollector:
    """A counter whose value another object keeps (read at scrape time, nothing on the hot path)."""

    def __init__(self, name: str, doc: str, value: Callable[[], int]) -> None:
        self._name, self._doc, self._value = name, doc, value

    def collect(self) -> Iterable[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._doc, value=float(self._value()))


class Metrics:
    def __init__(self, specs: Callable[[], Iterable[Any]], sessions: Callable[[], int],
                 sessions_refused: Callable[[], int] = lambda: 0) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.checks = _CheckCollector()
        r.register(self.checks)
        self.list_filter_failures = _FilterFailureCollector()
        r.register(self.list_filter_failures)
        self.drift = Counter("mcp_extauthz_spec_drift", "Spec drift events", ["server"], registry=r)
        self.sessions_active = Gauge("mcp_extauthz_sessions_active", "Tracked MCP sessions", registry=r)
        self.sessions_active.set_function(lambda: float(sessions()))
        r.register(_CountCollector(
            "mcp_extauthz_session_claims_refused",
            "New MCP session bindings refused (rate_limited): sessions.maxSessions live bindings exist",
            sessions_refused))
        # how an owner's DELETE ended: ended (2xx), not_found (404), refused (anything else: kept)
        self.session_ends = Counter("mcp_extauthz_session_ends", "Owners' session DELETEs by the server's answer",
                                    ["outcome"], registry=r)
        self.reloads = Counter("mcp_extauthz_policy_reloads", "Policy reloads", ["result"], registry=r)
        # plain ints: a worker reports them in its stats, the supervisor of --workers shows their sum
        self.risk_blocks = _Tally("mcp_extauthz_risk_blocks", "Requests denied by the risk score")
        self.risk_alerts = _Tally("mcp_extauthz_risk_alerts", "Attack chains (recon -> probe -> extract) detected")
        r.register(self.risk_blocks)
        r.register(self.risk_alerts)
        self.build_info = Gauge("mcp_extauthz_build_info", "Build information", ["version"], registry=r)
        self.build_info.labels(__version__).set(1)
        r.register(_SpecCollector(specs))
        self._labels: dict[tuple[str, str, bool, str], tuple[str, str, str, str]] = {}

    def watch_shared(self, status: Callable[[], dict[str, Any]]) -> None:
        self.registry.register(_SharedCollector(status))

    def observe(self, server: str, method: str, allowed: bool, reason: str, seconds: float) -> None:
        key = (server, method, allowed, reason)
        labels = self._labels.get(key)
        if labels is None:
            labels = ("shadow" if server.startswith("shadow:") else server,
                      method if method in _KNOWN_METHODS else "other", "allow" if allowed else "deny", reason)
            if len(self._labels) < 10000:      # the label mapping itself is bounded
                self._labels[key] = labels
        checks = self.checks
        checks.decisions[labels] = checks.decisions.get(labels, 0) + 1
        checks.bucket_counts[bisect_left(BUCKETS, seconds)] += 1
        checks.total += seconds
        checks.count += 1
