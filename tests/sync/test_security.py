"""Mosquitto with per-site client certificates and an ACL: each site only in its own topic tree."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgeplane import Batch, Bus, WallClock
from edgeplane.metrics import Metrics
from edgeplane.sync import SyncConfig, SyncService
from edgeplane.testing import Mosquitto, TlsFiles
from edgeplane_cloud.embedded import CloudServer

from .conftest import wait_until


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _write(folder: Path, name: str, cert: x509.Certificate, key) -> tuple[str, str]:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def _cert(cn: str, key, issuer_cert=None, issuer_key=None, *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer_cert.subject if issuer_cert else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, tuple[str, str]]:
    folder = tmp_path / "pki"
    folder.mkdir()
    ca_key = _key()
    ca = _cert("edgeplane test CA", ca_key, ca=True)
    out = {"ca": _write(folder, "ca", ca, ca_key)}
    broker_key = _key()
    out["broker"] = _write(folder, "broker", _cert("localhost", broker_key, ca, ca_key, server=True), broker_key)
    for cn in ("plant-a", "plant-b", "cloud"):
        key = _key()
        out[cn] = _write(folder, cn, _cert(cn, key, ca, ca_key), key)
    rogue_key = _key()
    rogue_ca = _cert("rogue CA", rogue_key, ca=True)
    key = _key()
    out["rogue"] = _write(folder, "rogue", _cert("plant-a", key, rogue_ca, rogue_key), key)
    return out


@pytest.fixture
def tls_broker(tmp_path: Path, pki, mqtt_broker) -> Mosquitto:
    acl = tmp_path / "broker" / "acl"
    acl.parent.mkdir(parents=True, exist_ok=True)
    acl.write_text("pattern write edgeplane/%u/up/#\npattern read edgeplane/%u/down/#\n"
                   "user cloud\ntopic readwrite edgeplane/#\n")
    return mqtt_broker(tls=broker_files(pki), require_certificate=True, identity_from_certificate=True, acl=acl,
                       persistence=True, extra=["autosave_interval 1"])


def broker_files(pki) -> TlsFiles:
    """The broker's side of the test PKI (sites bring their own certificates)."""
    return TlsFiles(Path(pki["ca"][0]), Path(pki["broker"][0]), Path(pki["broker"][1]))


def _client(broker: Mosquitto, pki, who: str, received: list | None = None):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"raw-{who}", protocol=mqtt.MQTTv311)
    client.tls_set(ca_certs=pki["ca"][0], certfile=pki[who][0], keyfile=pki[who][1], cert_reqs=ssl.CERT_REQUIRED)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    if received is not None:
        client.on_message = lambda c, u, m: received.append(m.topic)
    return client, connected


async def test_site_publishes_only_under_its_own_tree_and_reads_only_its_own_downlink(tls_broker: Mosquitto, pki, tmp_path: Path):
    url = f"mqtts://127.0.0.1:{tls_broker.port}"
    cloud = CloudServer(url, tmp_path / "cloud", ca=pki["ca"][0], cert=pki["cloud"][0], key=pki["cloud"][1])
    cloud.start()
    bus = Bus()
    config = SyncConfig.model_validate({"uplink": {"url": url, "ca": pki["ca"][0], "cert": pki["plant-a"][0],
                                                   "key": pki["plant-a"][1]},
                                        "policy": [{"topics": "dev/#"}], "durability": "process"})
    site = SyncService(config, site_id="plant-a", bus=bus, clock=WallClock(), metrics=Metrics(), store_dir=tmp_path / "a")
    await site.start()
    try:
        await bus.publish(Batch.of("dev/x", np.arange(10.0), np.arange(10.0)))
        await wait_until(lambda: cloud.store.status() and any(r["site"] == "plant-a" and r["readings"] == 10
                                                              for r in cloud.store.status()), what="plant-a's data")
        # plant-a's certificate writing into plant-b's tree: the broker drops it. A marker sent after
        # it on the same connection proves the forbidden message had every chance to arrive.
        spy, spy_up = _client(tls_broker, pki, "plant-a")
        spy.connect("127.0.0.1", tls_broker.port)
        spy.loop_start()
        assert spy_up.wait(10)
        spy.publish("edgeplane/plant-b/up/state", b'{"forged": true}', qos=1).wait_for_publish(10)
        spy.publish("edgeplane/plant-a/up/state", b'{"marker": true}', qos=1).wait_for_publish(10)
        await wait_until(lambda: any(r["site"] == "plant-a" and r["refused"] == {} for r in cloud.store.status())
                         and cloud.store.db.execute("SELECT reported FROM sites WHERE site='plant-a'").fetchone()[0]
                         == '{"marker": true}', what="the marker")
        assert "plant-b" not in [r["site"] for r in cloud.store.status()]
        spy.disconnect()
        spy.loop_stop()

        # plant-b subscribes to plant-a's downlink and its own; only its own arrives
        got: list[str] = []
        b_client, b_up = _client(tls_broker, pki, "plant-b", got)
        b_client.connect("127.0.0.1", tls_broker.port)
        b_client.loop_start()
        assert b_up.wait(10)
        subscribed = threading.Event()
        b_client.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
        b_client.subscribe([("edgeplane/plant-a/down/#", 1), ("edgeplane/plant-b/down/#", 1)])
        await wait_until(subscribed.is_set, what="the SUBACK")
        cloud.client.publish("edgeplane/plant-a/down/command", b"for a", qos=1).wait_for_publish(10)
        cloud.client.publish("edgeplane/plant-b/down/command", b"for b", qos=1).wait_for_publish(10)
        await wait_until(lambda: "edgeplane/plant-b/down/command" in got, what="plant-b's own downlink")
        assert got == ["edgeplane/plant-b/down/command"]
        b_client.disconnect()
        b_client.loop_stop()
    finally:
        await site.stop()
        cloud.stop()


def test_a_certificate_from_another_ca_is_refused(tls_broker: Mosquitto, pki):
    client, up = _client(tls_broker, pki, "rogue")
    refused = False
    try:
        client.connect("127.0.0.1", tls_broker.port)
        for _ in range(20):  # the broker closes the connection during or right after the handshake
            if client.loop(timeout=0.5) != mqtt.MQTT_ERR_SUCCESS:
                refused = True
                break
    except (ssl.SSLError, OSError):
        refused = True
    assert refused and not up.is_set()


def test_no_certificate_is_refused(tls_broker: Mosquitto, pki):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="anon", protocol=mqtt.MQTTv311)
    client.tls_set(ca_certs=pki["ca"][0], cert_reqs=ssl.CERT_REQUIRED)
    refused = False
    try:
        client.connect("127.0.0.1", tls_broker.port)
        for _ in range(20):
            if client.loop(timeout=0.5) != mqtt.MQTT_ERR_SUCCESS:
                refused = True
                break
    except (ssl.SSLError, OSError):
        refused = True
    assert refused


def _connects(broker: Mosquitto, pki, who: str) -> bool:
    """Whether ``who``'s certificate gets an MQTT session on the TLS broker."""
    client, up = _client(broker, pki, who)
    try:
        client.connect("127.0.0.1", broker.port)
        for _ in range(20):
            if client.loop(timeout=0.5) != mqtt.MQTT_ERR_SUCCESS or up.is_set():
                break
    except (ssl.SSLError, OSError):
        return False
    finally:
        client.disconnect()
    return up.is_set()


def test_a_revoked_site_certificate_is_refused_by_the_broker(tmp_path: Path, pki):
    """SECURITY.md's revocation procedure: 'edgeplane site revoke' writes the CA's CRL, the broker
    reads it (crlfile) and refuses the revoked site; the other sites keep connecting."""
    from click.testing import CliRunner

    from edgeplane.provisioning.site_cli import site_group

    crl = tmp_path / "pki" / "crl.pem"

    def revoke(*certs: str) -> str:
        result = CliRunner().invoke(site_group, ["revoke", *certs, "--ca-cert", pki["ca"][0], "--ca-key", pki["ca"][1],
                                                 "--crl", str(crl)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert "revoked serial" in revoke(pki["cloud"][0])  # a CRL with someone else on it to begin with
    broker = Mosquitto(tmp_path / "broker", tls=broker_files(pki), require_certificate=True,
                       identity_from_certificate=True, crl=crl, persistence=True, extra=["autosave_interval 1"])
    broker.start()
    try:
        assert _connects(broker, pki, "plant-a") and _connects(broker, pki, "plant-b")
        assert "CN=plant-a" in revoke(pki["plant-a"][0])
        assert "2 already revoked" in revoke(pki["plant-a"][0], pki["cloud"][0])  # idempotent
        # Mosquitto 2 reads the CRL again on SIGHUP: no restart, the other sites stay connected
        broker.reload()
        deadline = time.monotonic() + 15
        while _connects(broker, pki, "plant-a"):
            assert time.monotonic() < deadline, "plant-a still connects after the broker reloaded its CRL"
            time.sleep(0.2)
        assert _connects(broker, pki, "plant-b")
    finally:
        broker.stop()


def test_revoking_with_a_ca_that_did_not_issue_the_certificate_is_exit_2(tmp_path: Path, pki):
    from click.testing import CliRunner

    from edgeplane.provisioning.site_cli import site_group

    result = CliRunner().invoke(site_group, ["revoke", pki["rogue"][0], "--ca-cert", pki["ca"][0], "--ca-key",
                                             pki["ca"][1], "--crl", str(tmp_path / "crl.pem")])
    assert result.exit_code == 2 and "was issued by" in result.output
