"""Identity sources, tried in the policy's order; the first that yields a caller wins.

Envoy (jwt_authn) or Istio (RequestAuthentication's outputPayloadToHeader) verified the token
before we see it; we only read the verified claims. A source that is present but unreadable is a
bad identity (401), never a fall-through to the next source.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import orjson

from extauthz.identity.caller import Caller
from extauthz.mcp.request import HttpRequest

if TYPE_CHECKING:   # the policy hands its identity section in; identity does not load policies
    from extauthz.policy.model import Identity


class BadIdentity(Exception):
    """A credential was presented but cannot be read."""


def _decode_header(value: str, encoding: str) -> dict[str, Any]:
    try:
        if encoding == "json":
            raw = value.encode()
        else:
            v = value.strip()
            v += "=" * (-len(v) % 4)
            raw = base64.urlsafe_b64decode(v) if encoding == "base64url-json" else base64.b64decode(v, validate=True)
        claims = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError) as e:
        raise BadIdentity(f"unreadable identity header: {e}") from None
    if type(claims) is not dict:
        raise BadIdentity("identity header is not a JSON object")
    return claims


def _caller_from_claims(claims: dict[str, Any], identity: Identity, source: str) -> Caller:
    sub = claims.get(identity.subject)
    if type(sub) is not str or not sub:
        raise BadIdentity(f"claims carry no {identity.subject!r}")
    iss = claims.get("iss")
    client = ""
    for c in identity.client_id_claims:
        v = claims.get(c)
        if type(v) is str and v:
            client = v
            break
    raw_groups = claims.get(identity.groups_claim)
    if type(raw_groups) is str:
        groups = frozenset(raw_groups.split())
    elif type(raw_groups) is list:
        groups = frozenset(g for g in raw_groups if type(g) is str)
    else:
        groups = frozenset()
    return Caller(iss if type(iss) is str else "", sub, client, groups, claims, source)


_callers: dict[tuple[int, int], tuple[dict[str, Any], Identity, Caller]] = {}


def _cached_caller(claims: dict[str, Any], identity: Identity, source: str) -> Caller:
    """Callers for the same claims object (the transport caches converted claims) and the same
    identity config are built once; the identity check keeps a stale id from ever matching."""
    key = (id(claims), id(identity))
    hit = _callers.get(key)
    if hit is not None and hit[0] is claims and hit[1] is identity:
        return hit[2]
    caller = _caller_from_claims(claims, identity, source)
    if len(_callers) >= 4096:
        _callers.clear()
    _callers[key] = (claims, identity, caller)
    return caller


def resolve_caller(http: HttpRequest, identity: Identity) -> Caller | None:
    """The caller, or None when no source yields one. Raises BadIdentity on an unreadable one."""
    for src in identity.sources:
        if src.kind == "jwtMetadata":
            ns = http.metadata.get(src.filter or "envoy.filters.http.jwt_authn")
            payload = ns.get(src.key or "jwt_payload") if isinstance(ns, dict) else None
            if payload is None and http.jwt_payload is not None:
                payload = http.jwt_payload
            if payload is not None:
                if type(payload) is not dict:
                    raise BadIdentity("jwt metadata is not an object")
                return _cached_caller(payload, identity, "jwt")
        elif src.kind == "header":
            value = http.headers.get((src.name or "x-jwt-payload").lower())
            if value:
                claims = _decode_header(value, src.encoding or "base64url-json")
                return _caller_from_claims(claims, identity, "header")
        elif src.kind == "mtls":
            if http.peer_principal:
                p = http.peer_principal
                return Caller("mtls", p, p, frozenset(), {"sub": p}, "mtls")
    return None
