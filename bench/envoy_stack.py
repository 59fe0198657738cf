"""The pieces every through-Envoy bench starts: the upstream, `extauthz serve` (through gc_probe.py),
the do-nothing ext_authz server, Envoys, the callers' tokens and the event loop of the generator."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import sys
from pathlib import Path

import common as C
from envoy_load import Timer
from envoy_procs import Proc, http_get, wait_until
from pinning import prefix

from extauthz.demo.tokens import TokenIssuer

ENVOY_ARGS = ["--disable-hot-restart", "--log-level", "warn", "--file-flush-interval-msec", "200"]


def find_envoy() -> str:
    envoy_bin = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
    if not os.path.exists(envoy_bin):
        raise SystemExit("envoy not found on PATH (the venv's bin/ should have it)")
    try:
        Timer().close()
    except (OSError, AttributeError) as e:
        raise SystemExit(f"this load generator needs Linux timerfd ({e})") from None
    return envoy_bin


def new_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    try:
        import uvloop
        return uvloop.new_event_loop(), "uvloop"
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"


def tokens(issuer: TokenIssuer) -> tuple[str, str]:
    """(the measured caller, a second caller for the enforcement probe).

    The enforcement check runs as another caller: a denied admin_* call is a probe on its caller's
    risk timeline, and a caller with a risk score has every call observed over ext_proc (up to 50 a
    second), which is not the traffic these benches mean to measure."""
    token = issuer.mint("alice", groups=["support", "employees"], customer_ids=["c-100", "c-101"],
                        client_id="support-agent", sid="user-session-7f3a", ttl=24 * 3600)
    prober = issuer.mint("mallory", groups=["support"], customer_ids=["c-100"], client_id="support-agent",
                         sid="user-session-0b1c", ttl=24 * 3600)
    return token, prober


def upstream_proc(tmp: Path, port: int, pins: dict[str, int | None], link: bool = False) -> Proc:
    return Proc("upstream", [*prefix(pins, "upstream"), sys.executable, str(C.HERE / "upstream_echo.py"),
                             "--port", str(port), *(["--link"] if link else [])], tmp / "upstream.log")


def service_proc(name: str, tmp: Path, policy: Path, grpc_port: int, admin_port: int, pins: dict[str, int | None],
                 *, gc_log: bool = True, extra_args: str = "", env: dict[str, str] | None = None) -> Proc:
    """`extauthz serve`, its decision log to /dev/null; through gc_probe.py unless `gc_log` is off."""
    launcher = [str(C.HERE / "gc_probe.py")] if gc_log else ["-m", "extauthz.cli"]
    slug = name.replace(" ", "-").replace("+", "")
    return Proc(name, [*prefix(pins, "service"), sys.executable, *launcher, "serve",
                       "--policy", str(policy), "--grpc-port", str(grpc_port), "--admin-port",
                       str(admin_port), "--host", "127.0.0.1", "--log-level", "warning",
                       "--drain-seconds", "1", *shlex.split(extra_args)],
                tmp / f"{slug}.log", stdout_devnull=True, env=env or {})


def null_proc(tmp: Path, port: int, pins: dict[str, int | None]) -> Proc:
    # The do-nothing server takes the service's place (and core): N - A is then the transport alone.
    return Proc("null authz", [*prefix(pins, "service"), sys.executable, str(C.HERE / "null_server.py"),
                               "--port", str(port), "--host", "127.0.0.1"], tmp / "null-server.log")


def envoy_proc(name: str, envoy_bin: str, config: Path, pins: dict[str, int | None],
               concurrency: int | None) -> Proc:
    args = ENVOY_ARGS + (["--concurrency", str(concurrency)] if concurrency else [])
    return Proc(name, [*prefix(pins, "envoy"), envoy_bin, "-c", str(config), *args],
                config.with_suffix(".log"))


def wait_upstream(upstream: Proc, port: int) -> None:
    wait_until("listening", upstream, lambda: http_get(port, "/healthz")[0] == 200)


def wait_null(null: Proc) -> None:
    wait_until("listening", null, lambda: b"listening on" in null.log_path.read_bytes())


def wait_service(service: Proc, admin_port: int) -> None:
    wait_until("ready (/readyz)", service, lambda: http_get(admin_port, "/readyz")[0] == 200)


def wait_envoy(env: Proc, admin_port: int) -> None:
    wait_until("LIVE (/ready)", env, lambda: http_get(admin_port, "/ready") == (200, b"LIVE\n"))
