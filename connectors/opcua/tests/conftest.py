"""Real OPC UA servers on the loopback for the connector's tests, and the certificates they use.

* ``pki``: certificates made here with ``cryptography`` (server, client, a stranger's server);
* ``sim``: the asyncua simulated machine (``edgeplane_opcua.simulator``) in a subprocess, with
  Basic256Sha256 on and a user ``operator``; shared by a test module;
* ``node_server``: node-opcua (an independent implementation) in a Node.js subprocess, with its
  own PKI folder;
* ``ServerProcess``: start, stop and restart such a process on a fixed port.
"""

from __future__ import annotations

import datetime as dt
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeplane.testing import free_port

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
USER, PASSWORD = "operator", "s3cret-pw"


def make_certificate(folder: Path, name: str, uri: str, *, server: bool) -> tuple[Path, Path]:
    """A self-signed OPC UA application certificate (DER) and its key (PEM) in ``folder``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeplane tests")])
    now = dt.datetime.now(dt.timezone.utc)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri), x509.DNSName("localhost"),
                                                    x509.DNSName(socket.gethostname())]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                                     data_encipherment=True, key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Pki:
    folder: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a certificate the client must not trust

    def thumbprint(self, path: Path) -> str:
        import hashlib

        return hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    server_cert, server_key = make_certificate(folder, "server", "urn:freeopcua:python:server", server=True)
    client_cert, client_key = make_certificate(folder, "client", "urn:edgeplane:test:client", server=False)
    stranger_cert, _ = make_certificate(folder, "stranger", "urn:elsewhere:server", server=True)
    return Pki(folder, server_cert, server_key, client_cert, client_key, stranger_cert)


class ServerProcess:
    """A server in a subprocess that prints ``READY`` when it listens; restartable on its port."""

    def __init__(self, argv: list[str], port: int, url: str, cwd: Path | None = None, ready_timeout: float = 60.0):
        self.argv = argv
        self.port = port
        self.url = url
        self.cwd = cwd
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self.cwd,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        lines: queue.Queue[str | None] = queue.Queue()

        def drain(stream) -> None:
            # a reader thread: keeps the pipe from filling up however much the server logs
            for line in stream:
                self.output.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(5)
                raise RuntimeError(f"server {self.argv[:3]} exited with {self.proc.returncode}:\n{''.join(self.output[-40:])}")
            if line.startswith("READY"):
                return self
        self.stop()
        raise RuntimeError(f"server {self.argv[:3]} not ready within {self.ready_timeout} s:\n{''.join(self.output[-40:])}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def sim_process(pki: Pki | None, port: int | None = None, *extra: str) -> ServerProcess:
    port = port or free_port()
    argv = [sys.executable, "-m", "edgeplane_opcua.simulator", "--port", str(port), "--user", f"{USER}:{PASSWORD}", *extra]
    if pki is not None:
        argv += ["--cert", str(pki.server_cert), "--key", str(pki.server_key)]
    return ServerProcess(argv, port, f"opc.tcp://127.0.0.1:{port}/edgeplane/sim/")


@pytest.fixture(scope="module")
def sim(pki):
    """The asyncua simulated machine with security on, shared by one test module."""
    server = sim_process(pki).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def node_server(tmp_path_factory):
    """A node-opcua server (see tests/node/server.js), with its own PKI folder."""
    if not (NODE_DIR / "node_modules" / "node-opcua").is_dir():
        raise RuntimeError(f"node-opcua is not installed: run `npm ci --prefix {NODE_DIR}` (scripts/setup.sh does)")
    node = shutil.which("node")
    assert node, "node (v20) is not on PATH"
    port = free_port()
    pki_dir = tmp_path_factory.mktemp("node-pki")
    server = ServerProcess([node, str(NODE_DIR / "server.js"), str(port), str(pki_dir)], port,
                           f"opc.tcp://127.0.0.1:{port}/UA/edgeplane", cwd=NODE_DIR)
    server.pki = pki_dir  # type: ignore[attr-defined]
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPLANE_DATA_DIR", str(tmp_path / "state"))


@pytest.fixture
def sim_factory(pki):
    """Factory: ``sim_factory(secure=False, *extra_args)`` -> a started simulator, stopped after the test."""
    started: list[ServerProcess] = []

    def factory(secure: bool = False, *extra: str) -> ServerProcess:
        server = sim_process(pki if secure else None, None, *extra).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
