"""The Helm chart: rendered with the real Helm engine, every built-in object valid for Kubernetes,
and the fields that decide whether the service runs safely asserted one by one."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from extauthz.policy.load import parse_policy_text
from extauthz.policy.model import compile_policy, load_policy

from .conftest import (
    CUSTOM_KINDS,
    MONITORING_API,
    NAMESPACE,
    RELEASE,
    Chart,
    Rendered,
    kube_validate,
    lint_problems,
    load_values,
)

FULLNAME = f"{RELEASE}-mcp-extauthz"
POLICY_DIR = "/etc/extauthz/policy"


@pytest.fixture(scope="module")
def default(chart: Chart) -> Rendered:
    return chart.render()


@pytest.fixture(scope="module")
def values_all() -> dict[str, Any]:
    return load_values("values-all.yaml")


@pytest.fixture(scope="module")
def full(chart: Chart, values_all: dict[str, Any]) -> Rendered:
    return chart.render(values_all, api_versions=(MONITORING_API,))


def container(r: Rendered) -> dict[str, Any]:
    pod = r.one("Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["extauthz"]
    return pod["containers"][0]


def arg_value(args: list[str], flag: str) -> str | None:
    """The value of `--flag VALUE` or `--flag=VALUE`; None when absent."""
    for i, a in enumerate(args):
        if a == flag:
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def policy_files(r: Rendered) -> dict[str, str]:
    return r.one("ConfigMap", f"{FULLNAME}-policy")["data"]


# --- default values ------------------------------------------------------------------------------

def test_default_objects(default: Rendered) -> None:
    assert default.kinds == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    for obj in default.objects:
        assert obj["metadata"]["namespace"] == NAMESPACE
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "mcp-extauthz"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "mcp-extauthz-0.1.0"


def test_default_objects_are_valid_kubernetes(default: Rendered) -> None:
    for obj in default.objects:
        kube_validate(obj)


def test_default_lint_is_clean(chart: Chart) -> None:
    report = chart.lint()
    assert report["total_charts_linted"] == 1
    assert lint_problems(report) == []


def test_probes_on_the_admin_port(default: Rendered) -> None:
    c = container(default)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 9191, "admin": 9192}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert arg_value(c["args"], "--admin-port") == "9192"
    assert arg_value(c["args"], "--grpc-port") == "9191"
    assert "startupProbe" not in c


def test_policy_is_a_directory_mount_never_subpath(default: Rendered) -> None:
    pod = default.one("Deployment")["spec"]["template"]["spec"]
    c = container(default)
    assert c["args"][0] == "serve"
    assert arg_value(c["args"], "--policy") == POLICY_DIR
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["policy"] == {"name": "policy", "mountPath": POLICY_DIR, "readOnly": True}
    assert all("subPath" not in m and "subPathExpr" not in m for m in c["volumeMounts"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["policy"] == {"name": "policy", "configMap": {"name": f"{FULLNAME}-policy"}}
    assert "policy.yaml" in policy_files(default)


def test_security_context(default: Rendered) -> None:
    pod = default.one("Deployment")["spec"]["template"]["spec"]
    sc = container(default)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    # A read-only root filesystem still needs a writable /tmp.
    assert {"name": "tmp", "mountPath": "/tmp"} in container(default)["volumeMounts"]


def test_grace_period_outlasts_the_drain_and_no_prestop(default: Rendered) -> None:
    pod = default.one("Deployment")["spec"]["template"]["spec"]
    drain = float(arg_value(container(default)["args"], "--drain-seconds") or "nan")
    assert drain == 10
    assert pod["terminationGracePeriodSeconds"] > drain
    assert "lifecycle" not in container(default)


def test_no_rollout_checksum_by_default(default: Rendered) -> None:
    template_meta = default.one("Deployment")["spec"]["template"]["metadata"]
    assert not any(k.startswith("checksum/") for k in template_meta.get("annotations", {}))


def test_service_exposes_grpc_only_by_default(default: Rendered) -> None:
    svc = default.one("Service")
    assert svc["spec"]["ports"] == [
        {"name": "grpc", "port": 9191, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"}]
    assert svc["spec"]["selector"] == default.one("Deployment")["spec"]["selector"]["matchLabels"]


def test_default_policy_passes_the_service_validator(default: Rendered, tmp_path: Path) -> None:
    text = policy_files(default)["policy.yaml"]
    doc = parse_policy_text(text, "policy.yaml", str(tmp_path))
    policy = compile_policy(doc, str(tmp_path), "policy.yaml")
    assert policy.mode == "enforce"
    assert policy.servers == ()           # nothing is allowed until the operator describes a server
    # The same bytes, read the way the pod reads them: a directory holding policy.yaml.
    (tmp_path / "policy.yaml").write_text(text, encoding="utf-8")
    assert load_policy(str(tmp_path)).digest == policy.digest


def test_default_has_no_optional_objects(default: Rendered) -> None:
    assert not set(default.kinds) & {"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
                                     *CUSTOM_KINDS}


def test_servicemonitor_absent_without_the_api(chart: Chart, values_all: dict[str, Any]) -> None:
    r = chart.render(values_all)
    assert r.of_kind("ServiceMonitor") == []
    assert "does not serve monitoring.coreos.com/v1" in r.notes


def test_notes(default: Rendered) -> None:
    assert f"{FULLNAME}.{NAMESPACE}.svc.cluster.local:9191" in default.notes
    assert "not on the Service" in default.notes
    assert "ISTIO" not in default.notes


# --- every feature on ----------------------------------------------------------------------------

def test_all_features_objects(full: Rendered) -> None:
    assert full.kinds == sorted([
        "AuthorizationPolicy", "AuthorizationPolicy", "ConfigMap", "Deployment", "EnvoyFilter",
        "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget", "Service", "ServiceAccount",
        "ServiceMonitor"])


def test_all_features_builtin_objects_are_valid_kubernetes(full: Rendered) -> None:
    for obj in full.objects:
        if obj["kind"] not in CUSTOM_KINDS:
            kube_validate(obj)


def test_all_features_lint_is_clean(chart: Chart, values_all: dict[str, Any]) -> None:
    assert lint_problems(chart.lint(values_all)) == []


def test_all_features_policy_and_spec_file_load_from_the_mount(full: Rendered, tmp_path: Path) -> None:
    for name, content in policy_files(full).items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    policy = load_policy(str(tmp_path))       # also checks that specFile exists next to it
    (server,) = policy.servers
    assert server.name == "crm"
    assert policy.identity.sources[0].kind == "header"
    assert policy.sessions.max_sessions == 1_000_000   # a large number survives toYaml


def test_tls_wiring(full: Rendered, values_all: dict[str, Any]) -> None:
    c = container(full)
    pod = full.one("Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret = values_all["tls"]["secretName"]

    def file_from(path: str) -> tuple[str, str]:
        directory, _, filename = path.rpartition("/")
        vol = volumes[mounts[directory]]["secret"]
        assert filename in [i["path"] for i in vol["items"]]
        return vol["secretName"], filename

    assert file_from(arg_value(c["args"], "--tls-cert") or "") == (secret, "tls.crt")
    assert file_from(arg_value(c["args"], "--tls-key") or "") == (secret, "tls.key")
    assert file_from(arg_value(c["args"], "--tls-client-ca") or "") == (secret, "ca.crt")
    assert all("subPath" not in m for m in c["volumeMounts"])
    # Probes stay plain HTTP on the admin port.
    assert c["readinessProbe"]["httpGet"]["port"] == "admin"


def test_redis_and_rollout_checksum(full: Rendered, values_all: dict[str, Any]) -> None:
    c = container(full)
    assert arg_value(c["args"], "--redis") == values_all["redis"]["url"]
    annotations = full.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/policy"]) == 64
    assert annotations["example.com/team"] == "security"


def test_redis_url_from_a_secret(chart: Chart) -> None:
    r = chart.render({"redis": {"existingSecret": "redis-auth", "existingSecretKey": "url"}})
    c = container(r)
    assert arg_value(c["args"], "--redis") == "$(EXTAUTHZ_REDIS_URL)"
    env = {e["name"]: e for e in c["env"]}
    assert env["EXTAUTHZ_REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": "redis-auth", "key": "url"}}
    assert "redis-auth" not in str(c["args"])
    kube_validate(r.one("Deployment"))


def test_grace_period_and_drain_from_values(full: Rendered, values_all: dict[str, Any]) -> None:
    pod = full.one("Deployment")["spec"]["template"]["spec"]
    assert arg_value(container(full)["args"], "--drain-seconds") == "20"
    assert pod["terminationGracePeriodSeconds"] == values_all["terminationGracePeriodSeconds"] > 20


def test_admin_port_on_the_service_when_opted_in(full: Rendered) -> None:
    ports = {p["name"]: p for p in full.one("Service")["spec"]["ports"]}
    assert ports["http-admin"] == {"name": "http-admin", "port": 9192, "targetPort": "admin",
                                   "protocol": "TCP", "appProtocol": "http"}
    assert ports["grpc"]["appProtocol"] == "grpc"


def test_servicemonitor_scrapes_the_admin_port(full: Rendered) -> None:
    sm = full.one("ServiceMonitor")
    svc = full.one("Service")
    assert sm["apiVersion"] == MONITORING_API
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in svc["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"


def test_servicemonitor_needs_the_admin_port(chart: Chart, values_all: dict[str, Any]) -> None:
    values = copy.deepcopy(values_all)
    values["service"]["exposeAdmin"] = False
    with pytest.raises(helm_python.HelmRenderError, match="service.exposeAdmin"):
        chart.render(values, api_versions=(MONITORING_API,))


def test_hpa_owns_the_replica_count(full: Rendered) -> None:
    hpa = full.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": full.one("Deployment")["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]}
    assert targets == {"cpu": 60, "memory": 80}
    assert "replicas" not in full.one("Deployment")["spec"]
    assert "more than one replica" in full.notes


def test_pdb_selects_the_pods(full: Rendered) -> None:
    pdb = full.one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    pod_labels = full.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_pdb_defaults_to_max_unavailable_one(chart: Chart) -> None:
    pdb = chart.render({"podDisruptionBudget": {"enabled": True}}).one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    kube_validate(pdb)


def test_network_policy(full: Rendered, values_all: dict[str, Any]) -> None:
    np = full.one("NetworkPolicy")
    pod_labels = full.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert np["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    grpc_rule, admin_rule = np["spec"]["ingress"]
    assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert grpc_rule["from"] == values_all["networkPolicy"]["grpc"]["from"]
    assert admin_rule["ports"] == [{"port": "admin", "protocol": "TCP"}]
    assert admin_rule["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }]
    container_ports = {p["name"] for p in container(full)["ports"]}
    assert {"grpc", "admin"} <= container_ports
    dns, redis, upstream = np["spec"]["egress"]
    assert [p["port"] for p in dns["ports"]] == [53, 53]
    assert redis == {"to": values_all["redis"]["networkPolicy"]["to"], "ports": [{"port": 6379, "protocol": "TCP"}]}
    assert upstream == values_all["networkPolicy"]["egress"]["extra"][0]


# --- where the policy comes from -----------------------------------------------------------------

@pytest.mark.parametrize("source, volume", [
    ("existingConfigMap", {"configMap": {"name": "my-policy"}}),
    ("existingSecret", {"secret": {"secretName": "my-policy"}}),
], ids=["existingConfigMap", "existingSecret"])
def test_existing_policy_object(chart: Chart, values_all: dict[str, Any], source: str,
                                volume: dict[str, Any]) -> None:
    values = copy.deepcopy(values_all)
    values[source] = "my-policy"
    r = chart.render(values, api_versions=(MONITORING_API,))
    assert r.of_kind("ConfigMap") == []
    pod = r.one("Deployment")["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["policy"] == {"name": "policy", **volume}
    assert arg_value(container(r)["args"], "--policy") == POLICY_DIR
    assert all("subPath" not in m for m in container(r)["volumeMounts"])
    # Nothing of ours to checksum: no annotation, even with rolloutOnPolicyChange.
    assert "checksum/policy" not in r.one("Deployment")["spec"]["template"]["metadata"].get("annotations", {})
    kube_validate(r.one("Deployment"))
    assert lint_problems(chart.lint(values)) == []


def test_existing_configmap_and_secret_together_fail(chart: Chart) -> None:
    with pytest.raises(helm_python.HelmRenderError, match="at most one of existingConfigMap and existingSecret"):
        chart.render({"existingConfigMap": "a", "existingSecret": "b"})


# --- the values schema and cross-field checks ----------------------------------------------------

@pytest.mark.parametrize("values, message", [
    ({"replicaCount": "two"}, "/replicaCount"),
    ({"replicas": 2}, "additional properties 'replicas' not allowed"),
    ({"service": {"exposeAdmin": "yes"}}, "/service/exposeAdmin"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"istio": {"extProc": {"messageTimeout": "1500ms"}}}, "/istio/extProc/messageTimeout"),
    ({"networkPolicy": {"grpc": {"from": []}}}, "/networkPolicy/grpc/from"),
    ({"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}, "/podDisruptionBudget"),
    ({"policy": {"apiVersion": "v2"}}, "/policy/apiVersion"),
    ({"extraPolicyFiles": {"policy.yaml": "x"}}, "invalid propertyName 'policy.yaml'"),
], ids=["replicas-string", "unknown-key", "bool-as-string", "pull-policy", "envoy-duration",
        "grpc-from-empty", "pdb-both", "policy-apiVersion", "policy-file-clash"])
def test_schema_rejects_bad_values(chart: Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=message):
        chart.render(values)
    report = chart.lint(values)
    assert any(message in problem for problem in lint_problems(report)), report


@pytest.mark.parametrize("values, message", [
    ({"drainSeconds": 30}, "terminationGracePeriodSeconds .30. must be at least drainSeconds . 5"),
    ({"tls": {"enabled": True}}, "tls.enabled needs tls.secretName"),
    ({"tls": {"clientCA": {"enabled": True}}}, "tls.clientCA.enabled needs tls.enabled"),
    ({"redis": {"url": "redis://r:6379", "existingSecret": "s"}}, "at most one of redis.url"),
], ids=["grace-vs-drain", "tls-without-secret", "client-ca-without-tls", "redis-twice"])
def test_inconsistent_values_fail_to_render(chart: Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=message):
        chart.render(values)


def test_values_yaml_is_what_the_chart_loads(chart: Chart) -> None:
    on_disk = yaml.safe_load((Path(__file__).resolve().parents[2] / "helm/mcp-extauthz/values.yaml").read_text())
    assert chart.chart.values == on_disk
    chart.chart.validate_schema(on_disk)
