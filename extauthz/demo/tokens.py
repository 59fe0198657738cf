"""A throwaway JWT issuer for the demo and the end-to-end tests.

Each :class:`TokenIssuer` generates a fresh RSA keypair at runtime, publishes its public half as a
JWKS (which :func:`extauthz.demo.envoy_config.render` inlines into Envoy's ``jwt_authn`` provider)
and mints RS256 tokens that Envoy verifies. Nothing here is meant for production: the key lives in
memory only and dies with the process.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://issuer.mcp-extauthz.local"
AUDIENCE = "mcp-extauthz-demo"
ALGORITHM = "RS256"

__all__ = ["ALGORITHM", "AUDIENCE", "ISSUER", "TokenIssuer"]


class TokenIssuer:
    """Mints RS256 JWTs for ``ISSUER``/``AUDIENCE`` with a key generated at construction.

    >>> tokens = TokenIssuer()
    >>> token = tokens.mint("alice", groups=["support"], customer_ids=["c-100"])
    """

    def __init__(
        self,
        *,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        kid: str | None = None,
        key_size: int = 2048,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.kid = kid or f"demo-{secrets.token_hex(4)}"
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)

    # -- keys -----------------------------------------------------------------------------------
    def jwk(self) -> dict[str, Any]:
        """The public key as one JWK (``kty``, ``n``, ``e``, ``kid``, ``alg``, ``use``)."""
        d = jwt.algorithms.RSAAlgorithm.to_jwk(self._private_key.public_key(), as_dict=True)
        d.pop("key_ops", None)
        d.update({"kid": self.kid, "alg": ALGORITHM, "use": "sig"})
        return d

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk()]}

    def jwks_json(self) -> str:
        """The public JWKS as a JSON string (what Envoy's ``local_jwks.inline_string`` takes)."""
        return json.dumps(self.jwks(), separators=(",", ":"), sort_keys=True)

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        return self._private_key

    # -- tokens ---------------------------------------------------------------------------------
    def claims(
        self,
        sub: str,
        *,
        groups: Iterable[str] = (),
        client_id: str | None = "demo-agent",
        sid: str | None = None,
        ttl: int = 3600,
        **claims: Any,
    ) -> dict[str, Any]:
        """The claim set :meth:`mint` would sign (handy for asserting on what the service saw)."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "iat": now,
            "nbf": now - 5,
            "exp": now + ttl,
            "jti": secrets.token_hex(8),
            "groups": list(groups),
        }
        if client_id is not None:
            payload["client_id"] = client_id
        if sid is not None:
            payload["sid"] = sid
        payload.update(claims)
        # An explicit None removes a claim (e.g. ``exp=None`` for a token without expiry).
        return {k: v for k, v in payload.items() if v is not None}

    def mint(
        self,
        sub: str,
        *,
        groups: Iterable[str] = (),
        client_id: str | None = "demo-agent",
        sid: str | None = None,
        ttl: int = 3600,
        **claims: Any,
    ) -> str:
        """Sign a token for ``sub``. Extra keyword arguments become claims (``None`` drops one).

        A negative ``ttl`` gives an expired token (Envoy allows 60 s of clock skew by default, so
        use ``ttl=-300`` or less to be sure it is rejected).
        """
        payload = self.claims(sub, groups=groups, client_id=client_id, sid=sid, ttl=ttl, **claims)
        return jwt.encode(payload, self._private_key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def bearer(self, sub: str, **kwargs: Any) -> dict[str, str]:
        """``{"Authorization": "Bearer <mint(sub, **kwargs)>"}``."""
        return {"Authorization": f"Bearer {self.mint(sub, **kwargs)}"}

    def __repr__(self) -> str:
        return f"TokenIssuer(issuer={self.issuer!r}, audience={self.audience!r}, kid={self.kid!r})"
