"""A real `redis-server` on a free loopback port, for the tests and benches (Debian `redis-server`)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class RedisProcess:
    """Start, stop (keeping or dropping its data) and restart one redis-server."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:  # pragma: no cover - the test command installs it; never a skip
            raise RuntimeError("redis-server is required (apt-get install redis-server)")
        self.binary = binary
        self.port = port or _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="extauthz-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--dbfilename", "dump.rdb", "--protected-mode", "yes"],
            stdout=open(self.dir / "log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115 (the process's log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start: {(self.dir / 'log').read_text()[-500:]}")

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop; with `keep_data` it saves first, so the next start has the same data set."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if keep_data:
            with socket.create_connection(("127.0.0.1", self.port), 2) as s:
                s.sendall(b"SHUTDOWN SAVE\r\n")
                try:
                    s.recv(64)
                except OSError:
                    pass
        else:
            (self.dir / "dump.rdb").unlink(missing_ok=True)
            self.proc.kill()
        self.proc.wait(10)
        if not keep_data:
            (self.dir / "dump.rdb").unlink(missing_ok=True)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
