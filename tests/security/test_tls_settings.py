"""One ``TlsSettings`` for every TLS link (issue 15): each user's context is accepted by a real mutual-TLS peer.

The same CA, client certificate and key, written in each user's section, reach a Mosquitto that
requires a client certificate: the sync uplink, the cloud's MQTT client, the MQTT connector. The
server side (the console's) serves an HTTPS API that the http_json connector polls with
``tls: {ca: ...}``. Old field spellings fail with an error that names the new field.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from aiohttp import web
from edgeplane_mqtt.testing import Mosquitto, TlsFiles, make_certificates
from pydantic import ValidationError

from edgeplane.config import TlsSettings
from edgeplane.testing import run_host, wait_for


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mutual_tls_broker(tmp_path_factory: pytest.TempPathFactory, pki: TlsFiles):
    with Mosquitto(tmp_path_factory.mktemp("broker"), tls=pki, require_certificate=True) as broker:
        yield broker


def _relative(pki: TlsFiles, base: Path) -> dict[str, str]:
    """The PKI's client files as a site file writes them: relative to the site's folder."""
    return {"ca": str(pki.ca.relative_to(base)), "cert": str(pki.client_cert.relative_to(base)),
            "key": str(pki.client_key.relative_to(base))}


async def test_sync_uplink_connects_with_its_inline_tls_fields(mutual_tls_broker, pki):
    from edgeplane.sync import MqttTransport, UplinkConfig

    base = pki.ca.parent
    config = UplinkConfig(url=mutual_tls_broker.url, **_relative(pki, base))
    transport = MqttTransport(config, client_id="tls-uplink", base_dir=base)
    up = asyncio.Event()
    await transport.connect(lambda link: up.set() if link else None)
    try:
        await asyncio.wait_for(up.wait(), 10)
    finally:
        await transport.close()


@pytest.mark.parametrize("with_certificate", [True, False])
def test_cloud_client_shows_its_certificate_or_is_refused(mutual_tls_broker, pki, with_certificate):
    from edgeplane_cloud.broker import mqtt_client

    identity = {"cert": str(pki.client_cert), "key": str(pki.client_key)} if with_certificate else {}
    client, host, port = mqtt_client(mutual_tls_broker.url, f"tls-cloud-{with_certificate}", clean=True,
                                     ca=str(pki.ca), **identity)
    accepted, done = [], threading.Event()
    client.on_connect = lambda c, u, f, rc, p: (accepted.append(not rc.is_failure), done.set())
    client.on_disconnect = lambda *a: done.set()
    try:
        client.connect(host, port)
    except OSError:  # TLS 1.2: the broker refuses the handshake itself
        accepted.append(False)
        done.set()
    client.loop_start()
    try:
        assert done.wait(10)
        # refused: TLS 1.2 fails the handshake, TLS 1.3 closes the link after it (no CONNACK)
        assert any(accepted) is with_certificate
    finally:
        client.loop_stop()
        client.disconnect()


async def test_mqtt_connector_connects_with_its_tls_section(mutual_tls_broker, pki):
    from edgeplane_mqtt import plugin

    tls = {"ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)}
    site = {"site": {"id": "t"}, "devices": {"plant": {
        "connector": "mqtt", "url": mutual_tls_broker.url, "tls": tls, "connect_timeout": 5,
        "subscribe": [{"topic": "m/{point}", "decoder": "number"}]}}}
    async with run_host(site, plugins=[plugin]) as host:
        assert host.health()["device:plant"]["state"] == "ok"  # start() returned after the broker's CONNACK


async def test_http_json_polls_an_https_api_served_with_the_server_context(tmp_path, pki):
    from edgeplane_http_json import plugin

    async def readings(request: web.Request) -> web.Response:
        return web.json_response({"value": 42.5})

    app = web.Application()
    app.router.add_get("/value", readings)
    runner = web.AppRunner(app)
    await runner.setup()
    server_tls = TlsSettings(cert=str(pki.server_cert), key=str(pki.server_key)).server_context()
    https = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await https.start()
    port = runner.addresses[0][1]
    device = {"connector": "http_json", "url": f"https://127.0.0.1:{port}/value", "poll": 3600,
              "points": {"v": {"field": "value"}}}
    try:
        trusted = {"site": {"id": "t"}, "devices": {"api": {**device, "tls": {"ca": str(pki.ca)}}}}
        async with run_host(trusted, plugins=[plugin]) as host:
            await wait_for(lambda: host.bus.latest("api/v") is not None, 10)
            assert host.bus.latest("api/v")[1] == 42.5
        # the same API without the CA: the system's CAs do not know the test CA, the poll fails
        untrusted = {"site": {"id": "t"}, "devices": {"api": device}}
        async with run_host(untrusted, plugins=[plugin]) as host:
            await wait_for(lambda: host.metrics.value("edgeplane_errors_total", part="device:api",
                                                      kind="http_json_connection") > 0, 10)
            assert "certificate verify failed" in host.device("api").health.detail
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("model", "old", "new"), [
    ("edgeplane_mqtt.config:MqttConfig", {"reconnect_min": 0.2}, "'reconnect_initial'"),
    ("edgeplane_http_json.config:HttpJsonConfig", {"verify_tls": False}, "'tls.verify'"),
])
def test_an_old_field_name_gets_an_error_naming_the_new_one(model, old, new):
    import importlib

    module, _, name = model.partition(":")
    cls = getattr(importlib.import_module(module), name)
    base = {"url": "mqtt://broker:1883", "subscribe": [{"topic": "t/{point}"}]} if "Mqtt" in name else {"url": "https://api"}
    with pytest.raises(ValidationError) as error:
        cls.model_validate({**base, **old})
    assert f"'{next(iter(old))}' is now called {new}" in str(error.value)


def test_console_tls_takes_only_the_server_fields():
    from edgeplane.console.config import ConsoleTls

    assert ConsoleTls().cert == "certs/site.pem"
    with pytest.raises(ValidationError, match="'ca' does not apply to the console"):
        ConsoleTls(ca="ca.pem")


def test_cert_without_key_names_both_fields():
    with pytest.raises(ValidationError, match="needs both 'cert' and 'key'"):
        TlsSettings(cert="edge.pem")
