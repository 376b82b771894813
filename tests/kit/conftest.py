"""Fixtures for the kit's tests: a Mosquitto broker (edgeplane.testing's) with mutual TLS from a site folder's lab CA,
an SNTP server on loopback, and helpers to run the kit's commands."""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import load_pem_x509_certificate

from edgeplane.kit.plugin_cli import plugin_group
from edgeplane.provisioning.certs import issue_certificate, make_ca, write_private
from edgeplane.provisioning.site_cli import site_group
from edgeplane.testing import Mosquitto, TlsFiles


def invoke(group, *args: str, ok: bool = True):
    """Run a kit command in-process; assert its exit code (0 if ``ok``, else non-zero)."""
    result = CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False)
    assert (result.exit_code == 0) == ok, f"exit {result.exit_code}:\n{result.output}"
    return result


def site_cmd(*args: str, ok: bool = True):
    return invoke(site_group, *args, ok=ok)


def plugin_cmd(*args: str, ok: bool = True):
    return invoke(plugin_group, *args, ok=ok)


def issue_pair(ca_dir: Path, cn: str, out: Path, *, server: bool = False) -> tuple[Path, Path]:
    """A certificate and key for ``cn`` signed by the CA in ``ca_dir`` (ca.pem, ca.key)."""
    ca = load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_certificate(key, cn, ca, ca_key, server=server, hosts=["127.0.0.1", "localhost"] if server else None)
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{cn}.pem", out / f"{cn}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    return cert_path, key_path


def new_ca(folder: Path, cn: str) -> Path:
    """An operator CA (ca.pem, ca.key) in ``folder``."""
    cert, key = make_ca(cn)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(folder / "ca.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder


def tls_broker(folder: Path, ca_dir: Path) -> Mosquitto:
    """Mosquitto on loopback requiring client certificates from one CA (the site's identity is its
    CN), started; the caller stops it."""
    cert, key = issue_pair(ca_dir, "broker", folder, server=True)
    broker = Mosquitto(folder, tls=TlsFiles(ca_dir / "ca.pem", cert, key), require_certificate=True,
                       identity_from_certificate=True, max_queued_messages=100_000)
    return broker.start(timeout=15)


class SntpServer:
    """Answers SNTP queries on loopback with this machine's clock plus ``offset`` seconds."""

    def __init__(self, offset: float = 0.0):
        self.offset = offset
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @staticmethod
    def _ntp(t: float) -> bytes:
        t += 2208988800
        return struct.pack("!II", int(t), int((t % 1) * 2**32))

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                continue
            now = time.time() + self.offset
            # LI 0, version 4, mode 4 (server), stratum 1; originate = the client's transmit time
            reply = b"\x24\x01\x00\xec" + 8 * b"\0" + b"LOCL" + self._ntp(now) + data[40:48] + self._ntp(now) + self._ntp(now)
            self.sock.sendto(reply, peer)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def sntp():
    server = SntpServer()
    yield server
    server.stop()
