"""The MQTT connector against a real Mosquitto broker, through a whole host."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgeplane import HealthState, Quality, SiteError
from edgeplane.testing import wait_for, wait_for_batch
from edgeplane_mqtt import plugin
from edgeplane_mqtt.testing import Mosquitto, Publisher


def mqtt_site(url: str, **device: Any) -> dict[str, Any]:
    entry = {"connector": "mqtt", "url": url, **device}
    return {"site": {"id": "t"}, "devices": {"plant": entry}}


async def next_batch_of(sub, topic: str, timeout: float = 10.0):
    while True:
        batch = await wait_for_batch(sub, timeout)
        if batch.topic == topic:
            return batch


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_wildcard_mapping_with_named_levels(edgeplane_host, broker, publisher, protocol, qos):
    site = mqtt_site(broker.url, protocol=protocol, qos=qos,
                     subscribe=[{"topic": "plant/{machine}/{point}", "json": {"value": "v", "timestamp": "ts"}}])
    async with edgeplane_host(site, plugins=[plugin]) as host:
        assert host.health()["device:plant"]["state"] == "ok"
        sub = host.bus.subscribe("plant/#")
        publisher.send("plant/press3/temp", {"v": 21.5, "ts": 1_700_000_000_250}, qos=qos)
        publisher.send("plant/oven/humidity", {"v": 40, "ts": "2023-11-14T22:13:21Z"}, qos=qos)
        temp = await next_batch_of(sub, "plant/press3/temp")
        assert temp.last() == (1_700_000_000.25, 21.5, Quality.GOOD)
        hum = await next_batch_of(sub, "plant/oven/humidity")
        assert hum.last() == (1_700_000_001.0, 40.0, Quality.GOOD)


async def test_point_template_units_scale_and_point_topics(edgeplane_host, broker, publisher):
    site = mqtt_site(
        broker.url,
        subscribe=[{"topic": "site/{area}/sensors/{sensor}", "point": "{area}.{sensor}", "decoder": "number"}],
        points={
            "hall.t1": {"unit": "degC", "scale": 0.1},
            "boiler": {"topic": "raw/boiler/pressure", "decoder": "json", "field": "data.p", "unit": "bar"},
        },
    )
    async with edgeplane_host(site, plugins=[plugin]) as host:
        sub = host.bus.subscribe("plant/#")
        publisher.send("site/hall/sensors/t1", "215")
        batch = await next_batch_of(sub, "plant/hall.t1")
        assert batch.unit == "degC" and batch.last()[1] == pytest.approx(21.5)
        publisher.send("raw/boiler/pressure", {"data": {"p": 3.25}})
        batch = await next_batch_of(sub, "plant/boiler")
        assert batch.unit == "bar" and batch.last()[1] == 3.25


async def test_json_samples_and_fields_make_columnar_batches(edgeplane_host, broker, publisher):
    site = mqtt_site(broker.url, subscribe=[
        {"topic": "vib/{machine}", "point": "{machine}/accel",
         "json": {"samples": "samples", "timestamp": "t0", "period": "1ms", "timestamp_format": "s"}},
        {"topic": "env/{room}", "point": "{room}",
         "json": {"fields": {"temp": "t", "hum": "h"}, "timestamp": "ts"}},
        {"topic": "log/{machine}", "point": "{machine}/load",
         "json": {"samples": "rows", "value": "load", "timestamp": "at"}},
    ])
    async with edgeplane_host(site, plugins=[plugin]) as host:
        sub = host.bus.subscribe("plant/#")
        publisher.send("vib/m1", {"t0": 1_700_000_000, "samples": [0.1, 0.2, 0.3, 0.4]})
        batch = await next_batch_of(sub, "plant/m1/accel")
        np.testing.assert_allclose(batch.values, [0.1, 0.2, 0.3, 0.4])
        np.testing.assert_allclose(batch.ts - 1_700_000_000, [0, 0.001, 0.002, 0.003], atol=1e-6)
        publisher.send("env/lab", {"t": 20.5, "h": 55, "ts": 1_700_000_100})
        got = {}
        while len(got) < 2:
            b = await wait_for_batch(sub, 10)
            got[b.topic] = b.last()[1]
        assert got == {"plant/lab/temp": 20.5, "plant/lab/hum": 55.0}
        publisher.send("log/m2", {"rows": [{"load": 1, "at": 1_700_000_000_000}, {"load": 2, "at": 1_700_000_001_000}]})
        batch = await next_batch_of(sub, "plant/m2/load")
        assert list(batch.values) == [1.0, 2.0] and list(batch.ts) == [1_700_000_000.0, 1_700_000_001.0]


async def test_bad_input_is_dropped_counted_and_logged_by_topic(edgeplane_host, broker, publisher, caplog):
    site = mqtt_site(broker.url, max_message_bytes=1000, subscribe=[
        {"topic": "j/{point}", "json": {"value": "v", "timestamp": "ts"}},
        {"topic": "n/{point}", "decoder": "number"},
    ])
    async with edgeplane_host(site, plugins=[plugin]) as host:
        sub = host.bus.subscribe("plant/#")
        device = host.device("plant")
        bad = [
            ("j/a", b"{not json"),
            ("j/a", b"\xff\xfe"),
            ("j/a", json.dumps({"v": "hot", "ts": 1})),  # text where a number belongs
            ("j/a", json.dumps({"v": [1, 2], "ts": 1})),
            ("j/a", json.dumps({"x": 1, "ts": 1})),  # missing value
            ("j/a", json.dumps({"v": 1})),  # missing timestamp
            ("j/a", json.dumps({"v": 1, "ts": "yesterday"})),
            ("j/a", json.dumps({"v": 1, "ts": 1, "pad": "x" * 2000})),  # oversize
            ("n/b", b"twelve"),
            ("n/b", b"nan"),
        ]
        for topic, payload in bad:
            publisher.send(topic, payload)
        publisher.send("j/a", {"v": 7, "ts": 1_700_000_000})
        batch = await next_batch_of(sub, "plant/a")
        assert batch.last()[1] == 7.0  # the good message after ten bad ones still arrives
        await wait_for(lambda: sum(device.drops.values()) == len(bad), 10)
        assert device.drops == {"not_json": 2, "wrong_type": 2, "missing_field": 2, "bad_timestamp": 1,
                                "oversize": 1, "not_a_number": 1, "not_finite": 1}
        assert host.metrics.value("edgeplane_dropped_total", part="device:plant", reason="not_json") == 2
        assert host.health()["device:plant"]["state"] == "ok"
        assert any("'j/a'" in r.getMessage() and "not JSON" in r.getMessage() for r in caplog.records)


async def test_broker_restart_mid_stream_resumes_without_host_restart(edgeplane_host, broker):
    site = mqtt_site(broker.url, subscribe=[{"topic": "s/{point}", "decoder": "number"}],
                     reconnect_initial=0.1, reconnect_max=0.5)
    async with edgeplane_host(site, plugins=[plugin]) as host:
        device = host.device("plant")
        sub = host.bus.subscribe("plant/#")
        pub = Publisher(broker)
        pub.send("s/x", "1")
        assert (await next_batch_of(sub, "plant/x")).last()[1] == 1.0
        pub.close()
        await asyncio.to_thread(broker.stop)
        await wait_for(lambda: host.health()["device:plant"]["state"] == "degraded", 10)
        assert "link down" in host.health()["device:plant"]["detail"]
        await asyncio.to_thread(broker.start)
        # the broker came back empty (no persistence): the connector must subscribe again
        await wait_for(lambda: device.connects == 2 and host.health()["device:plant"]["state"] == "ok", 15)
        pub = Publisher(broker)
        pub.send("s/x", "2")
        assert (await next_batch_of(sub, "plant/x")).last()[1] == 2.0
        pub.close()
        assert host.parts["device:plant"].health.restarts == 0


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_persistent_session_receives_what_was_published_while_away(edgeplane_host, broker, publisher, protocol):
    site = mqtt_site(broker.url, protocol=protocol, client_id="edge-persist", clean_start=False, qos=1,
                     subscribe=[{"topic": "q/{point}", "decoder": "number"}])
    async with edgeplane_host(site, plugins=[plugin]) as host:
        sub = host.bus.subscribe("plant/#")
        publisher.send("q/x", "1")
        await next_batch_of(sub, "plant/x")
    for value in range(2, 7):  # the host is down; the broker queues these for the session
        publisher.send("q/x", str(value))
    async with edgeplane_host(site, plugins=[plugin]) as host:
        # queued messages may arrive before a test subscription could exist: read the counters
        device = host.device("plant")
        await wait_for(lambda: device.received == 5, 10)
        assert host.bus.latest("plant/x")[1] == 6.0
        assert host.metrics.value("edgeplane_mqtt_readings_total", device="plant") == 5


async def test_tls_with_password_from_secret_reference(edgeplane_host, tmp_path, certs, monkeypatch):
    monkeypatch.setenv("MQTT_TEST_PASSWORD", "s3cret-pw")
    with Mosquitto(tmp_path, tls=certs, users={"edge": "s3cret-pw"}) as broker:
        site = mqtt_site(broker.url, username="edge", password="${env:MQTT_TEST_PASSWORD}",
                         tls={"ca": str(certs.ca)}, subscribe=[{"topic": "t/{point}", "decoder": "number"}])
        async with edgeplane_host(site, plugins=[plugin]) as host:
            device = host.device("plant")
            assert device.config.password.get_secret_value() == "s3cret-pw"
            assert "s3cret" not in repr(device.config)
            sub = host.bus.subscribe("plant/#")
            pub = Publisher(broker, ca_certs=str(certs.ca))
            pub.client.username_pw_set("edge", "s3cret-pw")
            pub.client.reconnect()
            pub.send("t/x", "4.5")
            assert (await next_batch_of(sub, "plant/x")).last()[1] == 4.5
            pub.close()


async def test_mutual_tls_needs_the_client_certificate(edgeplane_host, tmp_path, certs):
    with Mosquitto(tmp_path, tls=certs, require_certificate=True) as broker:
        base = {"subscribe": [{"topic": "m/{point}", "decoder": "number"}], "connect_timeout": 2, "reconnect_max": 1}
        good = mqtt_site(broker.url, tls={"ca": str(certs.ca), "cert": str(certs.client_cert), "key": str(certs.client_key)}, **base)
        async with edgeplane_host(good, plugins=[plugin]) as host:
            assert host.health()["device:plant"]["state"] == "ok"
            sub = host.bus.subscribe("plant/#")
            pub = Publisher(broker, ca_certs=str(certs.ca), certfile=str(certs.client_cert), keyfile=str(certs.client_key))
            pub.send("m/x", "1.25")
            assert (await next_batch_of(sub, "plant/x")).last()[1] == 1.25
            pub.close()
        without_cert = mqtt_site(broker.url, tls={"ca": str(certs.ca)}, **base)
        async with edgeplane_host(without_cert, plugins=[plugin]) as host:
            health = host.health()["device:plant"]
            assert health["state"] == "failed"
            assert "no MQTT connection" in health["detail"]


async def test_json_command_goes_through_the_guarded_path(edgeplane_host, broker):
    received: list[bytes] = []
    listener = paho.Client(CallbackAPIVersion.VERSION2)
    listener.on_message = lambda c, u, m: received.append(m.payload)
    listener.connect(broker.host, broker.port)
    listener.subscribe("cmd/valve", qos=1)
    listener.loop_start()
    site = mqtt_site(broker.url, subscribe=[{"topic": "s/{point}", "decoder": "number"}],
                     points={"valve": {"access": "rw", "command_topic": "cmd/valve", "limits": {"min": 0, "max": 100}}})
    try:
        async with edgeplane_host(site, plugins=[plugin]) as host:
            await asyncio.sleep(0.2)  # the listener's SUBACK
            result = await host.commands.execute("plant", "valve", 42.0, source="test")
            assert result.ok, result.message
            rejected = await host.commands.execute("plant", "valve", 420.0, source="test")
            assert rejected.status.value == "rejected"
            await wait_for(lambda: len(received) == 1, 10)
            assert json.loads(received[0])["value"] == 42.0
    finally:
        listener.disconnect()
        listener.loop_stop()


async def test_full_hand_over_queue_drops_and_counts(edgeplane_host, broker, publisher):
    site = mqtt_site(broker.url, queue_size=5, subscribe=[{"topic": "b/{point}", "decoder": "number"}])
    async with edgeplane_host(site, plugins=[plugin]) as host:
        device = host.device("plant")
        # a full-speed burst from another thread while the event loop is kept busy
        publisher.client.publish("b/x", "0", qos=1).wait_for_publish(5)
        infos = [publisher.client.publish("b/x", str(i), qos=1) for i in range(2000)]
        for info in infos:
            info.wait_for_publish(10)  # blocks the loop: the connector cannot take from its inbox
        await wait_for(lambda: device.received + device.drops["queue_full"] == 2001, 15)
        assert device.drops["queue_full"] > 0
        assert host.metrics.value("edgeplane_dropped_total", part="device:plant", reason="queue_full") == device.drops["queue_full"]


async def test_site_validation_names_the_problem(edgeplane_site):
    cases = [
        ({"url": "http://x"}, "not an MQTT broker URL"),
        ({"url": "mqtt://h", "subscribe": [{"topic": "a/{x}/{x}"}]}, "appears twice"),
        ({"url": "mqtt://h", "subscribe": [{"topic": "a/b"}]}, "captures no level"),
        ({"url": "mqtt://h", "subscribe": [{"topic": "a/{x}", "point": "{y}"}]}, "does not capture"),
        ({"url": "mqtt://h"}, "subscribes to nothing"),
        ({"url": "mqtt://h", "points": {"p": {"topic": "a/b", "access": "rw"}}}, "command_topic"),
        ({"url": "mqtt://h", "subscribe": [{"topic": "a/{x}", "json": {"value": "a..b"}}]}, "JSON path"),
        ({"url": "mqtt://h", "password": "x", "subscribe": [{"topic": "a/{x}"}]}, "needs a username"),
        ({"url": "mqtt://h", "tls": {"cert": "c.pem"}, "subscribe": [{"topic": "a/{x}"}]}, "both 'cert' and 'key'"),
    ]
    for device, expected in cases:
        with pytest.raises(SiteError) as info:
            edgeplane_site({"site": {"id": "t"}, "devices": {"d": {"connector": "mqtt", **device}}}, plugins=[plugin])
        assert expected in str(info.value), (device, str(info.value))
        assert "devices.d" in str(info.value)


def test_plugin_is_found_by_entry_point():
    from edgeplane import Plugins

    plugins = Plugins.load(entry_points=True)
    assert plugins.registry.connectors["mqtt"].__name__ == "MqttConnector"


async def test_wrong_password_fails_start_with_the_brokers_reason(edgeplane_host, tmp_path):
    with Mosquitto(tmp_path, users={"edge": "right"}) as broker:
        site = mqtt_site(broker.url, username="edge", password="wrong", connect_timeout=2,
                         subscribe=[{"topic": "t/{point}"}])
        async with edgeplane_host(site, plugins=[plugin]) as host:
            health = host.health()["device:plant"]
            assert health["state"] == "failed"
            assert "refused" in health["detail"] and "no MQTT connection" in health["detail"]
            assert "wrong" not in health["detail"]


async def test_a_burst_becomes_multipoint_batches_with_every_reading_in_order(edgeplane_host, broker, publisher):
    site = mqtt_site(broker.url, coalesce="300ms", qos=1,
                     subscribe=[{"topic": "m/{machine}/{point}", "point": "{machine}.{point}", "decoder": "number"}],
                     points={"status": {"topic": "m/status", "decoder": "text"}, "m1.p0": {"unit": "bar"}})
    async with edgeplane_host(site, plugins=[plugin]) as host:
        rows = host.bus.subscribe("plant/#", multipoint=True, maxsize=1000)
        points = host.bus.subscribe("plant/#", maxsize=1000)
        sent: dict[str, list[float]] = {}
        for i in range(5):
            for machine in range(3):
                for p in range(4):
                    value = float(i * 100 + machine * 10 + p)
                    publisher.client.publish(f"m/m{machine}/p{p}", str(value), qos=1)
                    sent.setdefault(f"plant/m{machine}.p{p}", []).append(value)
        publisher.send("m/status", "running")
        await wait_for(lambda: host.bus.latest("plant/status") is not None, 10)
        got: dict[str, list[float]] = {}
        batches = []
        while (batch := rows.get_nowait()) is not None:
            batches.append(batch)
            if batch.multipoint:
                for row, value in enumerate(batch.values.tolist()):
                    got.setdefault(batch.topic_at(row), []).append(value)
        assert got == sent  # every reading, in the order sent per point
        multi = [b for b in batches if b.multipoint]
        assert len(multi) < 60 and max(len(b) for b in multi) > 1  # many messages per batch
        assert multi[0].table.units[multi[0].table.id_of("plant/m1.p0")] == "bar"
        assert [b.values.tolist() for b in batches if not b.multipoint] == [["running"]]
        # single-point subscribers see the same readings, one batch per point
        legacy: dict[str, list] = {}
        while (batch := points.get_nowait()) is not None:
            legacy.setdefault(batch.topic, []).extend(batch.values.tolist())
        assert legacy == {**sent, "plant/status": ["running"]}
        assert host.bus.latest_batch("plant/m1.p0").unit == "bar"
