"""``edgeplane site doctor DIR``: preflight checks, one PASS/FAIL line each.

* site file valid (against the plugins it names);
* each device with a network address reachable (a TCP connect; a serial port present);
* the uplink broker reachable with the site's certificate (a real MQTT CONNECT, TLS if mqtts);
* clock skew against an NTP server (SNTP, UDP 123), because TLS and signed-message expiry need
  a correct clock;
* disk for the outbox: the store folder writable, free space at least the sync quota;
* certificate expiry: the uplink certificate and CA, and ``certs/site.pem``.

Nothing here changes the site; checks run concurrently with a timeout each.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

__all__ = ["DoctorCheck", "run_doctor", "sntp_offset"]

_DEFAULT_PORTS = {"tcp": 502, "modbus": 502, "rtu+tcp": 502, "opc.tcp": 4840, "mqtt": 1883, "mqtts": 8883,
                  "http": 80, "https": 443, "ssl": 8883}
_NTP_EPOCH = 2208988800  # seconds from 1900-01-01 to 1970-01-01


@dataclass
class DoctorCheck:
    name: str
    passed: bool | None  # None: does not apply to this site
    detail: str = ""

    def line(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]
        return f"{mark}  {self.name}" + (f": {self.detail}" if self.detail else "")


def _device_address(entry: dict[str, Any]) -> tuple[str, str, int] | str | None:
    """(scheme, host, port) of a device's network link, a serial path, or None if it has none."""
    for key in ("url", "endpoint", "broker", "host"):
        value = entry.get(key)
        if not isinstance(value, str) or "${" in value:
            continue
        if value.startswith("/dev/"):
            return value
        parts = urlsplit(value if "://" in value else f"tcp://{value}")
        if parts.scheme in ("rtu", "serial"):
            return parts.path or None
        if parts.hostname:
            return parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    return None


async def _tcp_reachable(host: str, port: int, timeout: float) -> str | None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError) as e:
        return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return None


async def _check_devices(site: dict[str, Any], timeout: float) -> list[DoctorCheck]:
    checks: list[DoctorCheck] = []
    jobs = {}
    for name, entry in (site.get("devices") or {}).items():
        if not isinstance(entry, dict) or entry.get("enabled") is False:
            continue
        address = _device_address(entry)
        if address is None:
            checks.append(DoctorCheck(f"device {name} reachable", None, f"connector {entry.get('connector')} has no network link"))
        elif isinstance(address, str):
            present = Path(address).exists()
            checks.append(DoctorCheck(f"device {name} reachable", present,
                                      f"serial port {address} {'present' if present else 'missing: check the cable and udev name'}"))
        else:
            scheme, host, port = address
            jobs[name] = (f"{scheme}://{host}:{port}", asyncio.ensure_future(_tcp_reachable(host, port, timeout)))
    for name, (where, job) in jobs.items():
        error = await job
        checks.append(DoctorCheck(f"device {name} reachable", error is None,
                                  f"{where} accepts connections" if error is None else
                                  f"{where}: {error}: check the address, the device's power and the firewall"))
    return checks


def _mqtt_connect(uplink: dict[str, Any], base: Path, site_id: str, timeout: float) -> str | None:
    """None if the broker accepted an MQTT connection with the site's credentials, else why not."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edgeplane.config.tls import TlsSettings

    parts = urlsplit(uplink["url"])
    tls = parts.scheme in ("mqtts", "ssl")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edgeplane-doctor-{site_id}-{os.getpid()}",
                         clean_session=True, protocol=mqtt.MQTTv311)
    result: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        result["code"] = reason_code
        done.set()

    def on_disconnect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        # with TLS 1.3 a broker refuses a client certificate after the handshake: the link just closes
        result.setdefault("closed", reason_code)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    if tls:
        def path(key: str) -> str | None:
            value = uplink.get(key)
            return str((base / value).expanduser()) if value else None
        for key in ("ca", "cert", "key"):
            file = path(key)
            if file is not None and not Path(file).is_file():
                return f"sync.uplink.{key} file {file} does not exist: run 'edgeplane site certs' or fix the path"
        try:
            client.tls_set_context(TlsSettings(ca=path("ca"), cert=path("cert"), key=path("key")).client_context())
        except (OSError, ssl.SSLError, ValueError) as e:
            return f"cannot load the TLS files: {e}"
    if uplink.get("username"):
        client.username_pw_set(uplink["username"], uplink.get("password"))
    try:
        client.connect(parts.hostname, parts.port or (8883 if tls else 1883), keepalive=10)
    except (OSError, ssl.SSLError) as e:
        return f"{type(e).__name__}: {e}"
    client.loop_start()
    try:
        if not done.wait(timeout):
            return f"no answer to CONNECT within {timeout:.0f} s (TLS refused or not an MQTT broker)"
        if "code" not in result:
            return (f"the broker closed the connection before accepting it ({result.get('closed')}): "
                    "is the site certificate signed by a CA the broker trusts, and its CN allowed?")
        code = result["code"]
        return None if not code.is_failure else f"the broker refused the connection: {code}"
    finally:
        client.disconnect()
        client.loop_stop()


def sntp_offset(server: str, timeout: float = 3.0) -> float:
    """Seconds the local clock is behind (+) or ahead (-) of an NTP server (one SNTP v4 query)."""
    host, _, port = server.partition(":")
    packet = b"\x23" + 47 * b"\0"  # LI 0, version 4, mode 3 (client)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sent = time.time()
        sock.sendto(packet, (host, int(port or 123)))
        data, _ = sock.recvfrom(512)
        received = time.time()
    if len(data) < 48:
        raise ValueError(f"{server}: short NTP answer ({len(data)} bytes)")
    rx_secs, rx_frac, tx_secs, tx_frac = struct.unpack("!IIII", data[32:48])
    server_rx = rx_secs - _NTP_EPOCH + rx_frac / 2**32
    server_tx = tx_secs - _NTP_EPOCH + tx_frac / 2**32
    offset: float = ((server_rx - sent) + (server_tx - received)) / 2
    return offset


def _cert_check(label: str, path: Path, warn_days: int) -> DoctorCheck:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as e:
        return DoctorCheck(f"certificate {label}", False, f"{path}: cannot read it ({e}): run 'edgeplane site certs'")
    now = dt.datetime.now(dt.UTC)
    not_after, not_before = cert.not_valid_after_utc, cert.not_valid_before_utc
    days = (not_after - now).total_seconds() / 86400
    subject = cert.subject.rfc4514_string()
    if now < not_before:
        return DoctorCheck(f"certificate {label}", False, f"{path} ({subject}) is valid only from {not_before:%Y-%m-%d %H:%M} UTC: "
                                                          "check the clock")
    if days < 0:
        return DoctorCheck(f"certificate {label}", False, f"{path} ({subject}) expired on {not_after:%Y-%m-%d}: renew it")
    if days < warn_days:
        return DoctorCheck(f"certificate {label}", False, f"{path} ({subject}) expires in {days:.0f} days "
                                                          f"({not_after:%Y-%m-%d}), under {warn_days}: renew it now")
    return DoctorCheck(f"certificate {label}", True, f"{subject}, valid {days:.0f} more days (until {not_after:%Y-%m-%d})")


def _disk_check(site_obj: Any, raw: dict[str, Any]) -> DoctorCheck:
    from edgeplane.sync.config import parse_size

    store = site_obj.store_dir() if site_obj is not None else Path(os.environ.get("EDGEPLANE_DATA_DIR", "."))
    quota = parse_size((raw.get("sync") or {}).get("quota", 256_000_000)) if raw.get("sync") else 0
    need = int(quota * 1.2) + 64_000_000  # the quota, SQLite's overhead, and room for the store
    existing = Path(store)
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    writable = os.access(existing, os.W_OK)
    where = f"{store} (on the file system of {existing})"
    if not writable:
        return DoctorCheck("outbox disk", False, f"{where} is not writable by this user: fix ownership or store.path")
    if free < need:
        return DoctorCheck("outbox disk", False, f"{where}: {free / 1e6:.0f} MB free, the outbox may need {need / 1e6:.0f} MB "
                                                  f"(sync.quota {quota / 1e6:.0f} MB): free space or lower the quota")
    return DoctorCheck("outbox disk", True, f"{where}: {free / 1e9:.1f} GB free, outbox quota {quota / 1e6:.0f} MB")


async def run_doctor(folder: Path, *, timeout: float = 5.0, ntp: str | None = "pool.ntp.org",
                     max_skew: float = 2.0, warn_days: int = 30, site_file: str = "site.yaml") -> list[DoctorCheck]:
    """Every preflight check of the site in ``folder``."""
    from edgeplane.config import load_site
    from edgeplane.errors import SiteError
    from edgeplane.plugins import Plugins

    folder = Path(folder)
    path = folder / site_file
    checks: list[DoctorCheck] = []
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        return [DoctorCheck("site file valid", False, f"{path}: {e}")]
    site_obj = None
    try:
        plugins = await asyncio.to_thread(Plugins.load_for_site, raw)
        site_obj = await asyncio.to_thread(load_site, path, plugins.registry)
        checks.append(DoctorCheck("site file valid", True, f"{path}: site {site_obj.id!r}, {len(site_obj.devices)} devices, "
                                                           f"{len(site_obj.solutions)} solutions"))
    except SiteError as e:
        checks.append(DoctorCheck("site file valid", False, str(e).replace("\n", "\n      ")))
    site_id = str((raw.get("site") or {}).get("id", "site"))

    checks += await _check_devices(raw, timeout)

    uplink = ((raw.get("sync") or {}).get("uplink")) if isinstance(raw.get("sync"), dict) else None
    if isinstance(uplink, dict) and uplink.get("url"):
        if site_obj is not None and site_obj.core.sync is not None:
            password = site_obj.core.sync.uplink.password
            uplink = {**uplink, "password": password.get_secret_value() if password else None}
        error = await asyncio.to_thread(_mqtt_connect, uplink, folder, site_id, timeout)
        with_cert = " with the site certificate" if uplink.get("cert") else ""
        checks.append(DoctorCheck("broker reachable", error is None,
                                  f"{uplink['url']} accepted the site{with_cert}" if error is None else f"{uplink['url']}: {error}"))
    else:
        checks.append(DoctorCheck("broker reachable", None, "the site has no sync uplink"))

    if ntp:
        try:
            offset = await asyncio.to_thread(sntp_offset, ntp, timeout)
            ok = abs(offset) <= max_skew
            checks.append(DoctorCheck("clock skew", ok, f"{offset:+.3f} s against {ntp}" +
                                      ("" if ok else f", over {max_skew} s: enable NTP (timedatectl set-ntp true)")))
        except (OSError, ValueError) as e:
            checks.append(DoctorCheck("clock skew", False, f"cannot query NTP server {ntp}: {e}: pass --ntp HOST[:PORT] "
                                                           "of a reachable server"))
    else:
        checks.append(DoctorCheck("clock skew", None, "no NTP server given (--ntp)"))

    checks.append(await asyncio.to_thread(_disk_check, site_obj, raw))

    certs: dict[str, Path] = {}
    if isinstance(uplink, dict):
        for key in ("cert", "ca"):
            if isinstance(uplink.get(key), str):
                certs[f"uplink {key}"] = (folder / uplink[key]).expanduser()
    site_pem = folder / "certs" / "site.pem"
    if site_pem.exists() and site_pem.resolve() not in {p.resolve() for p in certs.values()}:
        certs["certs/site.pem"] = site_pem
    if not certs:
        checks.append(DoctorCheck("certificate expiry", None, "the site uses no certificate"))
    for label, cert_path in certs.items():
        checks.append(_cert_check(label, cert_path, warn_days))
    return checks
