"""Sparkplug B through a whole host: births, aliases, sequence gaps and rebirth, deaths, DCMD."""

from __future__ import annotations

import asyncio
import math

from edgeplane import Quality
from edgeplane.testing import wait_for, wait_for_batch
from edgeplane_mqtt import plugin
from edgeplane_mqtt.sparkplug import NAMESPACE, DataType, Payload
from edgeplane_mqtt.testing import SparkplugEdgeNode


def sparkplug_site(broker, **sparkplug):
    return {
        "site": {"id": "t"},
        "devices": {"plant": {
            "connector": "mqtt", "url": broker.url, "sparkplug": {"group": "g1", **sparkplug},
            "points": {"n1/pump/speed": {"access": "rw", "limits": {"min": 0, "max": 3000}}},
        }},
    }


async def latest(host, topic, value, timeout=10.0):
    await wait_for(lambda: (host.bus.latest(topic) or (0, None))[1] == value, timeout)


async def test_births_data_by_alias_and_deaths_reflected_in_health(edgeplane_host, broker):
    node = SparkplugEdgeNode(broker.host, broker.port, "g1", "n1", node_metrics={"uptime": 5},
                             devices={"pump": {"speed": 1200.0, "running": True, "mode": "auto"}})
    async with edgeplane_host(sparkplug_site(broker), plugins=[plugin]) as host:
        device = host.device("plant")
        await asyncio.to_thread(node.connect)
        await latest(host, "plant/n1/pump/speed", 1200.0)
        assert host.bus.latest("plant/n1/pump/running")[1] == 1.0
        assert host.bus.latest("plant/n1/pump/mode")[1] == "auto"
        assert host.bus.latest("plant/n1/uptime")[1] == 5.0
        assert host.health()["device:plant"]["state"] == "ok"

        node.data("pump", {"speed": 1500.0})  # by alias only, no datatype
        node.data("", {"uptime": 6})
        await latest(host, "plant/n1/pump/speed", 1500.0)
        await latest(host, "plant/n1/uptime", 6.0)

        sub = host.bus.subscribe("plant/n1/pump/#")
        node.device_death("pump")
        await wait_for(lambda: "g1/n1/pump" in host.health()["device:plant"]["detail"], 10)
        assert host.health()["device:plant"]["state"] == "degraded"
        batch = await wait_for_batch(sub, 10)
        assert batch.quality[-1] == Quality.BAD and math.isnan(batch.values[-1])

        node.birth()  # node and devices born again
        await wait_for(lambda: host.health()["device:plant"]["state"] == "ok", 10)
        node.death()
        await wait_for(lambda: "g1/n1 " in host.health()["device:plant"]["detail"] + " ", 10)
        _, value, quality = host.bus.latest("plant/n1/uptime")
        assert quality == Quality.BAD and math.isnan(value)
        assert sum(device.drops.values()) == 0
    node.close()


async def test_sequence_gap_and_unknown_alias_ask_for_rebirth(edgeplane_host, broker):
    node = SparkplugEdgeNode(broker.host, broker.port, "g1", "n1", devices={"pump": {"speed": 1.0}})
    async with edgeplane_host(sparkplug_site(broker, rebirth_interval=0), plugins=[plugin]) as host:
        device = host.device("plant")
        await asyncio.to_thread(node.connect)
        await latest(host, "plant/n1/pump/speed", 1.0)
        node.data("pump", {"speed": 2.0}, skip_seq=3)  # three messages "lost"
        await wait_for(lambda: node.rebirths == 1, 10)
        assert device.problems["sequence_gap"] == 1
        await latest(host, "plant/n1/pump/speed", 2.0)  # the data itself was good and kept

        node.data("pump", {"speed": 3.0}, alias=999)
        await wait_for(lambda: node.rebirths == 2, 10)
        assert device.drops["unknown_alias"] == 1
        assert host.metrics.value("edgeplane_mqtt_sparkplug_rebirths_total", device="plant") == 2
        node.data("pump", {"speed": 4.0})
        await latest(host, "plant/n1/pump/speed", 4.0)
    node.close()


async def test_data_before_birth_is_dropped_and_a_rebirth_requested(edgeplane_host, broker, publisher):
    async with edgeplane_host(sparkplug_site(broker), plugins=[plugin]) as host:
        device = host.device("plant")
        payload = Payload(seq=7)
        payload.metrics.add(alias=3, double_value=1.0)
        node = SparkplugEdgeNode(broker.host, broker.port, "g1", "n9", devices={"d": {"x": 1.0}})
        await asyncio.to_thread(node.connect, False)  # connected, listening for NCMD, not born
        await asyncio.sleep(0.2)
        publisher.send(f"{NAMESPACE}/g1/DDATA/n9/d", payload.SerializeToString(), qos=0)
        await wait_for(lambda: node.rebirths == 1, 10)  # the node answered with its births
        assert device.drops["unknown_node"] == 1
        await latest(host, "plant/n9/d/x", 1.0)
        node.close()


async def test_unparsable_payloads_are_dropped_and_counted(edgeplane_host, broker, publisher):
    node = SparkplugEdgeNode(broker.host, broker.port, "g1", "n1", devices={"pump": {"speed": 1.0}})
    async with edgeplane_host(sparkplug_site(broker), plugins=[plugin]) as host:
        device = host.device("plant")
        await asyncio.to_thread(node.connect)
        await latest(host, "plant/n1/pump/speed", 1.0)
        publisher.send(f"{NAMESPACE}/g1/DDATA/n1/pump", b"\xff\xff\xff\xff not protobuf")
        publisher.send(f"{NAMESPACE}/g1/NDATA/n1/extra/level", b"")  # six levels: not a Sparkplug topic
        await wait_for(lambda: device.drops["not_sparkplug"] == 1 and device.drops["not_sparkplug_topic"] == 1, 10)
        node.data("pump", {"speed": 9.0})
        await latest(host, "plant/n1/pump/speed", 9.0)
    node.close()


async def test_write_publishes_dcmd_with_the_birth_datatype(edgeplane_host, broker):
    node = SparkplugEdgeNode(broker.host, broker.port, "g1", "n1", devices={"pump": {"speed": 1200.0}})
    async with edgeplane_host(sparkplug_site(broker), plugins=[plugin]) as host:
        await asyncio.to_thread(node.connect)
        await latest(host, "plant/n1/pump/speed", 1200.0)
        result = await host.commands.execute("plant", "n1/pump/speed", 1800.0, source="test")
        assert result.ok, result.message
        await wait_for(lambda: any("/DCMD/" in t for t, _ in node.commands), 10)
        topic, payload = next((t, p) for t, p in node.commands if "/DCMD/" in t)
        assert topic == f"{NAMESPACE}/g1/DCMD/n1/pump"
        metric = payload.metrics[0]
        assert (metric.name, metric.datatype, metric.double_value) == ("speed", DataType.Double, 1800.0)
        over = await host.commands.execute("plant", "n1/pump/speed", 5000.0, source="test")
        assert over.status.value == "rejected"
        node.device_death("pump")
        await wait_for(lambda: host.health()["device:plant"]["state"] == "degraded", 10)
        dead = await host.commands.execute("plant", "n1/pump/speed", 1000.0, source="test")
        assert dead.status.value == "failed" and "not alive" in dead.message
    node.close()
