"""The ThingsBoard gateway uplink against a stand-in for a self-hosted ThingsBoard.

The stand-in (:mod:`edgeplane_thingsboard.testing`) is Mosquitto with credentials (ThingsBoard's
MQTT basic credentials: a wrong password is refused at CONNECT, as ThingsBoard refuses it) and a
server-side client that checks every message the gateway sends against the documented gateway MQTT API
(https://thingsboard.io/docs/reference/gateway-mqtt-api/) and sends RPCs as the server does.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edgeplane.errors import SiteError
from edgeplane_thingsboard import ThingsBoardConfig
from edgeplane_thingsboard import plugin as thingsboard_plugin
from edgeplane_thingsboard.testing import ThingsBoardStandIn


def _site(broker: Any, **uplink: Any) -> dict[str, Any]:
    return {
        "site": {"id": "plant-7"},
        "devices": {"inv1": {"connector": "memory", "points": {
            "W": {"type": "float64", "unit": "W", "value": 1000.0},
            "temp": {"type": "float32", "unit": "degC", "value": 40.0},
            "WMaxLimPct": {"type": "float32", "unit": "%", "access": "rw", "value": 100.0, "limits": {"min": 0, "max": 100}},
        }}},
        "sync": {"uplink": {"transport": "thingsboard", "url": broker.url, "username": "gw", "password": "gw-secret",
                            **uplink},
                 "durability": "process",
                 "policy": [{"topics": "inv1/temp", "mode": "exception", "deadband": 0.5},
                            {"topics": "inv1/#", "mode": "raw"}]},
    }


async def test_gateway_api_against_a_checking_stand_in(edgeplane_host, mqtt_broker):
    broker = mqtt_broker(users={"gw": "gw-secret", "tb": "tb-secret"})
    server = ThingsBoardStandIn(broker, "tb", "tb-secret")
    try:
        site = _site(broker, attributes={"inv1": {"model": "SE10K", "serial": "7F1234"}})
        async with edgeplane_host(site, plugins=[thingsboard_plugin]) as host:
            await server.wait(lambda t, d: t == "v1/gateway/connect" and d == {"device": "plant-7.inv1", "type": "default"})
            _, attrs = await server.wait(lambda t, d: t == "v1/gateway/attributes")
            assert attrs["plant-7.inv1"]["model"] == "SE10K" and attrs["plant-7.inv1"]["W.unit"] == "W"
            assert attrs["plant-7.inv1"]["WMaxLimPct.max"] == 100 and attrs["plant-7.inv1"]["WMaxLimPct.writable"] is True

            inv = host.device("inv1")
            await inv.set("W", 1500.0)
            await inv.set("temp", 40.2)  # inside the deadband: not sent
            await inv.set("temp", 41.0)
            values: dict[str, list[Any]] = {}
            while values.get("temp", [])[-1:] != [41.0] or values.get("W", [])[-1:] != [1500.0]:
                _, doc = await server.wait(lambda t, d: t == "v1/gateway/telemetry")
                for entry in doc["plant-7.inv1"]:
                    for key, value in entry["values"].items():
                        values.setdefault(key, []).append(value)
            assert values["W"] == [1000.0, 1500.0] and values["temp"] == [40.0, 41.0]

            server.rpc("plant-7.inv1", 1, "write", {"point": "WMaxLimPct", "value": 50})
            _, reply = await server.wait(lambda t, d: t == "v1/gateway/rpc" and d.get("id") == 1)
            assert reply == {"device": "plant-7.inv1", "id": 1, "data": {"success": True, "value": 50}}
            assert inv.writes == [("WMaxLimPct", 50)]

            bad = [("plant-7.inv1", "write", {"point": "WMaxLimPct", "value": 150}, "above the maximum"),
                   ("plant-7.inv1", "write", {"point": "WMaxLimPct", "value": "full"}, "got str"),
                   ("plant-7.inv9", "write", {"point": "WMaxLimPct", "value": 10}, "unknown device"),
                   ("plant-7.inv1", "write", {"point": "Wnope", "value": 10}, "has no point"),
                   ("plant-7.inv1", "reboot", {}, "unknown method"),
                   ("plant-7.inv1", "write", ["WMaxLimPct", 10], "params must be")]
            for n, (device, method, params, reason) in enumerate(bad, start=2):
                server.rpc(device, n, method, params)
                _, reply = await server.wait(lambda t, d, n=n: t == "v1/gateway/rpc" and d.get("id") == n)
                assert reply["device"] == device and reply["data"]["success"] is False
                assert reason in reply["data"]["error"], reply
            assert len(inv.writes) == 1
            audit = await host.store.audit(limit=20)
            assert sum(1 for row in audit if row["status"] == "rejected") == 4  # the ones that reached the guard
            assert host.sync.transport.commands_refused == 6
            # hostile payloads: refused unread, counted, no answer
            refused = host.metrics.value("edgeplane_errors_total", part="thingsboard", kind="rpc_refused")
            server.client.publish("v1/gateway/rpc", b"{not json", qos=1).wait_for_publish(5)
            server.client.publish("v1/gateway/rpc", b" " * 70_000, qos=1).wait_for_publish(5)
            for _ in range(200):
                if host.metrics.value("edgeplane_errors_total", part="thingsboard", kind="rpc_refused") >= refused + 2:
                    break
                await asyncio.sleep(0.02)
            assert host.metrics.value("edgeplane_errors_total", part="thingsboard", kind="rpc_refused") == refused + 2
        await server.wait(lambda t, d: t == "v1/gateway/disconnect" and d == {"device": "plant-7.inv1"})

        # attributes go once: a restart with the same ones publishes none, a change publishes again
        async with edgeplane_host(site, plugins=[thingsboard_plugin]) as host:
            await server.wait(lambda t, d: t == "v1/gateway/connect")
            await host.device("inv1").set("W", 1600.0)
            await server.wait(lambda t, d: t == "v1/gateway/telemetry" and any(
                e["values"].get("W") == 1600.0 for e in d["plant-7.inv1"]))
        assert not any(t == "v1/gateway/attributes" for t, _ in server.seen[-6:])
        site["sync"]["uplink"]["attributes"]["inv1"]["firmware"] = "4.13.2"
        async with edgeplane_host(site, plugins=[thingsboard_plugin]):
            _, attrs = await server.wait(lambda t, d: t == "v1/gateway/attributes")
            assert attrs["plant-7.inv1"]["firmware"] == "4.13.2"
        assert server.problems == []
    finally:
        server.close()


async def test_a_wrong_password_is_refused_at_connect_and_data_waits(edgeplane_host, mqtt_broker):
    broker = mqtt_broker(users={"gw": "gw-secret"})
    site = _site(broker, password="wrong")
    async with edgeplane_host(site, plugins=[thingsboard_plugin]) as host:
        for _ in range(300):
            if host.sync.transport.last_error:
                break
            await asyncio.sleep(0.02)
        assert host.sync.transport.last_error  # the broker turned the gateway away
        assert host.sync.status()["link"] == "down"
        assert host.sync.outbox.backlog()["normal"]["readings"] >= 3  # stored, waiting for a link


def test_uplink_settings_are_validated_by_the_thingsboard_model(edgeplane_site):
    class Broker:
        url = "mqtt://127.0.0.1:1883"

    parsed = edgeplane_site(_site(Broker(), access_token="abc"), plugins=[thingsboard_plugin])
    assert isinstance(parsed.core.sync.uplink, ThingsBoardConfig)
    assert "abc" not in repr(parsed.core.sync.uplink)
    with pytest.raises(SiteError, match="max_payload_bytes"):
        edgeplane_site(_site(Broker(), max_payload_bytes=10), plugins=[thingsboard_plugin])
