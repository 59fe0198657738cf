"""A do-nothing Envoy ext_authz server: the floor for check_throughput.py.

Same runtime as the real service (grpc.aio, uvloop when installed, the same server options and the
generated Authorization servicer, so the request is still deserialized), but Check returns an
empty OK CheckResponse without looking at it.

    python bench/null_server.py --port 50051 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import status_pb2

_OK = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0))


class NullAuthorization(external_auth_pb2_grpc.AuthorizationServicer):
    async def Check(self, request: external_auth_pb2.CheckRequest,
                    context: grpc.aio.ServicerContext) -> external_auth_pb2.CheckResponse:
        return _OK


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server(options=[                  # as extauthz.server.serve
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ("grpc.max_send_message_length", 16 * 1024 * 1024),
        ("grpc.so_reuseport", 0),
    ])
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(NullAuthorization(), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise SystemExit(f"null_server: cannot bind {host}:{port}")
    await server.start()
    print(f"null_server listening on {host}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    a = ap.parse_args()
    try:
        import uvloop                                   # the real service installs it too
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(a.host, a.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
