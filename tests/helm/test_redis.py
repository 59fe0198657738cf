"""The chart with shared state on Redis: replicas only with Redis (never a silent split brain), the
password from a Secret through the environment (never in args or values), TLS files from Secrets,
one key prefix per release, a PodDisruptionBudget that fits two replicas, and NetworkPolicy egress
to Redis and DNS only."""

from __future__ import annotations

import copy
from typing import Any

import helm_python
import pytest

from .conftest import NAMESPACE, RELEASE, Chart, Rendered, kube_validate, lint_problems
from .test_chart import arg_value, container

URL = "redis://redis.data.svc.cluster.local:6379/0"
TLS_URL = "rediss://redis.data.svc.cluster.local:6380/0"
REDIS_PEER = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data"}},
               "podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}}}]
SPLIT_BRAIN = "needs Redis .redis.url or redis.existingSecret.: without shared state"


def env_of(r: Rendered) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(r)["env"]}


def pod(r: Rendered) -> dict[str, Any]:
    return r.one("Deployment")["spec"]["template"]["spec"]


def with_redis(**redis: Any) -> dict[str, Any]:
    return {"redis": {"url": URL, **redis}}


# --- replicas ---------------------------------------------------------------------------------------

def test_redis_url_defaults_to_two_replicas(chart: Chart) -> None:
    r = chart.render(with_redis())
    c = container(r)
    assert r.one("Deployment")["spec"]["replicas"] == 2
    assert arg_value(c["args"], "--redis") == URL
    assert arg_value(c["args"], "--redis-prefix") == f"{NAMESPACE}/{RELEASE}"
    # No credentials were configured, so none are passed.
    assert not {"EXTAUTHZ_REDIS_PASSWORD", "EXTAUTHZ_REDIS_USERNAME", "EXTAUTHZ_REDIS_URL"} & env_of(r).keys()
    for obj in r.objects:
        kube_validate(obj)
    assert lint_problems(chart.lint(with_redis())) == []


def test_two_replicas_get_a_pdb_and_spread_over_nodes(chart: Chart) -> None:
    r = chart.render(with_redis())
    pdb = r.one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    labels = r.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (term,) = pod(r)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == pdb["spec"]["selector"]["matchLabels"]
    # An explicit affinity replaces the default; an explicit `enabled: false` drops the PDB.
    mine = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["security"]}]}]}}}
    r2 = chart.render({**with_redis(), "affinity": mine, "podDisruptionBudget": {"enabled": False}})
    assert pod(r2)["affinity"] == mine
    assert r2.of_kind("PodDisruptionBudget") == []


def test_without_redis_one_replica_and_no_pdb(chart: Chart) -> None:
    r = chart.render()
    assert r.one("Deployment")["spec"]["replicas"] == 1
    assert r.of_kind("PodDisruptionBudget") == []
    assert "affinity" not in pod(r)
    assert "--redis" not in container(r)["args"]
    assert "SHARED STATE" not in r.notes
    assert chart.render({"replicaCount": 0}).one("Deployment")["spec"]["replicas"] == 0


@pytest.mark.parametrize("values", [
    {"replicaCount": 2},
    {"replicaCount": 5, "podDisruptionBudget": {"enabled": True}},
], ids=["replicaCount-2", "replicaCount-5"])
def test_more_than_one_replica_without_redis_fails(chart: Chart, values: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=f"replicaCount {values['replicaCount']} {SPLIT_BRAIN}"):
        chart.render(values)


def test_autoscaling_without_redis_fails(chart: Chart) -> None:
    values = {"replicaCount": 1, "autoscaling": {"enabled": True, "minReplicas": 1}}
    with pytest.raises(helm_python.HelmRenderError, match=f"autoscaling.enabled {SPLIT_BRAIN}"):
        chart.render(values)


def test_autoscaling_with_redis(chart: Chart) -> None:
    r = chart.render({**with_redis(), "autoscaling": {"enabled": True}})
    hpa = r.one("HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert "replicas" not in r.one("Deployment")["spec"]
    assert r.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert "(autoscaled 2-5), enforcing as one through Redis" in r.notes
    for obj in r.objects:
        kube_validate(obj)
    with pytest.raises(helm_python.HelmRenderError, match=r"minReplicas \(6\) is above autoscaling.maxReplicas \(5\)"):
        chart.render({**with_redis(), "autoscaling": {"enabled": True, "minReplicas": 6}})


@pytest.mark.parametrize("values, message", [
    ({"podDisruptionBudget": {"minAvailable": 2}}, "minAvailable 2 with 2 replica.s. would block every node drain"),
    ({"podDisruptionBudget": {"minAvailable": "100%"}}, "minAvailable 100% with 2 replica"),
    ({"podDisruptionBudget": {"maxUnavailable": 0}}, "maxUnavailable 0 would block every node drain"),
    ({"podDisruptionBudget": {"maxUnavailable": "0%"}}, "maxUnavailable 0 would block"),
    ({"autoscaling": {"enabled": True, "minReplicas": 3}, "podDisruptionBudget": {"minAvailable": 3}},
     "minAvailable 3 with 3 replica"),
], ids=["min-2-of-2", "min-100pct", "max-0", "max-0pct", "hpa-min-3"])
def test_pdb_that_blocks_every_drain_fails(chart: Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=message):
        chart.render({**with_redis(), **values})


def test_pdb_min_available_one_of_two(chart: Chart) -> None:
    pdb = chart.render({**with_redis(), "podDisruptionBudget": {"minAvailable": 1}}).one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    kube_validate(pdb)


# --- where the URL and credentials come from -----------------------------------------------------------

def test_password_from_a_secret_through_the_environment(chart: Chart) -> None:
    values = with_redis(existingSecret="redis-auth", existingSecretKey="",
                        existingSecretPasswordKey="password", existingSecretUsernameKey="user")
    r = chart.render(values)
    c = container(r)
    env = env_of(r)
    assert env["EXTAUTHZ_REDIS_PASSWORD"] == {"name": "EXTAUTHZ_REDIS_PASSWORD", "valueFrom": {
        "secretKeyRef": {"name": "redis-auth", "key": "password"}}}
    assert env["EXTAUTHZ_REDIS_USERNAME"]["valueFrom"] == {"secretKeyRef": {"name": "redis-auth", "key": "user"}}
    assert "EXTAUTHZ_REDIS_URL" not in env
    assert arg_value(c["args"], "--redis") == URL
    # The password reaches the service from its environment only: nothing in args refers to it.
    assert not any("PASSWORD" in a or "redis-auth" in a or "@" in a for a in c["args"])
    assert "--redis-password-file" not in c["args"]
    assert r.one("Deployment")["spec"]["replicas"] == 2
    kube_validate(r.one("Deployment"))
    assert lint_problems(chart.lint(values)) == []


def test_url_and_password_from_one_secret(chart: Chart) -> None:
    values = {"redis": {"existingSecret": "redis-auth", "existingSecretPasswordKey": "password"}}
    r = chart.render(values)
    c = container(r)
    env = env_of(r)
    assert arg_value(c["args"], "--redis") == "$(EXTAUTHZ_REDIS_URL)"
    assert env["EXTAUTHZ_REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": "redis-auth", "key": "url"}}
    assert env["EXTAUTHZ_REDIS_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "redis-auth", "key": "password"}}
    assert r.one("Deployment")["spec"]["replicas"] == 2
    assert "URL from Secret redis-auth" in r.notes
    kube_validate(r.one("Deployment"))


@pytest.mark.parametrize("values, message", [
    ({"redis": {"url": "redis://:hunter2@redis:6379/0"}}, "redis.url holds a password"),
    ({"redis": {"url": "redis://extauthz:hunter2@redis:6379/0"}}, "redis.url holds a password"),
    ({"redis": {"url": URL, "existingSecret": "s"}}, r"at most one of redis.url and redis.existingSecretKey \(\"url\"\)"),
    ({"redis": {"existingSecret": "s", "existingSecretKey": ""}}, "needs redis.url .no URL anywhere."),
    ({"redis": {"url": URL, "existingSecretPasswordKey": "password"}}, "need redis.existingSecret"),
    ({"redis": {"tls": {"ca": {"secretName": "redis-ca"}}}}, "redis.tls needs Redis"),
    ({"redis": {"url": URL, "tls": {"ca": {"secretName": "redis-ca"}}}}, "redis.tls needs a rediss:// URL, not redis"),
    ({**with_redis(), "extraArgs": ["--redis-prefix=shared"]}, "extraArgs --redis-prefix=shared: configure Redis"),
    ({"extraArgs": ["--redis", URL], "replicaCount": 1}, "extraArgs --redis: configure Redis with the redis"),
    ({**with_redis(), "extraEnv": [{"name": "EXTAUTHZ_REDIS_PASSWORD", "value": "hunter2"}]},
     "extraEnv EXTAUTHZ_REDIS_PASSWORD holds a value in clear"),
], ids=["password-in-url", "user-password-in-url", "url-twice", "no-url", "password-key-without-secret",
        "tls-without-redis", "tls-on-redis-scheme", "prefix-in-extraArgs", "redis-in-extraArgs",
        "password-in-extraEnv"])
def test_unsafe_redis_values_fail(chart: Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=message):
        chart.render(values)


def test_user_name_in_the_url_is_fine(chart: Chart) -> None:
    r = chart.render(with_redis(url="redis://extauthz@redis.data.svc:6379/0"))
    assert arg_value(container(r)["args"], "--redis") == "redis://extauthz@redis.data.svc:6379/0"


@pytest.mark.parametrize("values, message", [
    ({"redis": {"url": "unix:///run/redis.sock"}}, "/redis/url"),
    ({"redis": {"url": URL, "prefix": "team-*"}}, "/redis/prefix"),
    ({"redis": {"url": URL, "networkPolicy": {"ports": [70000]}}}, "/redis/networkPolicy/ports/0"),
    ({"redis": {"url": URL, "tls": {"ca": {"key": "../ca.crt"}}}}, "/redis/tls/ca/key"),
    ({"replicaCount": -1}, "/replicaCount"),
], ids=["unix-url", "glob-prefix", "port-range", "key-path", "negative-replicas"])
def test_schema_rejects_bad_redis_values(chart: Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=message):
        chart.render(values)


# --- one prefix per release ------------------------------------------------------------------------------

def test_prefix_is_one_per_release(chart: Chart) -> None:
    a = chart.render(with_redis(), name="alpha")
    b = chart.render(with_redis(), name="beta")
    c = chart.render(with_redis(), name="alpha", namespace="other")
    prefixes = {arg_value(container(r)["args"], "--redis-prefix") for r in (a, b, c)}
    assert prefixes == {f"{NAMESPACE}/alpha", f"{NAMESPACE}/beta", "other/alpha"}
    mine = chart.render(with_redis(prefix="mcp:prod"))
    assert arg_value(container(mine)["args"], "--redis-prefix") == "mcp:prod"
    assert "key prefix mcp:prod" in mine.notes


# --- TLS -------------------------------------------------------------------------------------------------

def test_tls_files_are_mounted_from_secrets(chart: Chart) -> None:
    values = with_redis(url=TLS_URL, tls={"ca": {"secretName": "redis-ca", "key": "ca.pem"},
                                          "clientCert": {"secretName": "redis-client"}})
    r = chart.render(values)
    c = container(r)
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod(r)["volumes"]}

    def file_from(path: str) -> tuple[str, str]:
        directory, _, filename = path.rpartition("/")
        mount = mounts[directory]
        assert mount["readOnly"] is True and "subPath" not in mount
        vol = volumes[mount["name"]]["secret"]
        assert filename in [i["path"] for i in vol["items"]]
        return vol["secretName"], filename

    assert arg_value(c["args"], "--redis") == TLS_URL
    assert file_from(arg_value(c["args"], "--redis-ca") or "") == ("redis-ca", "ca.pem")
    assert file_from(arg_value(c["args"], "--redis-cert") or "") == ("redis-client", "tls.crt")
    assert file_from(arg_value(c["args"], "--redis-key") or "") == ("redis-client", "tls.key")
    kube_validate(r.one("Deployment"))
    assert lint_problems(chart.lint(values)) == []
    # Without TLS values nothing is mounted.
    plain = container(chart.render(with_redis()))
    assert not {"--redis-ca", "--redis-cert", "--redis-key"} & set(plain["args"])
    assert not [m for m in plain["volumeMounts"] if m["name"].startswith("redis")]


def test_ca_only(chart: Chart) -> None:
    r = chart.render(with_redis(url=TLS_URL, tls={"ca": {"secretName": "redis-ca"}}))
    args = container(r)["args"]
    assert arg_value(args, "--redis-ca") == "/etc/extauthz/redis-ca/ca.crt"
    assert "--redis-cert" not in args and "--redis-key" not in args


# --- NetworkPolicy ------------------------------------------------------------------------------------------

def netpol(chart: Chart, **redis: Any) -> dict[str, Any]:
    r = chart.render({"redis": {"url": URL, "networkPolicy": {"to": REDIS_PEER}, **redis},
                      "networkPolicy": {"enabled": True}})
    np = r.one("NetworkPolicy")
    kube_validate(np)
    return np


def test_network_policy_egress_is_dns_and_redis_only(chart: Chart) -> None:
    np = netpol(chart)
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    dns, redis = np["spec"]["egress"]
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    assert redis == {"to": REDIS_PEER, "ports": [{"port": 6379, "protocol": "TCP"}]}


def test_network_policy_redis_port_follows_the_url(chart: Chart) -> None:
    np = netpol(chart, url=TLS_URL)
    assert np["spec"]["egress"][1]["ports"] == [{"port": 6380, "protocol": "TCP"}]
    cidrs = [{"ipBlock": {"cidr": "10.20.0.0/24"}}]
    np = netpol(chart, url="rediss://cache.example.com/0", networkPolicy={"to": cidrs, "ports": [6379, 6380]})
    assert np["spec"]["egress"][1] == {"to": cidrs, "ports": [{"port": 6379, "protocol": "TCP"},
                                                            {"port": 6380, "protocol": "TCP"}]}
    with pytest.raises(helm_python.HelmRenderError, match=r"ports \[6379\] does not include the port of redis.url \(6380\)"):
        netpol(chart, url=TLS_URL, networkPolicy={"to": cidrs, "ports": [6379]})


def test_network_policy_needs_to_know_where_redis_is(chart: Chart) -> None:
    with pytest.raises(helm_python.HelmRenderError, match="set redis.networkPolicy.to"):
        chart.render({**with_redis(), "networkPolicy": {"enabled": True}})
    # Egress left open on purpose: no Redis rule is needed then.
    r = chart.render({**with_redis(), "networkPolicy": {"enabled": True, "egress": {"enabled": False}}})
    assert r.one("NetworkPolicy")["spec"]["policyTypes"] == ["Ingress"]
    assert "egress" not in r.one("NetworkPolicy")["spec"]


def test_network_policy_without_redis_allows_dns_only(chart: Chart) -> None:
    np = chart.render({"networkPolicy": {"enabled": True}}).one("NetworkPolicy")
    (dns,) = np["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}


def test_notes_warn_about_undiscoverable_upstreams(chart: Chart) -> None:
    servers = [{"name": "crm", "match": {"authority": "crm"}, "upstream": "http://crm.mcp:8000/mcp"}]
    r = chart.render({"networkPolicy": {"enabled": True}, "policy": {"servers": servers}})
    assert "servers crm have an\n`upstream`" in r.notes
    extra = [{"to": [{"podSelector": {"matchLabels": {"app": "crm"}}}], "ports": [{"port": 8000, "protocol": "TCP"}]}]
    r = chart.render({"networkPolicy": {"enabled": True, "egress": {"extra": extra}}, "policy": {"servers": servers}})
    assert "`upstream`" not in r.notes
    assert r.one("NetworkPolicy")["spec"]["egress"][-1] == extra[0]


# --- NOTES ---------------------------------------------------------------------------------------------------

def test_notes_say_what_is_shared_and_the_fallback(chart: Chart) -> None:
    r = chart.render(with_redis())
    assert f"SHARED STATE: Redis {URL}, key prefix {NAMESPACE}/{RELEASE}." in r.notes
    assert "more than one replica (2), enforcing as one through Redis" in r.notes
    assert "sessions.sharedStateDown: deny" in r.notes
    assert "trust anchor" in r.notes
    local = copy.deepcopy(with_redis())
    local["policy"] = {"sessions": {"sharedStateDown": "local"}}
    assert "WARNING: sharedStateDown: local with several replicas" in chart.render(local).notes
