"""`extauthz serve`: one grpc.aio server (Check, ext_proc, health, reflection) plus admin HTTP.

SIGTERM: readiness goes false first (so the mesh stops sending), then in-flight calls get
`drain_seconds` to finish before the gRPC server stops.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from extauthz.admin.actors import LocalActors
from extauthz.admin.actors_shared import with_shared_log
from extauthz.admin.http import admin_server
from extauthz.app import App
from extauthz.discovery.service import Discoverer
from extauthz.envoy import check, process
from extauthz.gcpacing import GcPacer

log = logging.getLogger("extauthz")
QUIET_SECONDS = 1.0

SERVICE_NAMES = (
    external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name,
    external_processor_pb2.DESCRIPTOR.services_by_name["ExternalProcessor"].full_name,
    health.SERVICE_NAME,
    reflection.SERVICE_NAME,
)


def server_credentials(cert: str, key: str, client_ca: str | None) -> grpc.ServerCredentials:
    """TLS for the gRPC port; with a client CA, a client certificate it signed is required (mTLS
    from Envoy's `extauthz` cluster)."""
    with open(cert, "rb") as f:
        cert_pem = f.read()
    with open(key, "rb") as f:
        key_pem = f.read()
    ca_pem = None
    if client_ca:
        with open(client_ca, "rb") as f:
            ca_pem = f.read()
    return grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=ca_pem,
                                       require_client_auth=ca_pem is not None)


async def serve(app: App, *, host: str = "0.0.0.0", grpc_port: int = 9191, admin_port: int = 9192,
                drain_seconds: float = 10.0, credentials: grpc.ServerCredentials | None = None,
                worker_fd: int | None = None, worker_index: int = 0, shared: Any = None) -> None:
    """Serve until SIGTERM. As one of `--workers N` (worker_fd set): share the gRPC port with the
    other workers, serve no admin port (the supervisor does), and keep learned state in step
    over the bus; stop when the supervisor goes away."""
    # Start-up and periodic discovery run in one process only (worker 0 of --workers); every
    # worker discovers on a spec miss. What any of them discovers reaches the others over the bus.
    bus = None
    if worker_fd is not None:
        from extauthz.workers.bus import WorkerBus
        bus = WorkerBus(app, worker_fd, worker_index)
        if shared is None:              # no Redis: the supervisor confirms first claims (workers/claims.py)
            app.use_shared(bus.claims)
    if shared is not None:
        app.use_shared(shared)
        await shared.start()            # ready once the shared state is loaded (App.ready)
    actors, actor_log = with_shared_log(app, LocalActors(app), shared, write=True)
    discovery = Discoverer.from_env(app, scheduled=worker_fd is None or worker_index == 0)
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ("grpc.max_send_message_length", 16 * 1024 * 1024),
        ("grpc.so_reuseport", 1 if worker_fd is not None else 0),
    ])
    check.add_to_server(check.AuthorizationServicer(app, discovery), server)
    process.add_to_server(process.ExternalProcessorServicer(app.learner), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(SERVICE_NAMES, server)
    if credentials is not None:
        server.add_secure_port(f"{host}:{grpc_port}", credentials)
    else:
        server.add_insecure_port(f"{host}:{grpc_port}")
    await server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ("", *SERVICE_NAMES[:2]):
        await health_servicer.set(name, serving)

    admin = admin_task = None
    if admin_port:
        admin = admin_server(app, host, admin_port, actors)
        admin_task = asyncio.create_task(admin.serve())
    watch_task = asyncio.create_task(app.holder.watch()) if app.holder.path != "<embedded>" else None
    sweep_task = asyncio.create_task(_sweep(app))
    settle_task = asyncio.create_task(_settle_on_change(app))
    stop = asyncio.Event()
    bus_task = None
    if bus is not None:
        bus_task = asyncio.create_task(bus.run())
        bus_task.add_done_callback(lambda _: stop.set())
    discovery_task = asyncio.create_task(discovery.run(wait_for_bus=worker_fd is not None and shared is None))
    lease_task = asyncio.create_task(_discovery_lease(discovery, shared)) if shared is not None else None
    log.info("serving gRPC on %s:%d%s", host, grpc_port,
             f", admin on {host}:{admin_port}" if admin_port else f" (worker {worker_index})")

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("draining for up to %.1fs", drain_seconds)
    app.draining = True
    await health_servicer.enter_graceful_shutdown()
    # Keep serving while the mesh notices (readiness and gRPC health now say NOT_SERVING) and
    # stops sending: stopping the gRPC server at once would cancel calls already on the wire.
    # Stop when no Check arrived for QUIET_SECONDS, or when the drain budget is spent.
    deadline = loop.time() + drain_seconds
    while loop.time() < deadline and time.monotonic() - app.last_check < QUIET_SECONDS:
        await asyncio.sleep(0.05)
    await server.stop(grace=max(1.0, deadline - loop.time()))
    app.record_pending()
    app.decisions.flush()
    for t in (watch_task, sweep_task, settle_task, bus_task, discovery_task, lease_task):
        if t:
            t.cancel()
    await discovery.close()
    if actor_log is not None:
        await actor_log.close()
    if shared is not None:
        await shared.close()
    if admin is not None and admin_task is not None:
        admin.should_exit = True
        await asyncio.wait([admin_task], timeout=3)
    log.info("stopped")


async def _discovery_lease(discovery: Discoverer, shared: Any, every: float = 10.0) -> None:
    """Scheduled discovery runs on the one replica holding the lease (on-miss discovery stays
    local); a replica that dies loses it within 3 renewals."""
    wanted = discovery.scheduled
    while wanted:
        discovery.scheduled = await shared.hold_lease("discovery", 3 * every)
        await asyncio.sleep(every)


async def _sweep(app: App) -> None:
    while True:
        await asyncio.sleep(30)
        app.sessions.sweep()


# Garbage collection is paced by the service (extauthz.gcpacing): young collections run right after
# each recorded batch of Checks, between answers, instead of inside whichever Check trips CPython's
# allocation count. One pacer per process: the collector is process-wide.
GC_PACER = GcPacer()


def settle(app: App) -> None:
    """Collect once, then freeze what survived (policy, specs, compiled validators) out of the
    cyclic collector's sight, so that full collections walk only what changed since instead of
    stalling the loop on all of it (bench/README.md, "Garbage collection inside the service").
    From then on the collector is paced after each recorded batch."""
    gc.collect()
    gc.freeze()
    GC_PACER.install()
    app.recorder.after_recording = GC_PACER.soon


async def _settle_on_change(app: App, interval: float = 2.0) -> None:
    """Settle after the long-lived state changed (a spec learned, validators compiled, a new
    policy): rare events, so the one full collection each costs is paid off the request path's
    steady state."""
    seen = None
    while True:
        key = (app.specs.version, app.validators.size, app.ctx.policy.digest if app.ctx else "")
        if key != seen:
            settle(app)
            seen = key
        await asyncio.sleep(interval)
