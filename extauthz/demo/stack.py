"""Run the real thing: an MCP server, the extauthz service and Envoy, as local processes.

Used by ``extauthz demo`` and by the end-to-end tests::

    with Stack("policy.yaml", tokens=TokenIssuer()) as stack:
        httpx.post(stack.url, headers=stack.tokens.bearer("alice"), json=...)

Every process gets its own log file in a temporary directory; a process that does not become ready
in time (or exits early) raises :class:`StackError` with the tail of its log. ``__exit__`` sends
SIGTERM to each process group, then SIGKILL after 5 seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from extauthz.demo.envoy_config import render
from extauthz.demo.tokens import TokenIssuer

__all__ = ["Stack", "StackError", "free_port", "wait_for_port", "wait_for_http"]

TERM_GRACE_SECONDS = 5.0


class StackError(RuntimeError):
    """A stack process failed to start or become ready."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it back, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_get(url: str, timeout: float = 1.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback URLs only
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def wait_for_port(host: str, port: int, timeout: float, *, alive: Callable[[], bool] = lambda: True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(host, port):
            return True
        if not alive():
            return False
        time.sleep(0.05)
    return False


def wait_for_http(
    url: str,
    timeout: float,
    *,
    ok: Callable[[int, str], bool] = lambda status, body: status == 200,
    alive: Callable[[], bool] = lambda: True,
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, body = _http_get(url)
            if ok(status, body):
                return True
        except OSError:
            pass
        if not alive():
            return False
        time.sleep(0.05)
    return False


@dataclass
class _Proc:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self, cwd: str | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,  # own process group: npx/node children die with it
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)  # the group this Popen created (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float = TERM_GRACE_SECONDS) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait(timeout=grace)
        # Children that ignored SIGTERM after the leader exited.
        self.signal_group(signal.SIGKILL)


class Stack:
    """Upstream MCP server + extauthz service + Envoy, started on free loopback ports.

    ``policy_path``: the policy for ``extauthz serve``; ``None`` starts no service, for tests that
    bring their own gRPC server on ``authz_port``.

    ``upstream_cmd``: argv with a ``{port}`` placeholder in any element (default: the demo CRM
    server, ``python -m extauthz.demo.crm_server --port {port}`` + ``upstream_args``).
    ``upstream_path``: the MCP endpoint path on both the upstream and Envoy (``/mcp``).
    ``service_cmd``: argv prefix for the service (default ``python -m extauthz.cli serve``);
    ``--policy/--grpc-port/--admin-port`` and ``service_args`` are appended.
    ``envoy_options``: extra keyword arguments for :func:`extauthz.demo.envoy_config.render`.
    """

    def __init__(
        self,
        policy_path: str | os.PathLike[str] | None,
        *,
        upstream_args: Sequence[str] = (),
        service_args: Sequence[str] = (),
        tokens: TokenIssuer | None = None,
        upstream_cmd: Sequence[str] | None = None,
        upstream_env: Mapping[str, str] | None = None,
        upstream_path: str = "/mcp",
        service_cmd: Sequence[str] | None = None,
        service_env: Mapping[str, str] | None = None,
        authz_port: int | None = None,
        envoy_bin: str | None = None,
        envoy_args: Sequence[str] = (),
        envoy_log_level: str = "warn",
        envoy_options: Mapping[str, object] | None = None,
        upstream_timeout: float = 30.0,
        service_timeout: float = 30.0,
        envoy_timeout: float = 30.0,
        keep_dir: bool = False,
    ) -> None:
        self.policy_path = Path(policy_path) if policy_path is not None else None
        self.tokens = tokens if tokens is not None else TokenIssuer()
        self.upstream_path = upstream_path
        self._upstream_args = list(upstream_args)
        self._upstream_cmd = list(upstream_cmd) if upstream_cmd is not None else None
        self._upstream_env = dict(upstream_env or {})
        self._service_args = list(service_args)
        self._service_cmd = list(service_cmd) if service_cmd is not None else None
        self._service_env = dict(service_env or {})
        self._envoy_bin = envoy_bin
        self._envoy_args = list(envoy_args)
        self._envoy_log_level = envoy_log_level
        self._envoy_options = dict(envoy_options or {})
        self._timeouts = {"upstream": upstream_timeout, "service": service_timeout, "envoy": envoy_timeout}
        self._keep_dir = keep_dir

        self.upstream_port = free_port()
        self.grpc_port = authz_port if authz_port is not None else free_port()
        self.service_admin_port = free_port()
        self.envoy_port = free_port()
        self.envoy_admin_port = free_port()

        self.workdir: Path | None = None
        self.envoy_config_path: Path | None = None
        self._procs: dict[str, _Proc] = {}
        self._final_logs: dict[str, str] | None = None

    # -- addresses --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The MCP endpoint through Envoy."""
        return f"http://127.0.0.1:{self.envoy_port}{self.upstream_path}"

    @property
    def upstream_url(self) -> str:
        """The MCP endpoint directly on the upstream (bypasses Envoy: for discovery and tests)."""
        return f"http://127.0.0.1:{self.upstream_port}{self.upstream_path}"

    @property
    def service_admin_url(self) -> str:
        return f"http://127.0.0.1:{self.service_admin_port}"

    @property
    def envoy_admin_url(self) -> str:
        return f"http://127.0.0.1:{self.envoy_admin_port}"

    @property
    def authz_port(self) -> int:
        return self.grpc_port

    # -- logs -------------------------------------------------------------------------------------
    def logs(self) -> dict[str, str]:
        """Every process's log so far, by name (``upstream``, ``service``, ``envoy``)."""
        if self._final_logs is not None:
            return dict(self._final_logs)
        return {name: p.log() for name, p in self._procs.items()}

    def log_tail(self, name: str, lines: int = 40) -> str:
        return "\n".join(self.logs().get(name, "").splitlines()[-lines:])

    def process(self, name: str) -> subprocess.Popen[bytes] | None:
        p = self._procs.get(name)
        return p.popen if p else None

    # -- lifecycle --------------------------------------------------------------------------------
    def _upstream_argv(self) -> list[str]:
        if self._upstream_cmd is None:
            cmd = [sys.executable, "-m", "extauthz.demo.crm_server", "--port", "{port}", *self._upstream_args]
        else:
            cmd = [*self._upstream_cmd, *self._upstream_args]
        return [a.replace("{port}", str(self.upstream_port)) for a in cmd]

    def _service_argv(self) -> list[str]:
        assert self.policy_path is not None
        base = self._service_cmd or [sys.executable, "-m", "extauthz.cli", "serve"]
        return [
            *base,
            "--policy",
            str(self.policy_path),
            "--grpc-port",
            str(self.grpc_port),
            "--admin-port",
            str(self.service_admin_port),
            *self._service_args,
        ]

    def _envoy_argv(self) -> list[str]:
        envoy = self._envoy_bin or shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
        return [
            envoy,
            "-c",
            str(self.envoy_config_path),
            # Unique per concurrently running Envoy (hot-restart shared memory / domain sockets).
            "--base-id",
            str(self.envoy_port * 10),
            "--log-level",
            self._envoy_log_level,
            *self._envoy_args,
        ]

    #: the bootstrap renderer; a subclass swaps it (the Istio-style tests use envoy_istio.render)
    renderer: Callable[..., str] = staticmethod(render)

    def render_envoy(self) -> str:
        options: dict[str, object] = {
            "listen_port": self.envoy_port,
            "upstream_host": "127.0.0.1",
            "upstream_port": self.upstream_port,
            "authz_host": "127.0.0.1",
            "authz_port": self.grpc_port,
            "admin_port": self.envoy_admin_port,
            "jwks_json": self.tokens.jwks_json(),
        }
        options.update(self._envoy_options)
        return type(self).renderer(**options)

    def _fail(self, name: str, what: str) -> StackError:
        p = self._procs[name]
        rc = p.popen.poll() if p.popen else None
        state = f"exited with code {rc}" if rc is not None else "still running"
        return StackError(
            f"{name} {what} ({state}); command: {' '.join(p.argv)}\n"
            f"--- last lines of {p.log_path} ---\n{p.tail()}"
        )

    def start(self) -> Stack:
        if self._procs:
            raise StackError("a Stack can be started once")
        self.workdir = Path(tempfile.mkdtemp(prefix="mcp-extauthz-stack-"))
        self.envoy_config_path = self.workdir / "envoy.yaml"
        self.envoy_config_path.write_text(self.render_envoy(), encoding="utf-8")

        self._procs["upstream"] = _Proc("upstream", self._upstream_argv(), self.workdir / "upstream.log",
                                        self._upstream_env)
        if self.policy_path is not None:
            self._procs["service"] = _Proc("service", self._service_argv(), self.workdir / "service.log",
                                           self._service_env)
        self._procs["envoy"] = _Proc("envoy", self._envoy_argv(), self.workdir / "envoy.log")
        try:
            for p in self._procs.values():  # start all three at once; wait for each below
                p.start()

            up = self._procs["upstream"]
            if not wait_for_port("127.0.0.1", self.upstream_port, self._timeouts["upstream"], alive=up.alive):
                raise self._fail("upstream",
                                 f"did not open port {self.upstream_port} within {self._timeouts['upstream']}s")

            if "service" in self._procs:
                svc = self._procs["service"]
                if not wait_for_http(f"{self.service_admin_url}/readyz", self._timeouts["service"], alive=svc.alive):
                    raise self._fail("service", f"GET {self.service_admin_url}/readyz was not 200 within "
                                                f"{self._timeouts['service']}s")

            env = self._procs["envoy"]
            if not wait_for_http(
                f"{self.envoy_admin_url}/ready",
                self._timeouts["envoy"],
                ok=lambda status, body: status == 200 and body.strip() == "LIVE",
                alive=env.alive,
            ):
                raise self._fail("envoy", f"GET {self.envoy_admin_url}/ready was not 200 LIVE within "
                                          f"{self._timeouts['envoy']}s")
            if not wait_for_port("127.0.0.1", self.envoy_port, 5.0, alive=env.alive):
                raise self._fail("envoy", f"did not open listener port {self.envoy_port}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for p in reversed(list(self._procs.values())):  # envoy first, upstream last
            p.stop()
        if self.workdir is not None and not self._keep_dir:
            # Keep the logs readable after stop(): copy them into memory first.
            self._final_logs = self.logs()
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"Stack(url={self.url!r}, upstream_port={self.upstream_port}, grpc_port={self.grpc_port}, "
            f"service_admin_port={self.service_admin_port}, envoy_admin_port={self.envoy_admin_port})"
        )
