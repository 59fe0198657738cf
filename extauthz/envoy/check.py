"""The Authorization.Check servicer: thin. Convert, decide, write the answer's wire bytes.

It runs on gRPC's threads (see extauthz.statelock): the conversions both ways are pure and run
unlocked; only the decision, which reads and updates shared state, holds the app's lock.

While some policy server with an `upstream` has not been discovered yet, a request that needs a
spec kind the store lacks first awaits that discovery, bounded (extauthz.discovery.service), on the
event loop, with the lock free."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2

from extauthz.app import App
from extauthz.core.decision import Decision, new_decision_id
from extauthz.core.reasons import Reason
from extauthz.envoy.convert import to_http_request
from extauthz.envoy.wire import encode_check_response

log = logging.getLogger("extauthz.check")
SERVICE = "envoy.service.auth.v3.Authorization"
DISCOVERY_WAIT_MAX = 5.0      # seconds a Check may wait for discovery without a deadline from Envoy


class AuthorizationServicer:
    def __init__(self, app: App, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.app = app
        self.loop = loop          # the event loop discovery runs on (None: no waiting for discovery)

    def Check(self, request: external_auth_pb2.CheckRequest, context: Any) -> bytes:
        app = self.app
        try:
            http = to_http_request(request)
        except Exception:       # never hand the verdict to Envoy's failure mode: deny
            log.exception("unreadable CheckRequest")
            d = Decision(new_decision_id(), Reason.MALFORMED_REQUEST, "unreadable request", status=400, form="bare")
            with app.lock:
                app.decisions.emit(d)
            return encode_check_response(d)
        disc = app.discovery
        if disc is not None and disc.waiting and self.loop is not None:   # empty once every upstream was discovered
            self._await_discovery(http, _time_remaining(context))
        with app.lock:
            d = app.check(http)
        return encode_check_response(d)

    def _await_discovery(self, http: Any, remaining: float | None) -> None:
        """Block this gRPC thread (not the loop, not the lock) until discovery had its chance."""
        assert self.loop is not None
        fut = asyncio.run_coroutine_threadsafe(self.app.discovery.before_check(http, remaining), self.loop)
        try:
            fut.result(timeout=(remaining if remaining is not None else DISCOVERY_WAIT_MAX) + 0.5)
        except concurrent.futures.TimeoutError:
            fut.cancel()
        except Exception:  # noqa: BLE001 - the decision below still runs (fail closed on a missing spec)
            log.exception("waiting for discovery failed")


def _time_remaining(context: Any) -> float | None:
    """Seconds left before Envoy's ext_authz timeout (its gRPC deadline), or None without one."""
    try:
        left = context.time_remaining()
    except Exception:  # noqa: BLE001 - a context without deadlines
        return None
    return left if isinstance(left, (int, float)) and left < 1e9 else None


def _raw(b: bytes) -> bytes:
    return b


def add_to_server(servicer: AuthorizationServicer, server: grpc.Server,
                  pool: ThreadPoolExecutor | None = None) -> None:
    """Register Check with the generated request parser and our own response bytes. With `pool`,
    Checks run on those threads (a few: more threads only contend for the lock and the GIL), not on
    the server's pool that long ext_proc streams hold."""
    def check(request: external_auth_pb2.CheckRequest, context: Any) -> bytes:
        return servicer.Check(request, context)

    if pool is not None:
        check.experimental_thread_pool = pool  # type: ignore[attr-defined] # grpc._server picks it up
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Check": grpc.unary_unary_rpc_method_handler(
            check, request_deserializer=external_auth_pb2.CheckRequest.FromString, response_serializer=_raw),
    })
    server.add_generic_rpc_handlers((handler,))
