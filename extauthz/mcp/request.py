"""The plain request data the decision core sees: no protobuf past the transport."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class HttpRequest:
    """One HTTP request as Envoy's ext_authz CheckRequest describes it.

    `headers` are lowercased (Envoy joins repeated headers with commas). `body` is the raw
    bytes Envoy buffered; `partial` is true when Envoy marked the body truncated.
    """

    method: str
    path: str
    authority: str
    headers: dict[str, str]
    body: bytes = b""
    partial: bool = False
    jwt_payload: dict[str, Any] | None = None      # jwt_authn dynamic metadata, when present
    peer_principal: str = ""                        # mTLS source principal (SPIFFE id)
    metadata: dict[str, Any] = field(default_factory=dict)
