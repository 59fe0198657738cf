"""The Istio-style Envoy example (envoy/istio-style.yaml, extauthz.demo.envoy_istio) against a real
Envoy 1.40, the real extauthz service and the demo CRM server on the real MCP SDK.

Here the service has no jwt_authn metadata (Istio's ext_authz provider forwards none): its only
identity source is the `x-jwt-payload` header that jwt_authn writes (Istio outputPayloadToHeader).
Three more stacks show why the example is arranged the way it is: Istio's stock single-proxy order
(CUSTOM ext_authz before jwt_authn) leaves ext_authz with no identity at all, and, without the strip
filter at the front, trusts a forged `x-jwt-payload` from a request with no token; with jwt_authn
first, Envoy drops a client-sent payload header itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from extauthz.demo import envoy_istio
from extauthz.demo.agent import attempt, connect
from extauthz.demo.envoy_config import STRIPPED_CLIENT_HEADERS
from extauthz.demo.stack import Stack
from extauthz.demo.tokens import TokenIssuer

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "envoy" / "istio-style.yaml"
ENVOY = shutil.which("envoy")

pytestmark = [
    pytest.mark.e2e,
]

HEADER_SOURCE = {"header": {"name": "x-jwt-payload", "encoding": "base64url-json"}}


class IstioStack(Stack):
    """A Stack whose Envoy runs the Istio-style bootstrap (envoy_options go to envoy_istio.render)."""

    renderer = staticmethod(envoy_istio.render)


def header_only_policy(path: Path, upstream_url: str) -> Path:
    """default.yaml with identity.sources replaced by the x-jwt-payload header source alone."""
    policy = yaml.safe_load(resources.files("extauthz.policy").joinpath("default.yaml").read_text())
    policy["identity"]["sources"] = [HEADER_SOURCE]
    policy["servers"][0]["upstream"] = upstream_url  # discovery goes to this stack's server
    path.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
    return path


def start_stack(tmp: Path, tokens: TokenIssuer, **envoy_options: Any) -> IstioStack:
    stack = IstioStack(tmp / "policy.yaml", tokens=tokens, envoy_options=envoy_options)
    header_only_policy(tmp / "policy.yaml", stack.upstream_url)
    return stack.start()


def forged_payload(**claims: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")


FORGED_ADMIN = forged_payload(iss="https://issuer.mcp-extauthz.local", sub="root", groups=["admin"],
                              customer_ids=["c-100", "c-200"])

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "istio-style-test", "version": "1"}}}


def post(stack: Stack, body: Any, token: str | None = None, **headers: str) -> httpx.Response:
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream", **headers}
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    return httpx.post(stack.url, json=body, headers=h, timeout=10)


def envoy_validate(path: Path) -> None:
    proc = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "--log-level", "warn", "--disable-hot-restart"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, f"envoy rejected {path}:\n{proc.stdout}\n{proc.stderr}"


def http_filters(text: str) -> list[dict[str, Any]]:
    listener = yaml.safe_load(text)["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]


# --- (1) the checked-in file ---------------------------------------------------------------------

def test_checked_in_istio_config_validates_and_is_render_output() -> None:
    envoy_validate(CHECKED_IN)
    assert CHECKED_IN.read_text(encoding="utf-8") == envoy_istio.render(), (
        "envoy/istio-style.yaml is stale: run `python -m extauthz.demo.envoy_istio > envoy/istio-style.yaml`"
    )


def test_main_prints_render(capsys: pytest.CaptureFixture[str]) -> None:
    assert envoy_istio.main([]) == 0
    assert capsys.readouterr().out == envoy_istio.render()


def test_rendered_filters_are_shaped_as_istio_renders_them() -> None:
    filters = http_filters(envoy_istio.render())
    names = [f["name"] for f in filters]
    assert names == ["envoy.filters.http.header_mutation", "envoy.filters.http.jwt_authn",
                     "envoy.filters.http.rbac", "envoy.filters.http.ext_authz",
                     "envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    strip = filters[0]["typed_config"]["mutations"]["request_mutations"]
    assert [m["remove"] for m in strip] == list(STRIPPED_CLIENT_HEADERS)
    assert "x-jwt-payload" in STRIPPED_CLIENT_HEADERS

    jwt = filters[1]["typed_config"]["providers"]["origins-0"]
    assert jwt["forward_payload_header"] == "x-jwt-payload"
    assert jwt["pad_forward_payload_header"] is False
    assert jwt["forward"] is False

    authz = filters[3]["typed_config"]
    assert authz["with_request_body"] == {"max_request_bytes": 262144, "allow_partial_message": False,
                                          "pack_as_bytes": True}
    assert authz["failure_mode_allow"] is False
    for absent in ("metadata_context_namespaces", "clear_route_cache", "include_peer_certificate",
                   "status_on_error"):
        assert absent not in authz, absent
    enabled = authz["filter_enabled_metadata"]
    policy_names = list(filters[2]["typed_config"]["shadow_rules"]["policies"])
    assert policy_names[0].startswith(enabled["value"]["string_match"]["prefix"])

    routes = yaml.safe_load(envoy_istio.render())["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert len(routes) == 1 and "typed_per_filter_config" not in routes[0]  # ext_proc on every request


@pytest.mark.parametrize("options", [{"strip": "early"}, {"strip": "route"}, {"ext_authz_before_jwt_authn": True},
                                     {"upstream_host": "localhost", "authz_host": "extauthz", "listen_port": 18080}],
                         ids=["early-strip", "route-strip", "custom-before-jwt", "hostnames"])
def test_variants_validate(tmp_path: Path, tokens: TokenIssuer, options: dict[str, Any]) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(envoy_istio.render(jwks_json=tokens.jwks_json(), **options), encoding="utf-8")
    envoy_validate(path)


def test_render_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        envoy_istio.render(strip="nowhere")
    with pytest.raises(ValueError):
        envoy_istio.render(provider="Bad Name")
    with pytest.raises(ValueError):
        envoy_istio.render(jwks_json='{"keys": []}')


# --- (2)-(4) through the real Envoy --------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tokens: TokenIssuer) -> Iterator[IstioStack]:
    s = start_stack(tmp_path_factory.mktemp("istio"), tokens)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def support(tokens: TokenIssuer) -> str:
    return tokens.mint("alice", groups=["support"], customer_ids=["c-100"])


def test_support_user_through_sdk_client(stack: IstioStack, support: str) -> None:
    async def run() -> dict[str, tuple[str, str, str]]:
        async with connect(stack.url, support, "legacy") as c:
            return {
                "list": await attempt(c.list_tools),
                "lookup": await attempt(lambda: c.call_tool("lookup_customer", {"customer_id": "c-100"})),
                "export": await attempt(lambda: c.call_tool("export_customers", {"format": "csv"})),
                "extra": await attempt(lambda: c.call_tool(
                    "lookup_customer", {"customer_id": "c-100", "include_internal_notes": True})),
            }
    got = asyncio.run(run())
    verdict, _, summary = got["list"]
    assert verdict == "allowed"
    assert "lookup_customer" in summary
    assert got["lookup"][:2] == ("allowed", "")
    assert got["export"][:2] == ("DENIED", "not_allowed")
    assert got["extra"][:2] == ("DENIED", "schema_violation")

    decisions = httpx.get(stack.service_admin_url + "/v1/decisions?limit=100").json()["decisions"]
    assert any(d["reason"] == "not_allowed" and "alice" in json.dumps(d["caller"]) for d in decisions)
    # The spec was learned through ext_proc (on every request here), so the calls were decidable.
    inv = httpx.get(stack.service_admin_url + "/v1/inventory").json()
    crm = next(s for s in inv["servers"] if s["server"] == "crm")
    assert "export_customers" in {t["name"] for t in crm["tools"]}


def test_forged_payload_header_without_token_is_401(stack: IstioStack) -> None:
    r = post(stack, INITIALIZE, None, **{"x-jwt-payload": FORGED_ADMIN})
    assert r.status_code == 401
    # The service answered (Envoy's own 401s carry no reason header): it saw no identity at all.
    assert r.headers["x-mcp-extauthz-reason"] == "unauthenticated"
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_forged_payload_header_next_to_a_valid_token_changes_nothing(stack: IstioStack, support: str) -> None:
    async def run() -> tuple[str, str, str]:
        async with connect(stack.url, support, "legacy", headers={"x-jwt-payload": FORGED_ADMIN}) as c:
            await c.list_tools()
            return await attempt(lambda: c.call_tool("export_customers", {"format": "csv"}))
    assert asyncio.run(run())[:2] == ("DENIED", "not_allowed")


@pytest.mark.parametrize("kind", ["other-key", "expired", "garbage"])
def test_bad_token_is_401_from_envoy(stack: IstioStack, other_tokens: TokenIssuer, tokens: TokenIssuer,
                                     kind: str) -> None:
    token = {
        "other-key": lambda: other_tokens.mint("alice", groups=["admin"]),
        "expired": lambda: tokens.mint("alice", groups=["support"], ttl=-120),
        "garbage": lambda: "not.a.jwt",
    }[kind]()
    r = post(stack, INITIALIZE, token, **{"x-jwt-payload": FORGED_ADMIN})
    assert r.status_code == 401
    assert "invalid_token" in r.headers.get("www-authenticate", "")
    assert "x-mcp-extauthz-reason" not in r.headers  # jwt_authn answered; Check never ran


def test_body_over_max_request_bytes_is_413_from_envoy(stack: IstioStack, support: str) -> None:
    big = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"p": "x" * 300_000}}
    r = post(stack, big, support)
    assert r.status_code == 413
    assert "x-mcp-extauthz-reason" not in r.headers  # ext_authz answered; no local_reply_config in Istio


# --- why the example is arranged this way --------------------------------------------------------

def _forged_admin_session(stack: Stack) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    """No token at all; a forged admin x-jwt-payload on every request of a real SDK session."""
    async def run() -> tuple[tuple[str, str, str], tuple[str, str, str]]:
        async with connect(stack.url, None, "legacy", headers={"x-jwt-payload": FORGED_ADMIN}) as c:
            listed = await attempt(c.list_tools)
            return listed, await attempt(lambda: c.call_tool("export_customers", {"format": "csv"}))
    return asyncio.run(run())


def test_stock_istio_order_hides_the_payload_header_from_ext_authz(tmp_path: Path, tokens: TokenIssuer,
                                                                    support: str) -> None:
    """Istio puts the CUSTOM ext_authz before jwt_authn: a valid token yields no identity for Check."""
    stack = start_stack(tmp_path, tokens, ext_authz_before_jwt_authn=True)
    try:
        valid = post(stack, INITIALIZE, support)
        forged = post(stack, INITIALIZE, None, **{"x-jwt-payload": FORGED_ADMIN})
    finally:
        stack.stop()
    assert valid.status_code == 401 and valid.headers["x-mcp-extauthz-reason"] == "unauthenticated"
    assert forged.status_code == 401 and forged.headers["x-mcp-extauthz-reason"] == "unauthenticated"


def test_stock_istio_order_without_the_strip_filter_trusts_a_forged_identity(tmp_path: Path,
                                                                             tokens: TokenIssuer) -> None:
    """The same order with the strip only at the route (a VirtualService `headers.request.remove`,
    applied by the router after ext_authz): a request with no token is decided as a forged admin."""
    stack = start_stack(tmp_path, tokens, ext_authz_before_jwt_authn=True, strip="route")
    try:
        listed, exported = _forged_admin_session(stack)
    finally:
        stack.stop()
    assert listed[0] == "allowed"
    assert exported[:2] == ("allowed", "")  # no token at all, yet an admin-only tool ran


def test_jwt_authn_deletes_a_client_payload_header_itself(tmp_path: Path, tokens: TokenIssuer) -> None:
    """With jwt_authn ahead of ext_authz, Envoy already drops a client-sent forward_payload_header
    (even with no token): without the strip filter the forged identity still never reaches Check."""
    stack = start_stack(tmp_path, tokens, strip="route")
    try:
        r = post(stack, INITIALIZE, None, **{"x-jwt-payload": FORGED_ADMIN})
    finally:
        stack.stop()
    assert r.status_code == 401 and r.headers["x-mcp-extauthz-reason"] == "unauthenticated"
