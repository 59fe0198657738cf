"""The Authorization.Check servicer: thin. Convert, decide, write the answer's wire bytes.

While some policy server with an `upstream` has not been discovered yet, a request that needs a
spec kind the store lacks first awaits that discovery, bounded (extauthz.discovery.service)."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2

from extauthz.app import App
from extauthz.core.decision import Decision, new_decision_id
from extauthz.core.reasons import Reason
from extauthz.discovery.service import Discoverer
from extauthz.envoy.convert import to_http_request
from extauthz.envoy.wire import encode_check_response

log = logging.getLogger("extauthz.check")
SERVICE = "envoy.service.auth.v3.Authorization"


class AuthorizationServicer:
    def __init__(self, app: App, discovery: Discoverer | None = None) -> None:
        self.app = app
        self.discovery = discovery      # None: no active discovery (nothing to wait for)

    async def Check(self, request: external_auth_pb2.CheckRequest,
                    context: grpc.aio.ServicerContext[external_auth_pb2.CheckRequest, bytes]) -> bytes:
        try:
            http = to_http_request(request)
        except Exception:       # never hand the verdict to Envoy's failure mode: deny
            log.exception("unreadable CheckRequest")
            d = Decision(new_decision_id(), Reason.MALFORMED_REQUEST, "unreadable request", status=400, form="bare")
            self.app.decisions.emit(d)
            return encode_check_response(d)
        disc = self.discovery
        if disc is not None and disc.waiting:       # empty once every upstream was discovered
            await disc.before_check(http, _time_remaining(context))
        d = self.app.check(http)
        if d.pending:       # a session id this replica never saw, or a deny the feed lag may explain
            try:
                d = await self.app.confirm_claim(http, d)
            except Exception:  # noqa: BLE001 - the pending decision is a deny: answer it
                log.exception("claim failed; denying")
        return encode_check_response(d)


def _time_remaining(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    """Seconds left before Envoy's ext_authz timeout (its gRPC deadline), or None without one."""
    try:
        left = context.time_remaining()
    except Exception:  # noqa: BLE001 - a context without deadlines
        return None
    return left if isinstance(left, (int, float)) and left < 1e9 else None


def _raw(b: bytes) -> bytes:
    return b


def add_to_server(servicer: AuthorizationServicer, server: grpc.aio.Server) -> None:
    """Register Check with the generated request parser and our own response bytes."""
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Check": grpc.unary_unary_rpc_method_handler(
            servicer.Check, request_deserializer=external_auth_pb2.CheckRequest.FromString,
            response_serializer=_raw),
    })
    server.add_generic_rpc_handlers((handler,))
