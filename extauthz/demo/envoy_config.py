"""Render the Envoy v3 bootstrap that puts mcp-extauthz in front of an MCP server.

``python -m extauthz.demo.envoy_config > envoy/envoy.yaml`` regenerates the checked-in config;
``tests/e2e/test_envoy_config.py`` fails when the two drift apart. See ``envoy/README.md`` for what
each filter does and how to carry it over to your own Envoy.

Filter chain (in order): ``jwt_authn`` (verify a bearer token if present, claims into dynamic
metadata) -> ``ext_authz`` (gRPC Check with the buffered raw body; the service answers 401 for a
missing token itself) -> ``ext_proc`` (response headers and STREAMED body to the same service, only
on the route chosen by the ``x-mcp-extauthz-learn`` header that Check adds) -> a second ext_proc in
observability mode (sampled call results, on the route chosen by ``x-mcp-extauthz-observe``; Envoy
never waits for it) -> ``router``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
import textwrap

from extauthz.demo.tokens import AUDIENCE, ISSUER
from extauthz.mcp.learnheader import LEARN_HEADER, OBSERVE_HEADER

#: LEARN_HEADER: the ext_authz service adds it (non-empty) to requests whose responses it learns
#: from (initialize, server/discover, */list). Its presence selects the route with ext_proc enabled.
#: OBSERVE_HEADER: added to calls whose results it only observes (sampled tools/call,
#: resources/read, prompts/get: sizes and sensitive-data counts). Its presence selects the route
#: with the second, observability-mode ext_proc filter: Envoy never waits for it.

#: Request headers that only Envoy or the ext_authz service may set: any copy the client sends is
#: dropped before route selection and before any filter runs.
STRIPPED_CLIENT_HEADERS = (
    LEARN_HEADER,
    OBSERVE_HEADER,
    "x-jwt-payload",  # an identity source the service may trust (Istio outputPayloadToHeader)
    "x-mcp-server",
    "x-mcp-method",
    "x-mcp-name",
    "x-mcp-caller",
    "x-mcp-decision-id",
)

#: The public half of a fixed demo key (RS256, kid "mcp-extauthz-demo"). Its private key is not
#: shipped anywhere: the checked-in envoy/envoy.yaml validates and serves, but to get a token it
#: accepts, render with your own JWKS (``--jwks``) or use :class:`extauthz.demo.stack.Stack`,
#: which renders with the runtime key of a :class:`extauthz.demo.tokens.TokenIssuer`.
DEMO_JWKS = json.dumps(
    {
        "keys": [
            {
                "kty": "RSA",
                "alg": "RS256",
                "use": "sig",
                "kid": "mcp-extauthz-demo",
                "e": "AQAB",
                "n": (
                    "olErUegUnuawspvNnzgd9w46VAscBgyKs8IOOaKZTjYLmUv7YBc_iWR8wmxpXnz5aC0k42HDKX59wmE"
                    "Hqg8u5KX5JSVv_xBmfe-Y4WNOP_SGdqcQ0Cy9NX_iVWK177IBkp9h88rJpvGKTY1s0euZDGlVZtMdAOKR"
                    "-_fVFkvk9v24sets0KujSJ6n3ZTy6pRQ3K7kb0OS6NjoZogETI8ZEHpKvgWiqPlhtbmofkddmvSg9V0MR"
                    "gV8uJq_877jcjTld4C6PA_7wVMSLMZ1ZXZ2lt8ZV_89hdN7DLm3yZtc096IdmqHhaPs9F0m0vOAQfEqA7"
                    "_GRXAbdFl45ySq1w7IBQ"
                ),
            }
        ]
    },
    separators=(",", ":"),
)

HEADER_COMMENT = """\
# GENERATED FILE - do not edit by hand.
#   python -m extauthz.demo.envoy_config > envoy/envoy.yaml
# Envoy v3 bootstrap: MCP clients -> :{listen_port} -> jwt_authn -> ext_authz -> ext_proc -> MCP server.
# The inline JWKS is a DEMO public key with no published private half: replace it with your
# issuer's keys (remote_jwks in production). See envoy/README.md.
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
          stat_prefix: mcp
          codec_type: AUTO
          use_remote_address: true
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
          # Runs before route selection and before every filter: a client cannot pick the ext_proc
          # route, nor pose as an identity header, by sending these itself.
          early_header_mutation_extensions:
          - name: envoy.http.early_header_mutation.header_mutation
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation
              mutations:
{stripped_headers}
          # Envoy's own denials look like the service's: the reason header and a JSON-RPC error
          # body (id null: the body was not read). Matched on response code details, so a 401/413
          # that the ext_authz service itself answered passes through untouched.
          local_reply_config:
            mappers:
            # jwt_authn rejected a token: 401 for every failure (it would answer 403 for a wrong
            # audience), keeping its WWW-Authenticate: Bearer ... error="invalid_token".
            - filter:
                extension_filter:
                  name: envoy.access_loggers.extension_filters.cel
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter
                    expression: "response.code_details.startsWith('jwt_authn_access_denied')"
              status_code: 401
              headers_to_add:
              - header: {{key: x-mcp-extauthz-reason, value: unauthenticated}}
                append_action: OVERWRITE_IF_EXISTS_OR_ADD
              - header: {{key: www-authenticate, value: 'Bearer error="invalid_token"'}}
                append_action: ADD_IF_ABSENT
              body_format_override:
                content_type: application/json
                text_format_source:
                  inline_string: '{{"jsonrpc":"2.0","id":null,"error":{{"code":-32001,"message":"invalid bearer token","data":{{"reason":"unauthenticated"}}}}}}'
            # Body above with_request_body.max_request_bytes: ext_authz answers 413 itself.
            - filter:
                extension_filter:
                  name: envoy.access_loggers.extension_filters.cel
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter
                    expression: "response.code_details == 'request_payload_too_large'"
              headers_to_add:
              - header: {{key: x-mcp-extauthz-reason, value: payload_too_large}}
                append_action: OVERWRITE_IF_EXISTS_OR_ADD
              body_format_override:
                content_type: application/json
                text_format_source:
                  inline_string: '{{"jsonrpc":"2.0","id":null,"error":{{"code":-32600,"message":"request body too large","data":{{"reason":"payload_too_large"}}}}}}'
          route_config:
            name: mcp
            virtual_hosts:
            - name: mcp
              domains: ["*"]
              routes:
              # Route 1: ext_authz marked this request as one to learn from (initialize,
              # server/discover, */list). ext_authz clears the route cache after adding the header,
              # so this route is re-selected and ext_proc sees the response.
              - name: learn
                match:
                  prefix: /
                  headers:
                  - name: {learn_header}
                    present_match: true
                route:
                  cluster: upstream
                  timeout: 0s
                request_headers_to_remove: [{learn_header}]
                typed_per_filter_config:
                  mcp_extauthz.observe:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute
                    disabled: true
              # Route 2: a call whose result the service only observes (sampled): the response goes
              # to ext_proc in observability mode, so Envoy never waits for the service on it.
              - name: observe
                match:
                  prefix: /
                  headers:
                  - name: {observe_header}
                    present_match: true
                route:
                  cluster: upstream
                  timeout: 0s
                request_headers_to_remove: [{observe_header}]
                typed_per_filter_config:
                  envoy.filters.http.ext_proc:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute
                    disabled: true
              # Route 3 (everything else): same upstream, ext_proc off - no per-call processing cost.
              - name: default
                match: {{prefix: /}}
                route:
                  cluster: upstream
                  timeout: 0s  # SSE GET streams are long-lived
                typed_per_filter_config:
                  envoy.filters.http.ext_proc:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute
                    disabled: true
                  mcp_extauthz.observe:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute
                    disabled: true
          http_filters:
          # 1. Verify a bearer token when there is one; a bad token is answered 401 here. A missing
          #    token passes on (allow_missing) so the service can answer 401 with its own reason.
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                mcp_extauthz_demo:
                  issuer: {issuer}
                  audiences: [{audience}]
                  require_expiration: true
                  forward: true
                  payload_in_metadata: jwt_payload
                  # An agent sends the same token on every call: verify its signature once, not per
                  # request (per worker, bounded; expiry is still checked on every use).
                  jwt_cache_config: {{jwt_cache_size: 1000}}
                  local_jwks:
                    inline_string: |
{jwks}
              rules:
              - match: {{prefix: /}}
                requires:
                  requires_any:
                    requirements:
                    - provider_name: mcp_extauthz_demo
                    - allow_missing: {{}}
          # 2. Decide: the whole raw body (bounded; 413 above it) plus the verified claims.
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              grpc_service:
                envoy_grpc: {{cluster_name: extauthz}}
                timeout: {authz_timeout}
              failure_mode_allow: false
              status_on_error: {{code: 403}}
              with_request_body:
                max_request_bytes: {max_request_bytes}
                allow_partial_message: false
                pack_as_bytes: true
              metadata_context_namespaces: [envoy.filters.http.jwt_authn]
              include_peer_certificate: true
              clear_route_cache: true
              validate_mutations: true
          # 3. Learn: response headers and streamed body chunks of learnable requests only.
          - name: envoy.filters.http.ext_proc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
              grpc_service:
                envoy_grpc: {{cluster_name: extauthz}}
              failure_mode_allow: false
              message_timeout: {message_timeout}
              processing_mode:
                request_header_mode: SEND
                response_header_mode: SEND
                request_body_mode: NONE
                response_body_mode: STREAMED
                request_trailer_mode: SKIP
                response_trailer_mode: SKIP
              metadata_options:
                forwarding_namespaces:
                  untyped: [envoy.filters.http.jwt_authn, envoy.filters.http.ext_authz]
          # 4. Observe: sampled call results, in observability mode (Envoy sends, never waits, and a
          #    failure of the service never fails the call).
          - name: mcp_extauthz.observe
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
              grpc_service:
                envoy_grpc: {{cluster_name: extauthz}}
              failure_mode_allow: true
              observability_mode: true
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
  - name: extauthz
    type: {authz_cluster_type}
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: extauthz
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: "{authz_host}", port_value: {authz_port}}}{more_authz}
  - name: upstream
    type: {upstream_cluster_type}
    connect_timeout: 2s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http_protocol_options: {{}}
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: "{upstream_host}", port_value: {upstream_port}}}
"""


def _cluster_type(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "STRICT_DNS"
    return "STATIC"


def _port(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ValueError(f"{name} must be a TCP port, got {value!r}")
    return value


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


def _host(name: str, value: str) -> str:
    if _cluster_type(value) == "STATIC" or _HOSTNAME.match(value or ""):
        return value
    raise ValueError(f"{name} must be a hostname or IP address, got {value!r}")


def _duration(name: str, value: str) -> str:
    body = value[:-1] if value.endswith("s") else ""
    try:
        float(body)
    except ValueError:
        raise ValueError(f"{name} must be a protobuf duration like '2s', got {value!r}") from None
    return value


def checked_common(jwks_json: str, max_request_bytes: int, issuer: str, audience: str) -> dict[str, object]:
    """Validate what both renderers (this one and envoy_istio) put into their templates; return
    the parsed JWKS. Fails here, not in Envoy, on a broken value."""
    jwks = json.loads(jwks_json)
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ValueError("jwks_json must be a JWKS object with a non-empty 'keys' list")
    if not isinstance(max_request_bytes, int) or isinstance(max_request_bytes, bool) or max_request_bytes <= 0:
        raise ValueError(f"max_request_bytes must be a positive int, got {max_request_bytes!r}")
    for name, value in (("issuer", issuer), ("audience", audience)):
        if not value or any(c in value for c in " \t\r\n{}[],#'\""):
            raise ValueError(f"{name} contains characters this template does not quote: {value!r}")
    return jwks


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
    more_authz_ports: tuple[int, ...] = (),
) -> str:
    """Return the Envoy v3 bootstrap YAML (see module docstring and envoy/README.md).
    `more_authz_ports`: further replicas of the service on `authz_host` (round robin, per request)."""
    jwks = checked_common(jwks_json, max_request_bytes, issuer, audience)
    body = _TEMPLATE.format(
        admin_address=_host("admin_address", admin_address),
        admin_port=_port("admin_port", admin_port),
        listen_address=_host("listen_address", listen_address),
        listen_port=_port("listen_port", listen_port),
        upstream_host=_host("upstream_host", upstream_host),
        upstream_port=_port("upstream_port", upstream_port),
        upstream_cluster_type=_cluster_type(upstream_host),
        authz_host=_host("authz_host", authz_host),
        authz_port=_port("authz_port", authz_port),
        authz_cluster_type=_cluster_type(authz_host),
        more_authz="".join(f"""
        - endpoint:
            address:
              socket_address: {{address: "{authz_host}", port_value: {_port("more_authz_ports", p)}}}"""
                           for p in more_authz_ports),
        learn_header=LEARN_HEADER,
        observe_header=OBSERVE_HEADER,
        stripped_headers="\n".join(f"              - remove: {h}" for h in STRIPPED_CLIENT_HEADERS),
        issuer=issuer,
        audience=audience,
        jwks=textwrap.indent(json.dumps(jwks, indent=2), " " * 22),
        max_request_bytes=max_request_bytes,
        authz_timeout=_duration("authz_timeout", authz_timeout),
        message_timeout=_duration("message_timeout", message_timeout),
    )
    if header_comment:
        return HEADER_COMMENT.format(listen_port=listen_port) + body
    return body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m extauthz.demo.envoy_config",
        description="Print the mcp-extauthz Envoy bootstrap (defaults = envoy/envoy.yaml).",
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
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
