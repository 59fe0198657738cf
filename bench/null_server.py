"""A do-nothing Envoy ext_authz server: the floor for check_throughput.py.

Check returns an empty OK CheckResponse without looking at the request (which is still
deserialized: the generated request parser runs, as in the real service). Two transports:

* `--transport aio` (default): grpc.aio with uvloop when installed — the floor issue 5 names;
* `--transport threads`: the sync `grpc.server`, Checks on a pool of 8 threads of their own. Under
  saturating load on a dedicated core it answers ~1.9x what grpc.aio does; the service tried it and
  went back to grpc.aio (see bench/README.md, "Why grpc.aio"), so this floor is for reference.

    python bench/null_server.py --port 50051 [--host 127.0.0.1] [--transport aio|threads]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import status_pb2

_OK = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0))
OPTIONS = [                                             # as extauthz.server.serve
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
]


class NullAuthorization(external_auth_pb2_grpc.AuthorizationServicer):
    async def Check(self, request: external_auth_pb2.CheckRequest,
                    context: grpc.aio.ServicerContext) -> external_auth_pb2.CheckResponse:
        return _OK


async def serve_aio(host: str, port: int) -> None:
    server = grpc.aio.server(options=OPTIONS)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(NullAuthorization(), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise SystemExit(f"null_server: cannot bind {host}:{port}")
    await server.start()
    print(f"null_server (aio) listening on {host}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)


def serve_threads(host: str, port: int) -> None:
    def check(request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext) -> external_auth_pb2.CheckResponse:
        return _OK

    check.experimental_thread_pool = ThreadPoolExecutor(max_workers=8)  # type: ignore[attr-defined]
    server = grpc.server(ThreadPoolExecutor(max_workers=64), options=OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "envoy.service.auth.v3.Authorization", {"Check": grpc.unary_unary_rpc_method_handler(
            check, request_deserializer=external_auth_pb2.CheckRequest.FromString,
            response_serializer=external_auth_pb2.CheckResponse.SerializeToString)}),))
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    print(f"null_server (threads) listening on {host}:{port}", file=sys.stderr, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    server.stop(grace=1.0).wait()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--transport", choices=("aio", "threads"), default="aio")
    a = ap.parse_args()
    if a.transport == "threads":
        serve_threads(a.host, a.port)
        return 0
    try:
        import uvloop  # the fastest grpc.aio setup we know
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve_aio(a.host, a.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
