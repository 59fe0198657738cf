"""The chart's Redis wiring run for real: the rendered container (args, env from Secrets, mounted
TLS files) started as `extauthz serve` against a real `redis-server`, once with the ACL user the
chart README tells operators to create (password from the Secret, default user off), once over
TLS with client certificates. A replica must become ready only with the shared state loaded, and
its claims must land under the release's own key prefix."""

from __future__ import annotations

import datetime
import ipaddress
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.service.auth.v3 import external_auth_pb2_grpc

from extauthz.demo.stack import free_port, wait_for_http

from ..unit.core.conftest import SUPPORT
from ..unit.envoy.test_check_transport import check_request
from . import kubelet
from .conftest import CHART_DIR, NAMESPACE, RELEASE, Chart

PREFIX = f"{NAMESPACE}/{RELEASE}"
PASSWORD = "s3cret-from-the-secret"
ADMIN_PASSWORD = "admin-only-for-the-test"
SERVERS = [{"name": "crm", "match": {"authority": "crm.example.com", "pathPrefix": "/mcp"},
            "tools": [{"name": "lookup_customer", "allow": {"groups": ["support"]}}]}]
LIST = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'


def readme_acl() -> tuple[str, str]:
    """(user, rules) of the `ACL SETUSER` line in the chart README, with the shell quoting removed."""
    readme = (CHART_DIR / "README.md").read_text(encoding="utf-8")
    (line,) = re.findall(r"^redis-cli .*ACL SETUSER .*$", readme, re.M)
    words = shlex.split(line)
    i = words.index("SETUSER")
    return words[i + 1], " ".join(words[i + 2:])


class RedisServer:
    """redis-server from a config file (ACL users, TLS), on a free loopback port."""

    def __init__(self, directory: Path, config: str, port: int, *, tls: dict[str, Any] | None = None) -> None:
        self.dir, self.port, self.tls = directory, port, tls
        (directory / "redis.conf").write_text(config, encoding="utf-8")
        self.proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", str(directory / "redis.conf")],
                                     stdout=open(directory / "log", "wb"), stderr=subprocess.STDOUT)

    def admin(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, username="admin", password=ADMIN_PASSWORD,
                           socket_timeout=5, **(self.tls or {}))

    def wait(self) -> RedisServer:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if self.admin().ping():
                    return self
            except redis.RedisError:
                time.sleep(0.1)
        raise AssertionError((self.dir / "log").read_text()[-2000:])

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def base_config(directory: Path, port_line: str) -> str:
    user, rules = readme_acl()
    rules = rules.replace(">PASSWORD", f">{PASSWORD}")
    return (f"{port_line}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {directory}\n"
            f"user default off\nuser admin on >{ADMIN_PASSWORD} ~* &* +@all\nuser {user} {rules}\n")


def wait_ready(pod: kubelet.Pod) -> None:
    ok = wait_for_http(pod.admin + "/readyz", 30, alive=lambda: pod.proc.poll() is None)
    assert ok, f"not ready (exit {pod.proc.poll()}):\n{pod.log.read_text()[-3000:]}"


def claim(pod: kubelet.Pod, sid: str) -> None:
    """One Check with a session id this replica never saw: it is claimed in Redis."""
    with grpc.insecure_channel(f"127.0.0.1:{pod.grpc_port}") as ch:
        resp = external_auth_pb2_grpc.AuthorizationStub(ch).Check(
            check_request(LIST, SUPPORT, headers={"mcp-session-id": sid}), timeout=10)
    assert resp.status.code == 0, resp


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[RedisServer]:
    port = free_port()
    srv = RedisServer(tmp_path, base_config(tmp_path, f"port {port}"), port).wait()
    yield srv
    srv.close()


def test_readme_acl_is_limited_to_the_release_prefix() -> None:
    user, rules = readme_acl()
    assert user == "mcp-extauthz"
    assert f"~{PREFIX}:*" in rules.split() and "resetkeys" in rules.split()
    assert "-@dangerous" in rules.split()


def test_rendered_pod_runs_on_redis_with_the_acl_user(chart: Chart, acl_redis: RedisServer, tmp_path: Path) -> None:
    user, _ = readme_acl()
    r = chart.render({"redis": {"url": f"redis://127.0.0.1:{acl_redis.port}/0", "existingSecret": "redis-auth",
                                "existingSecretKey": "", "existingSecretPasswordKey": "password",
                                "existingSecretUsernameKey": "username"},
                      "policy": {"servers": SERVERS}})
    pod = kubelet.start(r, tmp_path / "pod", {"redis-auth": {"password": PASSWORD, "username": user}})
    try:
        assert PASSWORD not in " ".join(pod.args)
        wait_ready(pod)
        health = httpx.get(pod.admin + "/healthz", timeout=5).json()
        assert health["status"] == "ok" and health["sharedState"]["connected"] is True, health
        claim(pod, "sess-chart-1")
        admin = acl_redis.admin()
        owner = admin.get(f"{PREFIX}:sess:sess-chart-1")
        assert owner is not None and orjson.loads(owner)["c"], owner
        assert admin.exists(f"{PREFIX}:epoch")
        # Every key the replica wrote is under the release prefix, and the ACL refused nothing.
        assert all(k.startswith(f"{PREFIX}:".encode()) for k in admin.scan_iter(count=1000))
        assert admin.acl_log() == []
    finally:
        pod.stop()


def test_rendered_pod_without_the_password_is_never_ready(chart: Chart, acl_redis: RedisServer,
                                                          tmp_path: Path) -> None:
    """Fail closed: a replica that cannot load the shared state does not take traffic."""
    r = chart.render({"redis": {"url": f"redis://127.0.0.1:{acl_redis.port}/0"}})
    pod = kubelet.start(r, tmp_path / "pod")
    try:
        assert wait_for_http(pod.admin + "/healthz", 30, alive=lambda: pod.proc.poll() is None), pod.log.read_text()
        time.sleep(2)
        assert httpx.get(pod.admin + "/readyz", timeout=5).status_code == 503
        health = httpx.get(pod.admin + "/healthz", timeout=5).json()
        assert health["status"] == "degraded" and health["sharedState"]["connected"] is False
    finally:
        pod.stop()


# --- TLS -------------------------------------------------------------------------------------------------

def _cert(name: str, issuer: tuple[Any, x509.Name] | None = None, *, ca: bool = False) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer[1] if issuer else subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
    return key, b.sign(issuer[0] if issuer else key, hashes.SHA256())


def _pem(obj: Any) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, dict[str, bytes]]]:
    ca_key, ca = _cert("test-redis-ca", ca=True)
    srv_key, srv = _cert("redis", (ca_key, ca.subject))
    cli_key, cli = _cert("mcp-extauthz", (ca_key, ca.subject))
    files = {"ca.crt": _pem(ca), "srv.crt": _pem(srv), "srv.key": _pem(srv_key),
             "tls.crt": _pem(cli), "tls.key": _pem(cli_key)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    port = free_port()
    tls_lines = (f"port 0\ntls-port {port}\ntls-cert-file {tmp_path}/srv.crt\ntls-key-file {tmp_path}/srv.key\n"
                 f"tls-ca-cert-file {tmp_path}/ca.crt\ntls-auth-clients yes")
    client_tls = {"ssl": True, "ssl_ca_certs": str(tmp_path / "ca.crt"), "ssl_certfile": str(tmp_path / "tls.crt"),
                  "ssl_keyfile": str(tmp_path / "tls.key")}
    srv_proc = RedisServer(tmp_path, base_config(tmp_path, tls_lines), port, tls=client_tls).wait()
    yield srv_proc, files
    srv_proc.close()


def test_rendered_pod_runs_on_redis_over_tls_with_client_certificates(chart: Chart, tls_redis, tmp_path: Path) -> None:
    srv, files = tls_redis
    user, _ = readme_acl()
    redis_values = {"url": f"rediss://127.0.0.1:{srv.port}/0", "existingSecret": "redis-auth",
                    "existingSecretKey": "", "existingSecretPasswordKey": "password",
                    "existingSecretUsernameKey": "username",
                    "tls": {"ca": {"secretName": "redis-ca"}, "clientCert": {"secretName": "redis-client"}}}
    secrets = {"redis-auth": {"password": PASSWORD, "username": user},
               "redis-ca": {"ca.crt": files["ca.crt"]},
               "redis-client": {"tls.crt": files["tls.crt"], "tls.key": files["tls.key"]}}
    pod = kubelet.start(chart.render({"redis": redis_values, "policy": {"servers": SERVERS}}), tmp_path / "pod", secrets)
    try:
        wait_ready(pod)
        claim(pod, "sess-chart-tls")
        assert srv.admin().get(f"{PREFIX}:sess:sess-chart-tls") is not None
    finally:
        pod.stop()
    # The same release without its client certificate: Redis refuses the handshake, the replica
    # stays unready and says why.
    no_cert = {**redis_values, "tls": {"ca": {"secretName": "redis-ca"}}}
    pod = kubelet.start(chart.render({"redis": no_cert}), tmp_path / "pod2", secrets)
    try:
        assert wait_for_http(pod.admin + "/healthz", 30, alive=lambda: pod.proc.poll() is None), pod.log.read_text()
        time.sleep(2)
        assert httpx.get(pod.admin + "/readyz", timeout=5).status_code == 503
        assert httpx.get(pod.admin + "/healthz", timeout=5).json()["status"] == "degraded"
    finally:
        pod.stop()
