"""The protocol simulator fixtures plugin authors get (Modbus/SunSpec, OPC UA, Mosquitto) and
their fault injection: a connector recovers from a server restart, a slow device, a broker outage.

The fixtures ship in the connector distributions (``edgeplane_<protocol>.testing``) and are
opt-in: imported here by name; the broker and ``broker_outage`` are the core kit's (edgeplane.testing).
"""

from __future__ import annotations

import asyncio
import math

from edgeplane.testing import broker_outage, wait_for
from edgeplane_modbus import plugin as modbus_plugin
from edgeplane_modbus.testing import sunspec_inverter  # noqa: F401 - a fixture
from edgeplane_mqtt import plugin as mqtt_plugin
from edgeplane_mqtt.testing import mqtt_publisher  # noqa: F401 - a fixture
from edgeplane_opcua import plugin as opcua_plugin
from edgeplane_opcua.testing import opcua_machine  # noqa: F401 - a fixture


def modbus_errors(host, device: str) -> float:
    """All request errors of a Modbus device, whatever the reason label."""
    return sum(sample.value for family in host.metrics.registry.collect() for sample in family.samples
               if sample.name == "edgeplane_modbus_request_errors_total" and sample.labels.get("device") == device)


async def send_until(publisher, topic: str, payload, predicate, timeout: float = 30.0) -> None:
    """Publish (off the event loop) every 0.2 s until ``predicate()``: the connector may still be reconnecting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await asyncio.to_thread(publisher.send, topic, payload)
        await asyncio.sleep(0.2)
        if predicate():
            return
        assert loop.time() < deadline, f"no reading from {topic} within {timeout} s"


def good(host, topic: str) -> float | None:
    latest = host.bus.latest(topic)
    return latest[0] if latest is not None and isinstance(latest[1], float) and math.isfinite(latest[1]) else None


async def test_modbus_connector_recovers_from_a_restart_and_a_slow_device(edgeplane_host, sunspec_inverter):  # noqa: F811
    inverter = await sunspec_inverter(irradiance=800.0)
    site = {"site": {"id": "t"}, "devices": {"inv1": {"connector": "modbus", "url": inverter.url, "poll": "100ms",
                                                       "timeout": "500ms", "sunspec": {"models": [1, 103]}}}}
    async with edgeplane_host(site, plugins=[modbus_plugin]) as host:
        await wait_for(lambda: good(host, "inv1/103.W") is not None, timeout=20)
        await inverter.restart(down_for=1.0)
        restarted = host.clock.now()
        await wait_for(lambda: (good(host, "inv1/103.W") or 0) > restarted, timeout=30)

        inverter.slow(1.5)  # three times the device's timeout
        before = modbus_errors(host, "inv1")
        await wait_for(lambda: modbus_errors(host, "inv1") > before, timeout=30)  # timeouts, counted
        inverter.slow(0)
        healed = host.clock.now()
        await wait_for(lambda: (good(host, "inv1/103.W") or 0) > healed, timeout=30)


async def test_opcua_connector_resubscribes_after_a_server_restart(edgeplane_host, opcua_machine):  # noqa: F811
    machine = await opcua_machine()
    site = {"site": {"id": "t"}, "devices": {"press": {"connector": "opcua", "url": machine.url, "mode": "subscribe",
                                                        "points": {"temp": {"node": "ns=2;s=Machine.Temperature"}}}}}
    async with edgeplane_host(site, plugins=[opcua_plugin]) as host:
        await wait_for(lambda: good(host, "press/temp") is not None, timeout=20)
        await machine.restart(down_for=1.0)
        restarted = host.clock.now()
        await wait_for(lambda: (good(host, "press/temp") or 0) > restarted + 0.2, timeout=40)
        assert host.metrics.value("edgeplane_opcua_reconnects_total", device="press") >= 1


async def test_mqtt_connector_reconnects_after_a_broker_outage(edgeplane_host, mqtt_broker, mqtt_publisher):  # noqa: F811
    broker = mqtt_broker()
    site = {"site": {"id": "t"}, "devices": {"met": {"connector": "mqtt", "url": broker.url, "reconnect_initial": 0.2,
                                                      "points": {"temp": {"topic": "weather/temp"}}}}}
    async with edgeplane_host(site, plugins=[mqtt_plugin]) as host:
        publisher = mqtt_publisher(broker)
        await send_until(publisher, "weather/temp", {"value": 21.0}, lambda: good(host, "met/temp") is not None)
        publisher.close()
        await broker_outage(broker, 1.0)
        publisher = mqtt_publisher(broker)
        await send_until(publisher, "weather/temp", {"value": 23.5}, lambda: host.bus.latest("met/temp")[1] == 23.5)
