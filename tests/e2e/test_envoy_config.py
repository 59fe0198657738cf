"""The shipped Envoy configs are valid for the real Envoy binary and never go stale."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from extauthz.demo import envoy_config
from extauthz.demo.envoy_config import DEMO_JWKS, LEARN_HEADER, render
from extauthz.demo.tokens import TokenIssuer

ROOT = Path(__file__).resolve().parents[2]
ENVOY_DIR = ROOT / "envoy"
ENVOY = shutil.which("envoy")



def envoy_validate(path: Path) -> None:
    proc = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "--log-level", "warn", "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"envoy rejected {path}:\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize("path", sorted(ENVOY_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_checked_in_configs_validate(path: Path) -> None:
    envoy_validate(path)


def test_there_is_a_checked_in_config() -> None:
    assert (ENVOY_DIR / "envoy.yaml").is_file()


def test_checked_in_config_is_render_output() -> None:
    assert (ENVOY_DIR / "envoy.yaml").read_text(encoding="utf-8") == render(), (
        "envoy/envoy.yaml is stale: run `python -m extauthz.demo.envoy_config > envoy/envoy.yaml`"
    )


def test_main_prints_render(capsys: pytest.CaptureFixture[str]) -> None:
    assert envoy_config.main([]) == 0
    assert capsys.readouterr().out == render()


def test_render_with_other_ports_and_runtime_jwks_validates(tmp_path: Path) -> None:
    text = render(
        listen_port=18080,
        upstream_host="localhost",
        upstream_port=18000,
        authz_host="127.0.0.2",
        authz_port=19191,
        admin_port=19901,
        jwks_json=TokenIssuer().jwks_json(),
        max_request_bytes=1024,
    )
    path = tmp_path / "envoy.yaml"
    path.write_text(text, encoding="utf-8")
    envoy_validate(path)
    doc = yaml.safe_load(text)
    listener = doc["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["port_value"] == 18080
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    assert clusters["upstream"]["type"] == "STRICT_DNS"
    assert clusters["extauthz"]["type"] == "STATIC"


def _hcm(doc: dict) -> dict:
    return doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def test_filter_chain_shape() -> None:
    doc = yaml.safe_load(render())
    hcm = _hcm(doc)
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == [
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.ext_proc",
        "mcp_extauthz.observe",
        "envoy.filters.http.router",
    ]
    filters = {f["name"]: f["typed_config"] for f in hcm["http_filters"]}
    authz = filters["envoy.filters.http.ext_authz"]
    assert authz["failure_mode_allow"] is False
    assert authz["clear_route_cache"] is True
    assert authz["with_request_body"] == {"max_request_bytes": 262144, "allow_partial_message": False, "pack_as_bytes": True}
    assert authz["metadata_context_namespaces"] == ["envoy.filters.http.jwt_authn"]
    proc = filters["envoy.filters.http.ext_proc"]
    assert proc["failure_mode_allow"] is False
    assert proc["processing_mode"]["response_body_mode"] == "STREAMED"
    assert proc["processing_mode"]["request_body_mode"] == "NONE"
    jwt = filters["envoy.filters.http.jwt_authn"]
    provider = next(iter(jwt["providers"].values()))
    assert provider["payload_in_metadata"] == "jwt_payload"
    assert provider["local_jwks"]["inline_string"].strip() != ""
    observe = filters["mcp_extauthz.observe"]       # sampled call results: Envoy never waits for it
    assert observe["observability_mode"] is True and observe["failure_mode_allow"] is True
    assert observe["processing_mode"]["response_body_mode"] == "STREAMED"
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    # learn route: the synchronous ext_proc only; observe route: the observability one only;
    # everything else: neither
    assert routes[0]["match"]["headers"][0]["name"] == LEARN_HEADER
    assert set(routes[0]["typed_per_filter_config"]) == {"mcp_extauthz.observe"}
    assert routes[1]["match"]["headers"][0]["name"] == "x-mcp-extauthz-observe"
    assert set(routes[1]["typed_per_filter_config"]) == {"envoy.filters.http.ext_proc"}
    assert all(c["disabled"] is True for r in routes for c in r.get("typed_per_filter_config", {}).values())
    assert set(routes[2]["typed_per_filter_config"]) == {"envoy.filters.http.ext_proc", "mcp_extauthz.observe"}
    for r in routes:
        assert r["route"]["timeout"] == "0s"
        assert "host_rewrite_literal" not in r["route"] and "auto_host_rewrite" not in r["route"]
    stripped = [m["remove"] for m in hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"]]
    assert LEARN_HEADER in stripped


def test_render_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        render(listen_port=0)
    with pytest.raises(ValueError):
        render(upstream_host="evil}: x")
    with pytest.raises(ValueError):
        render(jwks_json='{"keys": []}')
    with pytest.raises(ValueError):
        render(max_request_bytes=0)


def test_demo_jwks_is_a_public_rsa_key() -> None:
    import json

    (key,) = json.loads(DEMO_JWKS)["keys"]
    assert key["kty"] == "RSA" and "d" not in key and "p" not in key
