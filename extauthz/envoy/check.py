"""The Authorization.Check servicer: thin. Convert, decide, convert back."""

from __future__ import annotations

import logging

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from extauthz.app import App
from extauthz.core.decision import Decision, new_decision_id
from extauthz.core.reasons import Reason
from extauthz.envoy.convert import to_check_response, to_http_request

log = logging.getLogger("extauthz.check")


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    async def Check(self, request: external_auth_pb2.CheckRequest,
                    context: grpc.aio.ServicerContext) -> external_auth_pb2.CheckResponse:
        try:
            http = to_http_request(request)
        except Exception:       # never hand the verdict to Envoy's failure mode: deny
            log.exception("unreadable CheckRequest")
            d = Decision(new_decision_id(), Reason.MALFORMED_REQUEST, "unreadable request", status=400, form="bare")
            self.app.decisions.emit(d)
            return to_check_response(d)
        return to_check_response(self.app.check(http))


def add_to_server(servicer: AuthorizationServicer, server: grpc.aio.Server) -> None:
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server)
