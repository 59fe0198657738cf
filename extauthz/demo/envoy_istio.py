"""Render an Envoy v3 bootstrap shaped like what an Istio sidecar runs for mcp-extauthz.

``python -m extauthz.demo.envoy_istio > envoy/istio-style.yaml`` regenerates the checked-in file;
``tests/e2e/test_istio_style.py`` fails when the two drift apart, and runs it against a real Envoy.
See the "Istio-style example" section of ``envoy/README.md``.

Each filter is written the way Istio (pilot, 2026 main branch) renders the resource it comes from:

- ``RequestAuthentication`` with ``outputPayloadToHeader: x-jwt-payload`` -> ``jwt_authn`` with
  ``forward_payload_header: x-jwt-payload`` (unpadded base64url JSON of the verified claims),
  ``requires_any: [provider, allow_missing]``, ``forward: false`` (``forwardOriginalToken``
  defaults to false, so the ``Authorization`` header is dropped once verified),
  ``payload_in_metadata: payload``, ``bypass_cors_preflight: true``.
- ``AuthorizationPolicy {action: CUSTOM, provider: mcp-extauthz, rules: [{}]}`` with the mesh
  ``extensionProviders[].envoyExtAuthzGrpc`` -> an ``rbac`` filter holding the policy as
  *shadow* rules (it never enforces; it only records which CUSTOM policy matched) and an
  ``ext_authz`` filter enabled by that record (``filter_enabled_metadata``). Istio renders no
  ``metadata_context_namespaces``, no ``clear_route_cache``, no ``include_peer_certificate`` and
  no ``status_on_error`` (Envoy's default 403 applies); ``failOpen: false`` and
  ``includeRequestBodyInCheck`` map straight across.
- An ``EnvoyFilter`` -> ``ext_proc`` on **every** request (Istio's sidecar routes come from
  pilot, so the route pair that ``envoy.yaml`` uses to keep calls out of ext_proc would need more
  EnvoyFilter patches, and the ext_authz provider cannot clear the route cache anyway), and a
  ``header_mutation`` filter at the very front of the chain that deletes client-sent copies of the
  headers that only the proxy or the service may set, ``x-jwt-payload`` above all.

Filter order. A stock Istio proxy puts the CUSTOM pair (rbac + ext_authz) *before* ``jwt_authn``
(pilot ``listener_builder.go``; istio/istio#35941, #51173), so on one proxy ext_authz can never
see the header ``jwt_authn`` writes. The default here is the order that works::

    header_mutation (strip) -> jwt_authn -> rbac (shadow) -> ext_authz -> ext_proc -> router

which is what a request crosses in an Istio mesh where the ingress gateway verifies the token
(RequestAuthentication + outputPayloadToHeader) and the MCP server's sidecar runs the CUSTOM
policy, or where one sidecar gets ext_authz from an EnvoyFilter inserted after ``jwt_authn``.
``ext_authz_before_jwt_authn=True`` renders the stock single-proxy order instead, so that its
failure is something a test can show rather than a claim.

The strip. Envoy's ``jwt_authn`` deletes a client-sent copy of its ``forward_payload_header``
itself before it verifies (also when there is no token), so in the default order the strip is
defence in depth for ``x-jwt-payload``. It is what stands between a forged ``x-jwt-payload`` and
ext_authz whenever ext_authz runs before ``jwt_authn`` (Istio's stock order: there a request
without a token and with a forged header is decided as whoever the header names), and it is the
only protection for the other headers only the service may set (``x-mcp-extauthz-learn``,
``x-mcp-*``), which no Envoy filter sanitizes.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from extauthz.demo.envoy_config import (
    DEMO_JWKS,
    STRIPPED_CLIENT_HEADERS,
    _cluster_type,
    _duration,
    _host,
    _port,
    checked_common,
)
from extauthz.demo.tokens import AUDIENCE, ISSUER
from extauthz.mcp.learnheader import LEARN_HEADER

__all__ = ["PAYLOAD_HEADER", "STRIP_MODES", "render", "main"]

#: Istio's RequestAuthentication ``outputPayloadToHeader``; the policy's identity source is
#: ``header: {name: x-jwt-payload, encoding: base64url-json}``.
PAYLOAD_HEADER = "x-jwt-payload"

#: Where client-sent copies of ``STRIPPED_CLIENT_HEADERS`` are deleted:
#: ``http_filter``: an ``envoy.filters.http.header_mutation`` filter first in the chain
#:   (EnvoyFilter ``applyTo: HTTP_FILTER, patch: {operation: INSERT_FIRST}``).
#: ``early``: HCM ``early_header_mutation_extensions`` (EnvoyFilter ``applyTo: NETWORK_FILTER``,
#:   ``operation: MERGE`` on the http_connection_manager); runs before route selection too.
#: ``route``: route ``request_headers_to_remove`` only, i.e. what a VirtualService
#:   ``headers.request.remove`` gives you. It is applied by the router, after every filter, so
#:   ext_authz still sees a forged header. Rendered only to demonstrate that hole.
STRIP_MODES = ("http_filter", "early", "route")

HEADER_COMMENT = """\
# GENERATED FILE - do not edit by hand.
#   python -m extauthz.demo.envoy_istio > envoy/istio-style.yaml
# Envoy v3 bootstrap shaped like an Istio sidecar for mcp-extauthz: MCP clients -> :{listen_port} ->
# strip client identity headers -> jwt_authn (x-jwt-payload) -> rbac shadow + ext_authz (CUSTOM
# provider) -> ext_proc (EnvoyFilter) -> MCP server. The service reads the caller from x-jwt-payload.
# The inline JWKS is a DEMO public key with no published private half. See envoy/README.md.
"""

_STRIP_FILTER = """\
          # EnvoyFilter (HTTP_FILTER, INSERT_FIRST): delete client-sent copies of the headers only
          # the proxy or the service may set. First, ahead of ext_authz wherever it sits: in Istio's
          # stock order (ext_authz before jwt_authn) a request with NO token would otherwise reach
          # Check with a forged x-jwt-payload. (jwt_authn also deletes that one header itself.)
          - name: envoy.filters.http.header_mutation
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
              mutations:
                request_mutations:
{removes}
"""

_EARLY_STRIP = """\
          # EnvoyFilter (NETWORK_FILTER, MERGE into the HCM): delete client-sent copies of the
          # headers only the proxy or the service may set, before route selection and every filter.
          early_header_mutation_extensions:
          - name: envoy.http.early_header_mutation.header_mutation
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation
              mutations:
{removes}
"""

_JWT_AUTHN = """\
          # RequestAuthentication {{jwtRules: [{{issuer, audiences, jwks, outputPayloadToHeader:
          # x-jwt-payload}}]}}. A bad token is answered 401 here; no token passes on (allow_missing)
          # and the service answers 401 itself. forward: false is forwardOriginalToken's default.
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                origins-0:
                  issuer: {issuer}
                  audiences: [{audience}]
                  forward: false
                  forward_payload_header: {payload_header}
                  pad_forward_payload_header: false
                  # Istio always sets these; nothing here reads them (ext_authz gets no metadata).
                  payload_in_metadata: payload
                  normalize_payload_in_metadata:
                    space_delimited_claims: [permission, scope]
                  local_jwks:
                    inline_string: |
{jwks}
              rules:
              - match: {{prefix: /}}
                requires:
                  requires_any:
                    requirements:
                    - provider_name: origins-0
                    - allow_missing: {{}}
              bypass_cors_preflight: true
"""

_CUSTOM_AUTHZ = """\
          # AuthorizationPolicy {{action: CUSTOM, provider: {{name: {provider}}}, rules: [{{}}]}}:
          # shadow rules only record which CUSTOM policy matched; they never deny.
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              shadow_rules:
                action: DENY
                policies:
                  "{policy_name}":
                    permissions:
                    - and_rules:
                        rules:
                        - any: true
                    principals:
                    - and_ids:
                        ids:
                        - any: true
              shadow_rules_stat_prefix: istio_ext_authz_
          # meshConfig.extensionProviders[{provider}].envoyExtAuthzGrpc {{service, port, timeout,
          # failOpen: false, includeRequestBodyInCheck: {{maxRequestBytes, allowPartialMessage: false,
          # packAsBytes: true}}}}. Runs only when the rbac filter above recorded a CUSTOM match:
          # a request no CUSTOM rule matches is never checked (keep rules: [{{}}]).
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              grpc_service:
                envoy_grpc:
                  cluster_name: "{authz_cluster}"
                  authority: {authz_service}
                timeout: {authz_timeout}
              failure_mode_allow: false
              with_request_body:
                max_request_bytes: {max_request_bytes}
                allow_partial_message: false
                pack_as_bytes: true
              filter_enabled_metadata:
                filter: envoy.filters.http.rbac
                path:
                - key: istio_ext_authz_shadow_effective_policy_id
                value:
                  string_match:
                    prefix: istio-ext-authz-{provider}
"""

_TEMPLATE = """\
admin:
  address:
    socket_address: {{address: "{admin_address}", port_value: {admin_port}}}

static_resources:
  listeners:
  - name: mcp
    address:
      socket_address: {{address: "{listen_address}", port_value: {listen_port}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound_0.0.0.0_{upstream_port}
          codec_type: AUTO
          # As a sidecar's inbound HCM: trust no client address, normalise paths
          # (meshConfig.pathNormalization BASE), no stream idle timeout (long SSE GETs).
          use_remote_address: false
          normalize_path: true
          stream_idle_timeout: 0s
{early_strip}\
          route_config:
            name: "inbound|{upstream_port}||"
            virtual_hosts:
            - name: "inbound|http|{upstream_port}"
              domains: ["*"]
              routes:
              - name: default
                match: {{prefix: /}}
                route:
                  cluster: "inbound|{upstream_port}||"
                  timeout: 0s
{route_strip}\
          http_filters:
{http_filters}\
          # EnvoyFilter (HTTP_FILTER, INSERT_BEFORE envoy.filters.http.router): ext_proc on every
          # request. The service strips {learn_header} (added by Check on learnable requests) in
          # its request_headers answer and learns specs from the responses it marked.
          - name: envoy.filters.http.ext_proc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
              grpc_service:
                envoy_grpc:
                  cluster_name: "{authz_cluster}"
                  authority: {authz_service}
              failure_mode_allow: false
              message_timeout: {message_timeout}
              processing_mode:
                request_header_mode: SEND
                response_header_mode: SEND
                request_body_mode: NONE
                response_body_mode: STREAMED
                request_trailer_mode: SKIP
                response_trailer_mode: SKIP
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router

  clusters:
  # Istio's cluster for the provider's service: outbound|<port>||<service FQDN>.
  - name: "{authz_cluster}"
    type: {authz_cluster_type}
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: "{authz_cluster}"
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: "{authz_host}", port_value: {authz_port}}}
  # The sidecar's inbound cluster: the MCP server in the same pod.
  - name: "inbound|{upstream_port}||"
    type: {upstream_cluster_type}
    connect_timeout: 2s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http_protocol_options: {{}}
    load_assignment:
      cluster_name: "inbound|{upstream_port}||"
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: "{upstream_host}", port_value: {upstream_port}}}
"""

_NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789-.")


def _dns_name(name: str, value: str) -> str:
    if not value or not set(value) <= _NAME_OK or value[0] in "-." or value[-1] in "-.":
        raise ValueError(f"{name} must be a lowercase DNS name, got {value!r}")
    return value


def render(
    *,
    listen_port: int = 10000,
    upstream_host: str = "127.0.0.1",
    upstream_port: int = 8000,
    authz_host: str = "127.0.0.1",
    authz_port: int = 9191,
    admin_port: int = 9901,
    jwks_json: str = DEMO_JWKS,
    max_request_bytes: int = 262144,
    listen_address: str = "127.0.0.1",
    admin_address: str = "127.0.0.1",
    issuer: str = ISSUER,
    audience: str = AUDIENCE,
    authz_timeout: str = "2s",
    message_timeout: str = "2s",
    header_comment: bool = True,
    provider: str = "mcp-extauthz",
    authz_service: str = "mcp-extauthz.mcp-extauthz.svc.cluster.local",
    namespace: str = "mcp",
    strip: str = "http_filter",
    ext_authz_before_jwt_authn: bool = False,
) -> str:
    """Return the Istio-style Envoy v3 bootstrap YAML (see the module docstring).

    The first keyword arguments are those of :func:`extauthz.demo.envoy_config.render`.
    ``provider``: the meshConfig extension provider name (also in the CUSTOM policy's name and
    the ext_authz enabling prefix). ``authz_service``: its service FQDN (cluster name and gRPC
    authority, as Istio renders them). ``namespace``: the AuthorizationPolicy's namespace.
    ``strip``: one of :data:`STRIP_MODES`. ``ext_authz_before_jwt_authn``: the stock single-proxy
    Istio order (CUSTOM before jwt_authn), in which ext_authz cannot see ``x-jwt-payload``.
    """
    jwks = checked_common(jwks_json, max_request_bytes, issuer, audience)
    if strip not in STRIP_MODES:
        raise ValueError(f"strip must be one of {STRIP_MODES}, got {strip!r}")
    _dns_name("provider", provider)
    _dns_name("authz_service", authz_service)
    _dns_name("namespace", namespace)
    authz_port = _port("authz_port", authz_port)
    upstream_port = _port("upstream_port", upstream_port)

    fmt = {
        "issuer": issuer,
        "audience": audience,
        "payload_header": PAYLOAD_HEADER,
        "jwks": textwrap.indent(json.dumps(jwks, indent=2), " " * 22),
        "provider": provider,
        "policy_name": f"istio-ext-authz-{provider}-ns[{namespace}]-policy[{provider}]-rule[0]",
        "authz_cluster": f"outbound|{authz_port}||{authz_service}",
        "authz_service": authz_service,
        "authz_timeout": _duration("authz_timeout", authz_timeout),
        "max_request_bytes": max_request_bytes,
    }
    jwt_authn = _JWT_AUTHN.format(**fmt)
    custom = _CUSTOM_AUTHZ.format(**fmt)
    auth = custom + jwt_authn if ext_authz_before_jwt_authn else jwt_authn + custom

    early_strip = route_strip = strip_filter = ""
    if strip == "http_filter":
        strip_filter = _STRIP_FILTER.format(
            removes="\n".join(f"                - remove: {h}" for h in STRIPPED_CLIENT_HEADERS))
    elif strip == "early":
        early_strip = _EARLY_STRIP.format(
            removes="\n".join(f"              - remove: {h}" for h in STRIPPED_CLIENT_HEADERS))
    else:
        route_strip = (
            "                # VirtualService headers.request.remove: applied by the router, AFTER\n"
            "                # ext_authz has seen the request. Does not protect the identity header.\n"
            f"                request_headers_to_remove: [{', '.join(STRIPPED_CLIENT_HEADERS)}]\n"
        )

    body = _TEMPLATE.format(
        admin_address=_host("admin_address", admin_address),
        admin_port=_port("admin_port", admin_port),
        listen_address=_host("listen_address", listen_address),
        listen_port=_port("listen_port", listen_port),
        upstream_host=_host("upstream_host", upstream_host),
        upstream_port=upstream_port,
        upstream_cluster_type=_cluster_type(upstream_host),
        authz_host=_host("authz_host", authz_host),
        authz_port=authz_port,
        authz_cluster_type=_cluster_type(authz_host),
        authz_cluster=fmt["authz_cluster"],
        authz_service=authz_service,
        learn_header=LEARN_HEADER,
        message_timeout=_duration("message_timeout", message_timeout),
        early_strip=early_strip,
        route_strip=route_strip,
        http_filters=strip_filter + auth,
    )
    if header_comment:
        return HEADER_COMMENT.format(listen_port=listen_port) + body
    return body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m extauthz.demo.envoy_istio",
        description="Print the Istio-style mcp-extauthz Envoy bootstrap (defaults = envoy/istio-style.yaml).",
    )
    p.add_argument("--listen-port", type=int, default=10000)
    p.add_argument("--listen-address", default="127.0.0.1")
    p.add_argument("--upstream-host", default="127.0.0.1")
    p.add_argument("--upstream-port", type=int, default=8000)
    p.add_argument("--authz-host", default="127.0.0.1")
    p.add_argument("--authz-port", type=int, default=9191)
    p.add_argument("--admin-port", type=int, default=9901)
    p.add_argument("--max-request-bytes", type=int, default=262144)
    p.add_argument("--jwks", metavar="FILE", help="JWKS JSON file (default: the demo public key)")
    p.add_argument("--strip", choices=STRIP_MODES, default="http_filter")
    a = p.parse_args(argv)
    jwks_json = DEMO_JWKS
    if a.jwks:
        with open(a.jwks, encoding="utf-8") as f:
            jwks_json = f.read()
    sys.stdout.write(
        render(
            listen_port=a.listen_port,
            listen_address=a.listen_address,
            upstream_host=a.upstream_host,
            upstream_port=a.upstream_port,
            authz_host=a.authz_host,
            authz_port=a.authz_port,
            admin_port=a.admin_port,
            max_request_bytes=a.max_request_bytes,
            jwks_json=jwks_json,
            strip=a.strip,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
