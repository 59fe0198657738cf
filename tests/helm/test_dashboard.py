"""deploy/grafana/mcp-extauthz.json: valid JSON, and every PromQL expression names only series the
service exports (taken from a live `extauthz.metrics.Metrics` registry, not from a copied list)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extauthz.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "mcp-extauthz.json"

# The series a Prometheus scrape shows for each family type (prometheus_client's exposition).
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                 "offset", "inf", "nan"}


def exported_series() -> set[str]:
    metrics = Metrics(lambda: [], lambda: 0)
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.update(family.name + s for s in _SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that stand for series (not functions, keywords, labels)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)              # string literals
    expr = re.sub(r"\{[^{}]*\}", "", expr)                         # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                         # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    expr = re.sub(r"\$\{?\w+\}?", "", expr)                        # Grafana variables
    expr = re.sub(r"\blabel_values\s*\(([^,()]*),[^)]*\)", r"\1", expr)  # label_values(metric, label)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = m.group(0)
        following = expr[m.end():].lstrip()
        if following.startswith("(") or word.lower() in _PROMQL_WORDS:
            continue
        if re.fullmatch(r"\d*e\d*", word):                          # part of a number like 1e3
            continue
        names.add(word)
    return names


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def all_queries(dash: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for p in all_panels(dash["panels"]):
        for t in p.get("targets", []):
            yield p["title"], t["expr"]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            yield f"${v['name']}", q["query"] if isinstance(q, dict) else q


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def test_exported_series_are_the_documented_ones() -> None:
    names = exported_series()
    for documented in ("mcp_extauthz_decisions_total", "mcp_extauthz_check_duration_seconds_bucket",
                       "mcp_extauthz_spec_capabilities", "mcp_extauthz_spec_drift_total",
                       "mcp_extauthz_sessions_active", "mcp_extauthz_policy_reloads_total",
                       "mcp_extauthz_risk_blocks_total", "mcp_extauthz_build_info",
                       "mcp_extauthz_list_filter_failures_total"):
        assert documented in names


def test_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (le) (rate(a_bucket{job=~"$job"}[$__rate_interval])))') == {"a_bucket"}
    assert metric_names('sum(x{a="b"}) / sum(y) or vector(0)') == {"x", "y"}
    assert metric_names('label_values(m{job=~"$job"}, server)') == {"m"}
    assert metric_names("count by (version) (b)") == {"b"}
    # The classic slip: a counter's family name is not a series.
    assert metric_names("rate(mcp_extauthz_decisions[5m])") == {"mcp_extauthz_decisions"}
    assert "mcp_extauthz_decisions" not in exported_series()


def test_every_expression_uses_only_exported_series(dashboard: dict[str, Any]) -> None:
    exported = exported_series()
    queries = list(all_queries(dashboard))
    assert len(queries) >= 15
    for where, expr in queries:
        used = metric_names(expr)
        assert used, f"{where}: no metric in {expr!r}"
        assert used <= exported, f"{where}: {sorted(used - exported)} not exported (expr {expr!r})"


def test_dashboard_covers_every_metric(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(e) for _, e in all_queries(dashboard)))
    bases = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    for family in ("mcp_extauthz_decisions", "mcp_extauthz_check_duration_seconds", "mcp_extauthz_spec_capabilities",
                   "mcp_extauthz_spec_drift", "mcp_extauthz_sessions_active", "mcp_extauthz_policy_reloads",
                   "mcp_extauthz_risk_blocks", "mcp_extauthz_build_info", "mcp_extauthz_list_filter_failures"):
        assert family in bases, family


def test_panels_are_well_formed(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "mcp-extauthz"
    ids = [p["id"] for p in all_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in all_panels(dashboard["panels"])}
    for wanted in ("Decisions/s by decision and reason", "Deny ratio by server", "Check latency p50 / p99",
                   "Spec capabilities", "Spec drift events", "Active MCP sessions", "Policy reloads",
                   "Risk blocks/s"):
        assert wanted in titles
    for p in all_panels(dashboard["panels"]):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for t in p.get("targets", []):
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    latency = next(p for p in all_panels(dashboard["panels"]) if p["title"] == "Check latency p50 / p99")
    assert [t["expr"].split(",")[0] for t in latency["targets"][:2]] == ["histogram_quantile(0.5", "histogram_quantile(0.99"]
