"""TLS in transit (DESIGN.md "Privacy and access"): `sendtime serve --certfile --keyfile` serves HTTPS
only, TLS 1.2 or newer, verified with curl against a CA the test makes; a plain bind beyond
loopback refuses to start unless allow_plain_http = true."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers.cli import ROOT, Cli
from tests.helpers.net import free_port


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): a CA, and a certificate it signs for 127.0.0.1/localhost."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sendtime test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_key(key))
    paths[2].chmod(0o600)
    return paths


def _serve(home: Path, host: str, port: int, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", "--host", host, "--port", str(port), "--workers", "1", *extra],
        cwd=ROOT,
        env={**os.environ, "SENDTIME_HOME": str(home), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], check=False, capture_output=True, text=True)


def _wait_https(url: str, ca: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        if _curl("--cacert", str(ca), url + "/health").returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError("the HTTPS server did not start")


def test_https_only_tls12_or_newer_verified_with_curl(tmp_path):
    assert shutil.which("curl"), "curl is needed (scripts/system-deps.sh)"
    ca, cert, key = make_ca_and_server_cert(tmp_path / "pki")
    home = tmp_path / "home"
    port = free_port()
    proc = _serve(home, "127.0.0.1", port, "--certfile", str(cert), "--keyfile", str(key))
    url = f"https://127.0.0.1:{port}"
    try:
        _wait_https(url, ca, proc)
        ok = _curl("--cacert", str(ca), "-D", "-", url + "/health")
        assert ok.returncode == 0 and '"status":"ok"' in ok.stdout and "nosniff" in ok.stdout.lower()
        assert _curl("--cacert", str(ca), "--tlsv1.2", "--tls-max", "1.2", url + "/health").returncode == 0
        old = _curl("--cacert", str(ca), "--tlsv1.0", "--tls-max", "1.1", url + "/health")
        assert old.returncode != 0  # TLS 1.0 and 1.1 are refused
        assert _curl(url + "/health").returncode != 0  # not trusted without the CA
        plain = _curl(f"http://127.0.0.1:{port}/health")
        assert '"status":"ok"' not in plain.stdout  # no plain HTTP on the TLS port
    finally:
        _stop(proc)


def test_plain_bind_beyond_loopback_is_refused(tmp_path):
    home = tmp_path / "home"
    cli = Cli(home)
    refused = cli("serve", "--host", "0.0.0.0", "--port", str(free_port()), check=False, timeout=60)
    assert refused.returncode == 2 and "refusing to serve plain HTTP" in refused.stderr
    half = cli(
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--certfile",
        str(tmp_path / "x.pem"),
        check=False,
        timeout=60,
    )
    assert half.returncode == 2 and "both a certificate and its key" in half.stderr
    ca, cert, _key = make_ca_and_server_cert(tmp_path / "pki")
    wrong = cli(
        "serve", "--port", str(free_port()), "--certfile", str(cert), "--keyfile", str(ca), check=False, timeout=60
    )
    assert wrong.returncode == 2 and "cannot load" in wrong.stderr
    # behind a TLS-terminating proxy: allowed when said so
    port = free_port()
    proc = _serve(home, "0.0.0.0", port, env={"SENDTIME_ALLOW_PLAIN_HTTP": "true"})
    try:
        deadline = time.monotonic() + 60
        while _curl(f"http://127.0.0.1:{port}/health").returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.3)
    finally:
        _stop(proc)


def test_postgres_sslmode_is_honoured(pg_url):
    """`sslmode` of a PostgreSQL URL reaches the driver as written (the local server speaks TLS)."""
    from sqlalchemy import text

    from pipeline.store import make_engine

    def ssl_in_use(mode: str) -> bool:
        engine = make_engine(f"{pg_url}?sslmode={mode}")
        try:
            with engine.connect() as conn:
                return bool(conn.execute(text("select ssl from pg_stat_ssl where pid = pg_backend_pid()")).scalar())
        finally:
            engine.dispose()

    assert ssl_in_use("require") is True
    assert ssl_in_use("disable") is False
