"""Prometheus metrics (DESIGN.md names, prefix mcp_extauthz_). Label values are bounded: unknown
methods and shadow servers collapse into one value so an attacker cannot explode cardinality."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from extauthz import __version__
from extauthz.mcp.methods import CAPABILITY_METHODS, FREE_METHODS, NOTIFICATIONS

_KNOWN_METHODS = frozenset({*CAPABILITY_METHODS, *FREE_METHODS, *NOTIFICATIONS, "completion/complete",
                            "GET", "DELETE", ""})


class _SpecCollector:
    def __init__(self, specs: Callable[[], Iterable[Any]]) -> None:
        self._specs = specs

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily("mcp_extauthz_spec_capabilities", "Capabilities in each server's spec",
                              labels=["server", "kind"])
        for spec in self._specs():
            for kind in ("tools", "resources", "resourceTemplates", "prompts"):
                g.add_metric([spec.server, kind], len(spec.table(kind)))
        yield g


class Metrics:
    def __init__(self, specs: Callable[[], Iterable[Any]], sessions: Callable[[], int]) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.decisions = Counter("mcp_extauthz_decisions", "Check decisions",
                                 ["server", "method", "decision", "reason"], registry=r)
        self.check_duration = Histogram(
            "mcp_extauthz_check_duration_seconds", "Time spent deciding one Check", registry=r,
            buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1))
        self.drift = Counter("mcp_extauthz_spec_drift", "Spec drift events", ["server"], registry=r)
        self.sessions_active = Gauge("mcp_extauthz_sessions_active", "Tracked MCP sessions", registry=r)
        self.sessions_active.set_function(lambda: float(sessions()))
        self.reloads = Counter("mcp_extauthz_policy_reloads", "Policy reloads", ["result"], registry=r)
        self.risk_blocks = Counter("mcp_extauthz_risk_blocks", "Requests denied by the risk score", registry=r)
        self.build_info = Gauge("mcp_extauthz_build_info", "Build information", ["version"], registry=r)
        self.build_info.labels(__version__).set(1)
        r.register(_SpecCollector(specs))  # type: ignore[arg-type]
        self._children: dict[tuple[str, str, bool, str], Any] = {}

    def observe(self, server: str, method: str, allowed: bool, reason: str, seconds: float) -> None:
        key = (server, method, allowed, reason)
        child = self._children.get(key)
        if child is None:
            s = "shadow" if server.startswith("shadow:") else server
            m = method if method in _KNOWN_METHODS else "other"
            child = self.decisions.labels(s, m, "allow" if allowed else "deny", reason)
            if len(self._children) < 10000:    # label children are bounded by the label mapping
                self._children[key] = child
        child.inc()
        self.check_duration.observe(seconds)
