"""Render and lint the chart with the real Helm library (PyPI helm-python-sdk: Helm v4's engine
through its C ABI, offline, no helm binary) and validate objects against the Kubernetes schemas
(PyPI kubernetes-validate)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from helm_python import _native

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "mcp-extauthz"
HERE = Path(__file__).resolve().parent
RELEASE = "mcp"
NAMESPACE = "mcp-system"
MONITORING_API = "monitoring.coreos.com/v1"

# kubernetes-validate knows the built-in kinds only. Custom resources are asserted field by field.
CUSTOM_KINDS = {"ServiceMonitor", "AuthorizationPolicy", "EnvoyFilter"}
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and Helm's default version.
KUBE_VERSIONS = ("1.25.0", "1.36.0")


@dataclass
class Rendered:
    objects: list[dict[str, Any]]
    notes: str
    sources: dict[str, str] = field(default_factory=dict)   # object key -> template path

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind}{' ' + name if name else ''}, found {len(found)}"
        return found[0]

    @property
    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)


class Chart:
    """The chart, loaded once per session."""

    def __init__(self) -> None:
        self.chart = helm_python.Chart.load(CHART_DIR)

    def render(self, values: dict[str, Any] | None = None, *, api_versions: tuple[str, ...] = (),
               name: str = RELEASE, namespace: str = NAMESPACE) -> Rendered:
        """`helm template`. Raises helm_python.HelmValuesError (schema) or HelmRenderError (a
        template's `fail`)."""
        opts: dict[str, Any] = {"name": name, "namespace": namespace}
        if api_versions:
            # helm-python-sdk 0.2.2's Chart.render() does not expose `api_versions` (helm template
            # --api-versions), but the library's render options accept it; same native call.
            opts["api_versions"] = list(api_versions)
        raw = _native.call_string("helm_render", self.chart._raw(),
                                  None if values is None else json.dumps(values), json.dumps(opts))
        manifests: dict[str, str] = json.loads(raw)
        objects: list[dict[str, Any]] = []
        sources: dict[str, str] = {}
        notes = ""
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc is None:
                    continue
                assert isinstance(doc, dict) and "kind" in doc, f"{path} rendered a non-object: {doc!r}"
                objects.append(doc)
                sources[f"{doc['kind']}/{doc['metadata']['name']}"] = path
        return Rendered(objects, notes, sources)

    def lint(self, values: dict[str, Any] | None = None) -> dict[str, Any]:
        return helm_python.lint(CHART_DIR, values, strict=True, namespace=NAMESPACE)


@pytest.fixture(scope="session")
def chart() -> Iterator[Chart]:
    c = Chart()
    try:
        yield c
    finally:
        c.chart.close()


def load_values(name: str) -> dict[str, Any]:
    data = yaml.safe_load((HERE / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def kube_validate(obj: dict[str, Any]) -> None:
    """Strict (unknown fields are errors) validation against each supported Kubernetes version."""
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version}: {e}")


def lint_problems(report: dict[str, Any]) -> list[str]:
    """Warnings and errors (severity >= 2) of a lint report; info messages are not problems."""
    return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2] + report["errors"]
