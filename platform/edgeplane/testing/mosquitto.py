"""A real Mosquitto broker on a free loopback port, plain or TLS, and a test PKI for it.

The one broker helper of the repository: the sync layer's tests, the MQTT connector's, the
uplinks', the solutions' and the benchmarks' all start Mosquitto through it::

    from edgeplane.testing import Mosquitto, make_certificates

    with Mosquitto(tmp_path) as broker:                       # mqtt://127.0.0.1:<free port>
        ...
    certs = make_certificates(tmp_path / "pki")
    with Mosquitto(tmp_path, tls=certs, require_certificate=True) as broker:   # mutual TLS
        broker.restart()                                     # same port, e.g. mid-stream

In a test, the ``mqtt_broker`` fixture (:mod:`edgeplane.testing.fixtures`) starts them and stops
them after. Mosquitto comes from the Debian package ``mosquitto`` (``apt-get install
mosquitto``). The methods block (they start a process and wait for its port): from async code
call them with ``await asyncio.to_thread(broker.restart)``, or use :func:`broker_outage`.
"""

from __future__ import annotations

import asyncio
import datetime
import getpass
import ipaddress
import itertools
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeplane.errors import EdgeplaneError
from edgeplane.testing.ports import free_port

__all__ = ["Mosquitto", "MosquittoError", "TlsFiles", "broker_outage", "make_certificates"]


class MosquittoError(EdgeplaneError, RuntimeError):
    """Mosquitto is not installed or did not start (the message carries its log)."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a test PKI: a CA, a broker certificate for 127.0.0.1/localhost, a client certificate.

    A broker only needs the first three: a PKI made elsewhere (a site's lab CA) leaves the
    client's out.
    """

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path | None = None
    client_key: Path | None = None


def make_certificates(folder: Path, hostname: str = "127.0.0.1", days: int = 2) -> TlsFiles:
    """Generate a CA, a broker certificate (for ``hostname`` and localhost) and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write_key(key: Any, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(name("edgeplane test CA")).issuer_name(name("edgeplane test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(common: str, usage: Any, san: list[Any] | None) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(name(common)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    try:
        host_name: Any = x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        host_name = x509.DNSName(hostname)
    server_key, server_cert = issue(hostname, ExtendedKeyUsageOID.SERVER_AUTH, [host_name, x509.DNSName("localhost")])
    client_key, client_cert = issue("edgeplane-test-client", ExtendedKeyUsageOID.CLIENT_AUTH, None)
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem", folder / "client.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    (folder / "client.pem").write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    write_key(server_key, files.server_key)
    write_key(client_key, folder / "client.key")
    return files


class Mosquitto:
    """A Mosquitto broker process on 127.0.0.1 with a generated config; a context manager.

    ``tls``: serve TLS with these files; ``require_certificate``: mutual TLS (clients need a
    certificate signed by the CA); ``identity_from_certificate``: a client's certificate CN is its
    user name (Mosquitto's ``use_identity_as_username``; anonymous clients are refused);
    ``crl``: refuse the certificates revoked in this CRL file; ``acl``: Mosquitto's ``acl_file``;
    ``users``: {name: password}, and anonymous clients are refused; ``persistence``: keep sessions
    and queued messages across :meth:`restart`; ``extra``: more lines for its config file.
    """

    _instances = itertools.count()

    def __init__(self, folder: Path, *, tls: TlsFiles | None = None, require_certificate: bool = False,
                 users: dict[str, str] | None = None, port: int | None = None, persistence: bool = False,
                 max_queued_messages: int = 1_000_000, max_inflight_messages: int = 100,
                 identity_from_certificate: bool = False, crl: Path | None = None, acl: Path | None = None,
                 extra: Iterable[str] = ()):
        binary = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).exists()), None)
        if binary is None:
            raise MosquittoError("mosquitto is not installed: apt-get install -y mosquitto mosquitto-clients")
        self.binary = binary
        self.folder = Path(folder) / f"mosquitto-{next(self._instances)}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.require_certificate = require_certificate
        self.users = users or {}
        self.persistence = persistence
        self.identity_from_certificate = identity_from_certificate
        self.crl = crl
        self.acl = acl
        self.extra = list(extra)
        self.max_queued_messages = max_queued_messages
        self.max_inflight_messages = max_inflight_messages
        self.host = "127.0.0.1"
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file = self.folder / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} {self.host}",
            # as root, mosquitto would switch to the 'mosquitto' user and could not write our folder
            f"user {getpass.getuser()}",
            f"allow_anonymous {'false' if self.users or self.identity_from_certificate else 'true'}",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_inflight_messages {self.max_inflight_messages}",
            f"log_dest file {self.log_file}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            f"persistence {'true' if self.persistence else 'false'}",
        ]
        if self.persistence:
            lines.append(f"persistence_location {self.folder}/")
        if self.users:
            password_file = self.folder / "passwords"
            password_file.write_text("")
            for user, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(password_file), user, password], check=True, capture_output=True)
            password_file.chmod(0o600)
            lines.append(f"password_file {password_file}")
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.server_cert}", f"keyfile {self.tls.server_key}",
                      f"require_certificate {'true' if self.require_certificate else 'false'}"]
        if self.identity_from_certificate:
            lines.append("use_identity_as_username true")
        if self.crl is not None:
            lines.append(f"crlfile {self.crl}")
        if self.acl is not None:
            lines.append(f"acl_file {self.acl}")
        lines += self.extra
        config = self.folder / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start the broker and wait until its port accepts connections."""
        if self.running:
            return self
        for _attempt in range(3):
            config = self._write_config()
            self.process = subprocess.Popen([self.binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE)
            if self._wait_listening(timeout):
                return self
            error = self._failure_text()
            self.stop()
            if self._fixed_port or "Address already in use" not in error:
                raise MosquittoError(f"mosquitto did not start on port {self.port}: {error}")
            self.port = free_port()  # another process took the port between our probe and the bind
        raise MosquittoError(f"mosquitto did not start after 3 attempts: {error}")

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def _failure_text(self) -> str:
        text = ""
        if self.process is not None and self.process.stderr is not None and self.process.poll() is not None:
            text = self.process.stderr.read().decode(errors="replace")
        if self.log_file.exists():
            text += self.log_file.read_text(errors="replace")[-2000:]
        return text.strip() or "no output"

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process.stderr is not None:
            process.stderr.close()

    def restart(self, down_for: float = 0.0) -> None:
        """Stop and start again on the same port (clients see the connection drop)."""
        self.stop()
        if down_for:
            time.sleep(down_for)
        self._fixed_port = True
        self.start()

    def reload(self) -> None:
        """Ask the running broker to read its configuration files again (SIGHUP), e.g. a new CRL;
        clients stay connected."""
        if not self.running or self.process is None:
            raise MosquittoError(f"mosquitto on port {self.port} is not running: start it first")
        self.process.send_signal(signal.SIGHUP)

    def log(self) -> str:
        """What the broker logged so far."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


async def broker_outage(broker: Mosquitto, seconds: float) -> None:
    """Stop the broker for ``seconds`` (clients lose their connection), then start it on the same port."""
    await asyncio.to_thread(broker.stop)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(broker.start)
