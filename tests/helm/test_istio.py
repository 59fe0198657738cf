"""Istio wiring: the CUSTOM AuthorizationPolicy (ext_authz through the meshConfig provider), the
EnvoyFilter that adds ext_proc (Istio has no ext_proc provider), the guard against a client-sent
x-jwt-payload, and the meshConfig/RequestAuthentication the NOTES and README tell operators to add."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from .conftest import CHART_DIR, MONITORING_API, NAMESPACE, RELEASE, Chart, Rendered, load_values

EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
SERVICE_HOST = f"{RELEASE}-mcp-extauthz.{NAMESPACE}.svc.cluster.local"
EXPECTED_PROVIDER = {
    "name": "mcp-extauthz",
    "envoyExtAuthzGrpc": {
        "service": SERVICE_HOST,
        "port": 9191,
        "includeRequestBodyInCheck": {"maxRequestBytes": 262144, "allowPartialMessage": False, "packAsBytes": True},
        "failOpen": False,
        "timeout": "2s",
    },
}
ENVOY = shutil.which("envoy") or next(
    (str(p) for p in [Path(sys.executable).with_name("envoy")] if p.is_file()), None)


@pytest.fixture(scope="module")
def values_all() -> dict[str, Any]:
    return load_values("values-all.yaml")


@pytest.fixture(scope="module")
def full(chart: Chart, values_all: dict[str, Any]) -> Rendered:
    return chart.render(values_all, api_versions=(MONITORING_API,))


@pytest.fixture(scope="module")
def minimal(chart: Chart) -> Rendered:
    """istio.enabled with every other Istio value at its default."""
    return chart.render({"istio": {"enabled": True}})


def ext_proc_patch(r: Rendered) -> dict[str, Any]:
    ef = r.one("EnvoyFilter")
    (patch,) = ef["spec"]["configPatches"]
    return patch


def test_custom_authorization_policy(full: Rendered, values_all: dict[str, Any]) -> None:
    ap = full.one("AuthorizationPolicy", f"{RELEASE}-mcp-extauthz")
    assert ap["apiVersion"] == "security.istio.io/v1"
    assert ap["metadata"]["namespace"] == values_all["istio"]["targetNamespace"] == "mcp"
    assert ap["spec"]["action"] == "CUSTOM"
    assert ap["spec"]["provider"] == {"name": values_all["istio"]["providerName"]}
    assert ap["spec"]["selector"] == {"matchLabels": values_all["istio"]["targetSelector"]}
    assert ap["spec"]["rules"] == [{}]          # every request to the workloads is checked


def test_deny_unverified_jwt_payload_header(full: Rendered, values_all: dict[str, Any]) -> None:
    deny = full.one("AuthorizationPolicy", f"{RELEASE}-mcp-extauthz-deny-unverified-jwt-payload")
    assert deny["spec"]["action"] == "DENY"
    assert deny["spec"]["selector"] == {"matchLabels": values_all["istio"]["targetSelector"]}
    assert deny["spec"]["rules"] == [{
        "from": [{"source": {"notRequestPrincipals": ["*"]}}],
        "when": [{"key": "request.headers[x-jwt-payload]", "values": ["*"]}],
    }]


def test_envoyfilter_inserts_ext_proc_after_ext_authz(full: Rendered, values_all: dict[str, Any]) -> None:
    ef = full.one("EnvoyFilter")
    assert ef["apiVersion"] == "networking.istio.io/v1alpha3"
    assert ef["metadata"]["namespace"] == "mcp"
    assert ef["spec"]["workloadSelector"] == {"labels": values_all["istio"]["targetSelector"]}
    patch = ext_proc_patch(full)
    assert patch["applyTo"] == "HTTP_FILTER"
    assert patch["match"] == {
        "context": "SIDECAR_INBOUND",
        "listener": {
            "portNumber": 8000,
            "filterChain": {"filter": {"name": "envoy.filters.network.http_connection_manager",
                                       "subFilter": {"name": "envoy.filters.http.ext_authz"}}},
        },
    }
    assert patch["patch"]["operation"] == "INSERT_AFTER"
    value = patch["patch"]["value"]
    assert value["name"] == "envoy.filters.http.ext_proc"
    cfg = value["typed_config"]
    assert cfg["@type"] == EXT_PROC_TYPE
    assert cfg["grpc_service"] == {"envoy_grpc": {"cluster_name": f"outbound|9191||{SERVICE_HOST}"}}
    assert cfg["failure_mode_allow"] is False
    assert cfg["message_timeout"] == "1.5s"
    assert cfg["processing_mode"] == {
        "request_header_mode": "SEND",
        "response_header_mode": "SEND",
        "request_body_mode": "NONE",
        "response_body_mode": "STREAMED",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }


def test_ext_proc_cluster_is_the_charts_service(full: Rendered) -> None:
    svc = full.one("Service")
    grpc_port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc")
    cluster = ext_proc_patch(full)["patch"]["value"]["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    assert cluster == f"outbound|{grpc_port}||{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"


def test_ext_proc_filter_is_a_valid_envoy_proto(full: Rendered) -> None:
    """Envoy's own descriptors (xds-protos) accept the filter: no unknown field, no bad enum."""
    value = copy.deepcopy(ext_proc_patch(full)["patch"]["value"])
    http_filter = json_format.ParseDict(value, hcm_pb2.HttpFilter())
    processor = ext_proc_pb2.ExternalProcessor()
    assert http_filter.typed_config.Unpack(processor)
    assert processor.processing_mode.response_body_mode == processor.processing_mode.STREAMED
    assert processor.processing_mode.request_body_mode == processor.processing_mode.NONE
    assert processor.message_timeout.ToMilliseconds() == 1500
    assert not processor.failure_mode_allow


def test_real_envoy_accepts_the_filter_chain(full: Rendered, tmp_path: Path) -> None:
    """The chain Istio ends up with on an MCP workload's inbound listener, checked by Envoy itself:
    ext_authz (what the provider in NOTES.txt produces), then the chart's ext_proc, then the router."""
    ext_proc = ext_proc_patch(full)["patch"]["value"]
    cluster = ext_proc["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    provider = EXPECTED_PROVIDER["envoyExtAuthzGrpc"]
    body = provider["includeRequestBodyInCheck"]
    ext_authz = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "grpc_service": {"envoy_grpc": {"cluster_name": cluster}, "timeout": provider["timeout"]},
            "failure_mode_allow": provider["failOpen"],
            "with_request_body": {"max_request_bytes": body["maxRequestBytes"],
                                  "allow_partial_message": body["allowPartialMessage"],
                                  "pack_as_bytes": body["packAsBytes"]},
        },
    }
    bootstrap = {
        "static_resources": {
            "listeners": [{
                "name": "virtualInbound",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 15006}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "inbound",
                        "route_config": {"virtual_hosts": [{"name": "mcp", "domains": ["*"], "routes": [
                            {"match": {"prefix": "/"}, "route": {"cluster": "inbound|8000||"}}]}]},
                        "http_filters": [ext_authz, ext_proc, {
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    },
                }]}],
            }],
            "clusters": [
                {"name": cluster, "type": "STATIC", "connect_timeout": "1s",
                 "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                     "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                     "explicit_http_config": {"http2_protocol_options": {}}}},
                 "load_assignment": {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [{"endpoint": {
                     "address": {"socket_address": {"address": "127.0.0.1", "port_value": 9191}}}}]}]}},
                {"name": "inbound|8000||", "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": {"cluster_name": "inbound|8000||", "endpoints": [{"lb_endpoints": [{"endpoint": {
                     "address": {"socket_address": {"address": "127.0.0.1", "port_value": 8000}}}}]}]}},
            ],
        },
    }
    path = tmp_path / "inbound.yaml"
    path.write_text(yaml.safe_dump(bootstrap, sort_keys=False), encoding="utf-8")
    proc = subprocess.run([ENVOY, "--mode", "validate", "-c", str(path), "--log-level", "warn",
                           "--disable-hot-restart"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"envoy rejected the filter chain:\n{proc.stdout}\n{proc.stderr}"


def test_defaults_target_the_release_namespace_and_every_port(minimal: Rendered) -> None:
    ef = minimal.one("EnvoyFilter")
    assert ef["metadata"]["namespace"] == NAMESPACE
    assert "portNumber" not in ext_proc_patch(minimal)["match"]["listener"]
    assert ext_proc_patch(minimal)["patch"]["value"]["typed_config"]["message_timeout"] == "2s"
    ap = minimal.one("AuthorizationPolicy", f"{RELEASE}-mcp-extauthz")
    assert ap["metadata"]["namespace"] == NAMESPACE
    assert ap["spec"]["provider"] == {"name": "mcp-extauthz"}
    assert ap["spec"]["selector"] == {"matchLabels": {"app": "mcp-server"}}


def test_deny_guard_can_be_turned_off_and_notes_warn(chart: Chart) -> None:
    r = chart.render({"istio": {"enabled": True, "denyUnverifiedJwtPayloadHeader": False}})
    assert [ap["spec"]["action"] for ap in r.of_kind("AuthorizationPolicy")] == ["CUSTOM"]
    assert "istio.denyUnverifiedJwtPayloadHeader is off" in r.notes


def yaml_block_after(text: str, anchor: str) -> Any:
    """The indented YAML block that starts at the line holding `anchor`, dedented and parsed."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(anchor))
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.strip() or len(line) - len(line.lstrip()) < indent:
            break
        block.append(line)
    return yaml.safe_load("\n".join(b[indent:] for b in block))


def test_notes_show_the_mesh_config_provider(full: Rendered) -> None:
    assert "ISTIO" in full.notes
    providers = yaml_block_after(full.notes, "extensionProviders:")["extensionProviders"]
    assert providers == [EXPECTED_PROVIDER]


def test_notes_show_request_authentication(full: Rendered, values_all: dict[str, Any]) -> None:
    ra = yaml_block_after(full.notes, "apiVersion: security.istio.io/v1")
    assert ra["kind"] == "RequestAuthentication"
    assert ra["spec"]["selector"] == {"matchLabels": values_all["istio"]["targetSelector"]}
    (rule,) = ra["spec"]["jwtRules"]
    assert rule["outputPayloadToHeader"] == "x-jwt-payload"
    assert rule["forwardOriginalToken"] is False
    assert "header: {name: x-jwt-payload, encoding: base64url-json}" in full.notes
    assert "outputPayloadToHeader overwrites" in full.notes
    # values-all's policy reads the header, so no warning about it.
    assert "has no `header` source" not in full.notes


def test_notes_warn_when_the_policy_ignores_the_header(minimal: Rendered) -> None:
    assert "policy.identity.sources has no `header` source" in minimal.notes


def test_readme_documents_the_same_provider_and_warning() -> None:
    readme = (CHART_DIR / "README.md").read_text(encoding="utf-8")
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.S)]
    mesh = next(b for b in blocks if isinstance(b, dict) and "meshConfig" in b)
    (provider,) = mesh["meshConfig"]["extensionProviders"]
    assert provider["envoyExtAuthzGrpc"] == {**EXPECTED_PROVIDER["envoyExtAuthzGrpc"],
                                             "service": "mcp-extauthz.mcp-system.svc.cluster.local"}
    ra = next(b for b in blocks if isinstance(b, dict) and b.get("kind") == "RequestAuthentication")
    assert ra["spec"]["jwtRules"][0]["outputPayloadToHeader"] == "x-jwt-payload"
    assert "forwardOriginalToken" in readme and "overwrites" in readme
