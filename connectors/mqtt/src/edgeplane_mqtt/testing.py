"""Test helpers: a real Mosquitto broker on a free loopback port, TLS certificates, a Sparkplug node.

Used by this package's tests and meant for any test that needs a broker (the sync layer)::

    from edgeplane_mqtt.testing import Mosquitto, make_certificates

    with Mosquitto(tmp_path) as broker:                       # mqtt://127.0.0.1:<free port>
        ...
    certs = make_certificates(tmp_path / "pki")
    with Mosquitto(tmp_path, tls=certs, require_certificate=True) as broker:   # mutual TLS
        broker.restart()                                     # same port, e.g. mid-stream

Mosquitto comes from the Debian package ``mosquitto`` (``apt-get install mosquitto``). The
methods block (they start a process and wait for its port): from async code call them with
``await asyncio.to_thread(broker.restart)``.
"""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import itertools
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeplane.errors import EdgeplaneError
from edgeplane.testing import free_port

__all__ = ["Mosquitto", "MosquittoError", "Publisher", "SparkplugEdgeNode", "TlsFiles", "free_port", "make_certificates"]


class MosquittoError(EdgeplaneError, RuntimeError):
    pass


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a test PKI: a CA, a broker certificate for 127.0.0.1/localhost, a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(folder: Path, hostname: str = "127.0.0.1", days: int = 2) -> TlsFiles:
    """Generate a CA, a broker certificate (for ``hostname`` and localhost) and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)

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
    files.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    write_key(server_key, files.server_key)
    write_key(client_key, files.client_key)
    return files


class Mosquitto:
    """A Mosquitto broker process on 127.0.0.1 with a generated config; a context manager.

    ``tls``: serve TLS with these files; ``require_certificate``: mutual TLS (clients need a
    certificate signed by the CA); ``users``: {name: password}, and anonymous clients are refused;
    ``persistence``: keep sessions and queued messages across :meth:`restart`.
    """

    _instances = itertools.count()

    def __init__(self, folder: Path, *, tls: TlsFiles | None = None, require_certificate: bool = False,
                 users: dict[str, str] | None = None, port: int | None = None, persistence: bool = False,
                 max_queued_messages: int = 1_000_000, max_inflight_messages: int = 100):
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
            f"allow_anonymous {'false' if self.users else 'true'}",
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
        config = self.folder / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start the broker and wait until its port accepts connections."""
        if self.running:
            return self
        for attempt in range(3):
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

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Publisher:
    """A plain paho client that publishes test messages (QoS 1 by default, waits for the ack)."""

    def __init__(self, broker: Mosquitto, **tls: Any):
        """``tls``: keyword arguments of paho's ``tls_set`` (ca_certs, certfile, keyfile)."""
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="")
        if tls:
            self.client.tls_set(**tls)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, topic: str, payload: Any, qos: int = 1) -> None:
        import json

        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos)
        if qos:
            info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class SparkplugEdgeNode:
    """A Sparkplug B edge node that publishes births, data and deaths, for tests and demos.

    ``devices`` maps device ids to {metric: initial value}; ``node_metrics`` are the node's own.
    Every metric gets an alias; data messages use aliases only, as real nodes do. A rebirth
    request (NCMD ``Node Control/Rebirth``) makes it publish its births again; every command
    it receives is kept in :attr:`commands` as (topic, Payload).
    """

    def __init__(self, host: str, port: int, group: str, node: str, *, devices: dict[str, dict[str, Any]] | None = None,
                 node_metrics: dict[str, Any] | None = None, tls_ca: str | None = None):
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        from edgeplane_mqtt.sparkplug import NAMESPACE

        self.host, self.port, self.group, self.node = host, port, group, node
        self.devices = {d: dict(m) for d, m in (devices or {}).items()}
        self.node_metrics = dict(node_metrics or {})
        self.prefix = f"{NAMESPACE}/{group}"
        self.seq = 0
        self.bdseq = 0
        self.aliases: dict[tuple[str, str], int] = {}
        for i, key in enumerate([("", m) for m in self.node_metrics] + [(d, m) for d, ms in self.devices.items() for m in ms]):
            self.aliases[key] = i + 1
        self.commands: list[tuple[str, Any]] = []
        self.rebirths = 0
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{group}-{node}")
        if tls_ca:
            self.client.tls_set(ca_certs=tls_ca)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect

    # -- payloads -------------------------------------------------------------------------------

    @staticmethod
    def _set_value(metric: Any, value: Any) -> None:
        from edgeplane_mqtt.sparkplug import DataType

        if isinstance(value, bool):
            metric.datatype, metric.boolean_value = DataType.Boolean, value
        elif isinstance(value, int):
            metric.datatype, metric.long_value = DataType.Int64, value & 0xFFFFFFFFFFFFFFFF
        elif isinstance(value, float):
            metric.datatype, metric.double_value = DataType.Double, value
        else:
            metric.datatype, metric.string_value = DataType.String, str(value)

    def _payload(self, seq: bool = True) -> Any:
        from edgeplane_mqtt.sparkplug import Payload

        payload = Payload(timestamp=int(time.time() * 1000))
        if seq:
            payload.seq = self.seq
            self.seq = (self.seq + 1) % 256
        return payload

    def _death_payload(self) -> bytes:
        from edgeplane_mqtt.sparkplug import BDSEQ_METRIC, DataType, Payload

        payload = Payload(timestamp=int(time.time() * 1000))
        payload.metrics.add(name=BDSEQ_METRIC, datatype=DataType.Int64, long_value=self.bdseq)
        return payload.SerializeToString()

    # -- lifecycle ------------------------------------------------------------------------------

    def connect(self, birth: bool = True) -> None:
        """Connect (with NDEATH as the will) and publish the births."""
        self.client.will_set(f"{self.prefix}/NDEATH/{self.node}", self._death_payload(), qos=1)
        self._born = threading.Event()
        self._birth_on_connect = birth
        self.client.connect(self.host, self.port, keepalive=5)
        self.client.loop_start()
        if birth and not self._born.wait(10):
            raise TimeoutError(f"edge node {self.node} could not connect to {self.host}:{self.port}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        client.subscribe([(f"{self.prefix}/NCMD/{self.node}", 0), (f"{self.prefix}/DCMD/{self.node}/#", 0)])
        if self._birth_on_connect:
            self.birth()
        self._born.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        from edgeplane_mqtt.sparkplug import REBIRTH_METRIC, Payload

        payload = Payload.FromString(message.payload)
        with self._lock:
            self.commands.append((message.topic, payload))
        if "/NCMD/" in message.topic and any(m.name == REBIRTH_METRIC and m.boolean_value for m in payload.metrics):
            self.rebirths += 1
            self.birth()

    def birth(self) -> None:
        """Publish NBIRTH (seq 0) and a DBIRTH for every device."""
        from edgeplane_mqtt.sparkplug import BDSEQ_METRIC, REBIRTH_METRIC, DataType

        with self._lock:
            self.seq = 0
            payload = self._payload()
            payload.metrics.add(name=BDSEQ_METRIC, datatype=DataType.Int64, long_value=self.bdseq)
            payload.metrics.add(name=REBIRTH_METRIC, datatype=DataType.Boolean, boolean_value=False)
            for metric, value in self.node_metrics.items():
                m = payload.metrics.add(name=metric, alias=self.aliases[("", metric)])
                self._set_value(m, value)
            self.client.publish(f"{self.prefix}/NBIRTH/{self.node}", payload.SerializeToString(), qos=0)
            for device in self.devices:
                self._device_birth(device)

    def _device_birth(self, device: str) -> None:
        payload = self._payload()
        for metric, value in self.devices[device].items():
            m = payload.metrics.add(name=metric, alias=self.aliases[(device, metric)])
            self._set_value(m, value)
        self.client.publish(f"{self.prefix}/DBIRTH/{self.node}/{device}", payload.SerializeToString(), qos=0)

    def data(self, device: str, values: dict[str, Any], *, skip_seq: int = 0, alias: int | None = None) -> None:
        """Publish DDATA (or NDATA for device ""), metrics by alias; ``skip_seq`` loses that many seq numbers."""
        with self._lock:
            self.seq = (self.seq + skip_seq) % 256
            payload = self._payload()
            for metric, value in values.items():
                m = payload.metrics.add(alias=alias if alias is not None else self.aliases[(device, metric)])
                self._set_value(m, value)
                m.ClearField("datatype")  # data messages rely on the birth's datatype
                (self.devices[device] if device else self.node_metrics)[metric] = value
            topic = f"{self.prefix}/DDATA/{self.node}/{device}" if device else f"{self.prefix}/NDATA/{self.node}"
            self.client.publish(topic, payload.SerializeToString(), qos=0)

    def device_death(self, device: str) -> None:
        with self._lock:
            self.client.publish(f"{self.prefix}/DDEATH/{self.node}/{device}", self._payload().SerializeToString(), qos=0)

    def death(self) -> None:
        """Publish NDEATH (as the broker would publish the will) and advance bdSeq."""
        with self._lock:
            self.client.publish(f"{self.prefix}/NDEATH/{self.node}", self._death_payload(), qos=1).wait_for_publish(5)
            self.bdseq = (self.bdseq + 1) % 256

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
