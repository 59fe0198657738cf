"""TLS and client-certificate checking on the gRPC port, with real certificates."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.service.auth.v3 import external_auth_pb2_grpc

from extauthz.demo.stack import free_port, wait_for_http

from ..unit.envoy.test_check_transport import check_request

pytestmark = pytest.mark.e2e
POLICY = Path(__file__).parent.parent / "unit" / "core" / "policy.yaml"


def _cert(name: str, issuer_key=None, issuer_name=None, ca: bool = False, san: bool = False):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
    cert = b.sign(issuer_key or key, hashes.SHA256())
    return key, cert


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = _cert("test-ca", ca=True)
    srv_key, srv = _cert("extauthz", ca_key, ca.subject, san=True)
    cli_key, cli = _cert("envoy", ca_key, ca.subject)
    rogue_key, rogue = _cert("rogue")
    files = {"ca.pem": _pem(ca), "srv.pem": _pem(srv), "srv.key": _pem(srv_key), "cli.pem": _pem(cli),
             "cli.key": _pem(cli_key), "rogue.pem": _pem(rogue), "rogue.key": _pem(rogue_key)}
    for n, data in files.items():
        (d / n).write_bytes(data)
    return d


@pytest.fixture(scope="module")
def tls_server(pki):
    gp, ap = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "extauthz.cli", "serve", "--policy", str(POLICY),
                             "--grpc-port", str(gp), "--admin-port", str(ap), "--host", "127.0.0.1",
                             "--tls-cert", str(pki / "srv.pem"), "--tls-key", str(pki / "srv.key"),
                             "--tls-client-ca", str(pki / "ca.pem"), "--drain-seconds", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for_http(f"http://127.0.0.1:{ap}/readyz", timeout=30)
    yield gp
    proc.terminate()
    proc.wait(timeout=10)


def _check(port: int, pki: Path, cert: str | None, plaintext: bool = False) -> grpc.StatusCode | str:
    if plaintext:
        ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    else:
        creds = grpc.ssl_channel_credentials(
            root_certificates=(pki / "ca.pem").read_bytes(),
            private_key=(pki / f"{cert}.key").read_bytes() if cert else None,
            certificate_chain=(pki / f"{cert}.pem").read_bytes() if cert else None)
        ch = grpc.secure_channel(f"127.0.0.1:{port}", creds)
    try:
        resp = external_auth_pb2_grpc.AuthorizationStub(ch).Check(
            check_request(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'), timeout=5)
        return "ok" if resp.status.code == 0 else f"denied {resp.status.code}"
    except grpc.RpcError as e:
        return e.code()
    finally:
        ch.close()


def test_client_with_certificate_from_the_ca_is_served(tls_server, pki):
    assert _check(tls_server, pki, "cli") == "ok"


@pytest.mark.parametrize("cert,plaintext", [(None, False), ("rogue", False), (None, True)],
                         ids=["no-client-cert", "cert-from-another-ca", "plaintext"])
def test_other_clients_are_refused(tls_server, pki, cert, plaintext):
    assert _check(tls_server, pki, cert, plaintext) == grpc.StatusCode.UNAVAILABLE
