"""Envoy ext_proc (`envoy.service.ext_proc.v3.ExternalProcessor`) servicer: watches the responses of
requests ext_authz marked (learnable, or observed) and feeds them to the `Learner`. It changes a
response only to filter `*/list` results for the caller (and, on a 2024-11-05 event stream, to
write a denial between events); it strips our internal headers from the request.

Expected filter mode: request headers SEND, response headers SEND, request body NONE, response body
STREAMED, trailers SKIP. Every other phase is still answered (with an empty, matching response), so
a different mode costs work, not correctness. A stream whose request carries nothing to learn or
observe is closed right after its request headers are answered: Envoy then goes on without us. In
observability mode Envoy does not wait for answers and none are sent, and the service ends the stream
as soon as the result is in (Envoy would otherwise hold it open until its deferred close, 5 s).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from extauthz.envoy.convert import metadata_dict
from extauthz.mcp.headers import SESSION_HEADER
from extauthz.mcp.learnheader import END_MARK, LEARN_HEADER, OBSERVE_HEADER
from extauthz.sessions.ending import end_exchange
from extauthz.specs.exchange import Exchange
from extauthz.specs.learn import Learner
from extauthz.specs.streamexchange import StreamExchange

log = logging.getLogger("extauthz.envoy.process")

__all__ = ["ExternalProcessorServicer", "add_to_server", "headers_to_dict"]

SERVER_HEADER = "x-mcp-server"
CALLER_HEADER = "x-mcp-caller"

# Built once: protobuf messages are immutable once serialized, and these never vary.
_STRIP_LEARN = pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=pb.CommonResponse(
    header_mutation=pb.HeaderMutation(remove_headers=[LEARN_HEADER, OBSERVE_HEADER]))))
# Lists in this response are filtered: ask the server for a body we can read (not compressed).
_STRIP_LEARN_IDENTITY = pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=pb.CommonResponse(
    header_mutation=pb.HeaderMutation(remove_headers=[LEARN_HEADER, OBSERVE_HEADER, "accept-encoding"]))))
_RESPONSE_HEADERS = pb.ProcessingResponse(response_headers=pb.HeadersResponse())
# The body will be rewritten (a filtered list): its length changes, so the original length goes.
_RESPONSE_HEADERS_REWRITE = pb.ProcessingResponse(response_headers=pb.HeadersResponse(response=pb.CommonResponse(
    header_mutation=pb.HeaderMutation(remove_headers=["content-length"]))))
# The body will be replaced whole by a JSON-RPC error (a list we could not read, e.g. compressed).
_RESPONSE_HEADERS_REPLACE = pb.ProcessingResponse(response_headers=pb.HeadersResponse(response=pb.CommonResponse(
    header_mutation=pb.HeaderMutation(
        set_headers=[base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key="content-type", raw_value=b"application/json"),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)],
        remove_headers=["content-length", "content-encoding"]))))
_EMPTY_BODY = pb.ProcessingResponse(response_body=pb.BodyResponse(response=pb.CommonResponse(
    body_mutation=pb.BodyMutation(body=b""))))
_REQUEST_BODY = pb.ProcessingResponse(request_body=pb.BodyResponse())
_RESPONSE_BODY = pb.ProcessingResponse(response_body=pb.BodyResponse())
_REQUEST_TRAILERS = pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
_RESPONSE_TRAILERS = pb.ProcessingResponse(response_trailers=pb.TrailersResponse())


def headers_to_dict(header_map: base_pb2.HeaderMap) -> dict[str, str]:
    """Lowercased name -> value; repeated names joined with "," as Envoy does elsewhere.
    Envoy sends values in `raw_value` (bytes) in current versions, `value` in older ones."""
    out: dict[str, str] = {}
    for hv in header_map.headers:
        value = hv.raw_value.decode("utf-8", "replace") if hv.raw_value else hv.value
        key = hv.key.lower()
        prev = out.get(key)
        out[key] = value if prev is None else f"{prev},{value}"
    return out


class ExternalProcessorServicer(pb_grpc.ExternalProcessorServicer):
    def __init__(self, learner: Learner) -> None:
        self.learner = learner
        self.streams_active = 0

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],
                      context: grpc.aio.ServicerContext[pb.ProcessingRequest, pb.ProcessingResponse],
                      ) -> AsyncIterator[pb.ProcessingResponse]:
        exchange: Exchange | None = None
        self.streams_active += 1
        try:
            async for req in request_iterator:
                phase = req.WhichOneof("request")
                if phase is None:
                    log.debug("ext_proc message without a phase; ignored")
                    continue
                reply, exchange = self._step(phase, req, exchange)
                if not req.observability_mode:
                    yield reply
                elif exchange is None or exchange.done:
                    # Observed (Envoy sends, never waits): once the result is in, end the stream
                    # rather than leave it open until Envoy's deferred close (5 s by default).
                    return
                if phase == "request_headers" and exchange is None:
                    # Nothing to learn, filter or observe in this response: closing the stream
                    # cleanly lets Envoy go on without us (where ext_proc runs on every request, as
                    # in Istio, that is one round trip instead of one per response message).
                    return
        except asyncio.CancelledError:
            # Envoy reset the stream (client went away, timeout): routine, not an error.
            log.debug("ext_proc stream cancelled")
            raise
        finally:
            self.streams_active -= 1
            if exchange is not None:
                try:
                    exchange.close()
                except Exception:  # noqa: BLE001
                    log.exception("closing learning exchange failed")
                if exchange.learned:
                    log.debug("learned from %s: %s", exchange.server, exchange.learned)

    def _step(self, phase: str, req: pb.ProcessingRequest,
              exchange: Exchange | None) -> tuple[pb.ProcessingResponse, Exchange | None]:
        """Answer one message; learning problems are logged and turn learning off for the stream."""
        try:
            if phase == "request_headers":
                if exchange is not None:
                    exchange.close()
                exchange = self._start(req)
                return (_STRIP_LEARN_IDENTITY if exchange is not None and exchange.filters else _STRIP_LEARN), exchange
            if phase == "response_headers":
                if exchange is not None:
                    h = headers_to_dict(req.response_headers.headers)
                    exchange.on_response_headers(h.get(":status"), h)
                    if req.response_headers.end_of_stream:
                        exchange.on_body(b"", True)
                    elif exchange.rewriter is not None:
                        return _response_headers_reply(exchange), exchange
                return _RESPONSE_HEADERS, exchange
            if phase == "response_body":
                if exchange is not None:
                    body = req.response_body
                    end = body.end_of_stream or body.end_of_stream_without_message
                    exchange.on_body(body.body, end)
                    out = body.body
                    if exchange.rewriter is not None:       # lists filtered for this caller
                        out = exchange.rewriter.feed(body.body, end)
                    # a 2024-11-05 denial, written between the server's events (the rewriter only
                    # ever emits whole events, so after its output is between events too)
                    extra = exchange.take_injection() if isinstance(exchange, StreamExchange) else b""
                    if extra or out != body.body:
                        return pb.ProcessingResponse(response_body=pb.BodyResponse(response=pb.CommonResponse(
                            body_mutation=pb.BodyMutation(body=out + extra)))), exchange
                return _RESPONSE_BODY, exchange
            if phase == "request_body":
                return _REQUEST_BODY, exchange
            if phase == "request_trailers":
                return _REQUEST_TRAILERS, exchange
            if phase == "response_trailers":
                if exchange is not None:
                    exchange.on_body(b"", True)
                return _RESPONSE_TRAILERS, exchange
        except Exception:  # noqa: BLE001 - the proxied request must never suffer for learning
            if exchange is not None and exchange.filters and phase in ("response_headers", "response_body"):
                # ...but a list we were filtering must not pass whole: the rest of it is dropped.
                log.exception("ext_proc failed in %s while filtering lists; the response is cut", phase)
                exchange.fail_closed()
                if phase == "response_headers":
                    return _response_headers_reply(exchange), exchange
                return _EMPTY_BODY, exchange
            log.exception("ext_proc learning failed in %s; learning off for this stream", phase)
            exchange = None
        return _reply_for(phase), exchange

    def _start(self, req: pb.ProcessingRequest) -> Exchange | None:
        h = headers_to_dict(req.request_headers.headers)
        learn = h.get(LEARN_HEADER)
        if learn is not None and learn.startswith(END_MARK):     # an owner's DELETE: its status decides
            return end_exchange(self.learner, h.get(SERVER_HEADER), h.get(CALLER_HEADER), h.get(SESSION_HEADER), learn)
        observe = h.get(OBSERVE_HEADER) if learn is None else None
        if learn is None and observe is None:
            return None
        # Who is asking, as Envoy verified it: lists are filtered for the caller ext_proc resolves.
        identity = (h, metadata_dict(req.metadata_context))
        server, caller, sid = h.get(SERVER_HEADER), h.get(CALLER_HEADER), h.get(SESSION_HEADER)
        if learn is None:
            ex = self.learner.exchange(server, caller, sid, observe, identity)
            return ex if ex is None or not ex.failure else None     # observed calls carry no lists
        return self.learner.exchange(server, caller, sid, learn, identity)


def _response_headers_reply(exchange: Exchange) -> pb.ProcessingResponse:
    replaces = getattr(exchange.rewriter, "replaces_body", False)
    return _RESPONSE_HEADERS_REPLACE if replaces else _RESPONSE_HEADERS_REWRITE


def _reply_for(phase: str) -> pb.ProcessingResponse:
    return {
        "request_headers": _STRIP_LEARN,
        "response_headers": _RESPONSE_HEADERS,
        "request_body": _REQUEST_BODY,
        "response_body": _RESPONSE_BODY,
        "request_trailers": _REQUEST_TRAILERS,
        "response_trailers": _RESPONSE_TRAILERS,
    }[phase]


def add_to_server(servicer: ExternalProcessorServicer, server: Any) -> None:
    """Register on a `grpc.aio.Server` (or `grpc.Server`)."""
    pb_grpc.add_ExternalProcessorServicer_to_server(servicer, server)
