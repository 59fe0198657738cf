"""Two service replicas on one real `redis-server`, as the shared-state e2e tests start them.

`Replica`: one `extauthz serve --redis` process on fixed ports (so it can be restarted).
`behind_envoy`: replica B as such a process, then a demo Stack whose service is replica A and whose
Envoy round-robins every Check and ext_proc stream between A and B.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from extauthz.demo.stack import Stack, free_port, wait_for_http
from extauthz.demo.tokens import TokenIssuer
from extauthz.shared.testing import RedisProcess


def shared_args(redis: RedisProcess, prefix: str) -> list[str]:
    """The `serve` options of a replica of the release `prefix` on `redis`."""
    return ["--redis", redis.url, "--redis-prefix", prefix]


def demo_policy(directory: Path, extra: str = "") -> Path:
    """The packaged demo policy (with `extra` YAML appended) as `directory`/policy.yaml."""
    policy = directory / "policy.yaml"
    policy.write_text(resources.files("extauthz.policy").joinpath("default.yaml").read_text() + extra)
    return policy


class Replica:
    """One `extauthz serve` process (`extra`: more options, e.g. --workers 2) on fixed ports."""

    def __init__(self, policy: Path, shared: Sequence[str], *extra: str, name: str = "B") -> None:
        self.name = name
        self.grpc, self.admin_port = free_port(), free_port()
        self.argv = [sys.executable, "-m", "extauthz.cli", "serve", "--policy", str(policy), *extra,
                     "--grpc-port", str(self.grpc), "--admin-port", str(self.admin_port), "--host", "127.0.0.1",
                     "--drain-seconds", "1", *shared]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self) -> Replica:
        """Returns once the replica is ready (it loaded the shared state)."""
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for_http(self.admin + "/readyz", timeout=60), f"replica {self.name} never became ready"
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)


@dataclass
class Pair:
    stack: Stack        # replica A is the stack's service; its Envoy balances over A and B
    b: Replica

    @property
    def a_grpc(self) -> int:
        return self.stack.authz_port

    @property
    def a_admin(self) -> str:
        return self.stack.service_admin_url


@contextmanager
def behind_envoy(policy: Path, shared: Sequence[str], *b_extra: str, **stack_options: Any) -> Iterator[Pair]:
    """Replica B (`b_extra`: its own options) ready, then the Stack with replica A started; at
    exit the Stack, then B, are stopped. `stack_options`: more Stack arguments (upstream_args)."""
    b = Replica(policy, shared, *b_extra)
    try:
        b.start()
        stack = Stack(str(policy), tokens=TokenIssuer(), service_args=list(shared),
                      envoy_options={"more_authz_ports": (b.grpc,)}, **stack_options)
        try:
            stack.start()
            yield Pair(stack, b)
        finally:
            stack.stop()
    finally:
        b.stop()
