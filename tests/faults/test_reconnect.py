"""Item 12: a device that comes back after a 20 s outage is read again within 10 s.

One backoff policy (:class:`edgeplane.reconnect.ReconnectPolicy`) for every connector: it starts
fast and is capped low, so the first attempt after a device returns is never far off. The
real test takes a Modbus server and a Mosquitto broker away for 20 s together, and measures how
long after each came back its readings flowed again.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from edgeplane.reconnect import ReconnectPolicy
from edgeplane.testing import run_host

OUTAGE_S = 20.0
RECOVERY_S = 10.0  # the goal the issue sets


def first_attempt_after(policy: ReconnectPolicy, back_at: float) -> float:
    """When the policy's retries (from t=0, the loss) first try after ``back_at``."""
    backoff = policy.backoff()
    t = 0.0
    while t < back_at:
        t += backoff.next_delay()
    return t


@pytest.mark.parametrize("outage", [5.0, 20.0, 60.0, 600.0])
def test_the_policy_tries_again_soon_after_any_outage(outage: float):
    policy = ReconnectPolicy()
    assert first_attempt_after(policy, outage) - outage <= policy.maximum < RECOVERY_S


def test_every_connector_defaults_to_the_core_policy():
    from edgeplane_modbus.config import ModbusConfig
    from edgeplane_mqtt.config import MqttConfig
    from edgeplane_opcua.config import OpcUaConfig

    default = ReconnectPolicy()
    for cls in (ModbusConfig, MqttConfig, OpcUaConfig):
        fields = cls.model_fields
        assert fields["reconnect_max"].default == default.maximum, cls.__name__
        assert fields["reconnect_initial"].default == default.initial, cls.__name__


async def test_modbus_and_mqtt_devices_recover_within_10_s_of_a_20_s_outage(mqtt_broker, mqtt_publisher):
    from edgeplane_modbus import plugin as modbus_plugin
    from edgeplane_modbus.testing import PymodbusServer
    from edgeplane_mqtt import plugin as mqtt_plugin

    modbus = PymodbusServer()
    modbus_port = await modbus.start()
    modbus.store.holding[9] = 7
    broker = mqtt_broker()
    publishers = [mqtt_publisher(broker)]
    site = {
        "site": {"id": "outage"},
        "devices": {
            "mb": {"connector": "modbus", "url": f"tcp://127.0.0.1:{modbus_port}", "poll": "200ms", "timeout": "300ms",
                   "points": {"r": {"address": 10, "type": "uint16"}}},
            "mq": {"connector": "mqtt", "url": broker.url, "subscribe": [{"topic": "line/{point}"}],
                   "decoder": "text"},
        },
    }
    async with run_host(site, plugins=[modbus_plugin, mqtt_plugin]) as host:
        sub = host.bus.subscribe("#", name="test", maxsize=100_000)
        mq = host.device("mq")

        async def flowing(topic: str, since: float, nudge=None) -> float:
            """Seconds from ``since`` until a reading on ``topic`` arrives."""
            while True:
                if nudge is not None:
                    nudge()
                message = sub.get_nowait()
                while message is not None:
                    if message.topic == topic and len(message.ts):
                        return time.monotonic() - since
                    message = sub.get_nowait()
                await asyncio.sleep(0.1)

        def send() -> None:
            publishers[-1].client.publish("line/speed", "12.5", qos=0)

        await asyncio.wait_for(flowing("mb/r", time.monotonic()), 10)
        await asyncio.wait_for(flowing("mq/speed", time.monotonic(), send), 10)
        connects = mq.connects
        await modbus.stop()
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(OUTAGE_S)
        await modbus.start(modbus_port)
        await asyncio.to_thread(broker.start)
        back = time.monotonic()
        # the test's own publisher connects anew at once: only the device under test backs off
        publishers.append(await asyncio.to_thread(mqtt_publisher, broker))
        while sub.get_nowait() is not None:
            pass  # what was queued before the device came back does not count
        modbus_after, mqtt_after = await asyncio.wait_for(asyncio.gather(
            flowing("mb/r", back), flowing("mq/speed", back, send)), 60)
        assert mq.connects > connects
        # before: 11-12 s with the 30 s backoff cap
        assert modbus_after < RECOVERY_S, f"Modbus readings resumed {modbus_after:.1f} s after the device came back"
        assert mqtt_after < RECOVERY_S, f"MQTT readings resumed {mqtt_after:.1f} s after the broker came back"
    await modbus.stop()
