"""The Sparkplug B uplink against an independent host application (pysparkplug) on real Mosquitto.

The host application (:mod:`edgeplane_sparkplug.testing`) runs in its own virtual environment
(``.venv/peers/sparkplug``, made by scripts/setup.sh: pysparkplug needs paho-mqtt 1.x) and decodes
every message with its own schema.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import paho.mqtt.client as mqtt
import pytest

import edgeplane_sparkplug
from edgeplane_sparkplug import plugin as sparkplug_plugin
from edgeplane_sparkplug.testing import PeerHost, by_name
from edgeplane.errors import SiteError


def _site(broker: Any, **uplink: Any) -> dict[str, Any]:
    return {
        "site": {"id": "plant-7"},
        "devices": {"inv1": {"connector": "memory", "points": {
            "W": {"type": "float64", "unit": "W", "value": 1000.0, "description": "AC power"},
            "temp": {"type": "float32", "unit": "degC", "value": 40.0},
            "WMaxLimPct": {"type": "float32", "unit": "%", "access": "rw", "value": 100.0,
                           "limits": {"min": 0, "max": 100}},
        }}},
        "sync": {"uplink": {"transport": "sparkplug", "url": broker.url, "group_id": "solar", **uplink},
                 "durability": "process",
                 "policy": [{"topics": "inv1/temp", "mode": "exception", "deadband": 0.5},
                            {"topics": "inv1/#", "mode": "raw"}]},
    }


async def test_edge_node_session_against_an_independent_host(edgeplane_host, mqtt_broker):
    broker = mqtt_broker()
    peer = await PeerHost.start(broker, "scada")
    try:
        site = _site(broker, primary_host="scada", attributes={"inv1": {"model": "SE10K", "serial": "7F1234"}})
        async with edgeplane_host(site, plugins=[sparkplug_plugin]) as host:
            inv = host.device("inv1")
            # the primary host is not online: nothing is born, readings wait in the outbox
            await inv.set("W", 1500.0)
            for _ in range(200):
                if host.sync.outbox.backlog()["normal"]["readings"] >= 3:
                    break
                await asyncio.sleep(0.05)
            assert host.sync.outbox.backlog()["normal"]["readings"] >= 3
            assert not any(m["type"] in ("NBIRTH", "DDATA") for m in peer.seen)

            await peer.send(op="state", online=True)
            nbirth = await peer.wait(lambda m: m["type"] == "NBIRTH")
            assert nbirth["node"] == "plant-7" and nbirth["seq"] == 0
            node_metrics = by_name(nbirth)
            assert node_metrics["Node Control/Rebirth"]["datatype"] == "BOOLEAN"
            bdseq = node_metrics["bdSeq"]["value"]
            dbirth = await peer.wait(lambda m: m["type"] == "DBIRTH" and m["device"] == "inv1")
            born = by_name(dbirth)
            assert born["W"]["datatype"] == "DOUBLE" and born["temp"]["datatype"] == "FLOAT"
            assert born["WMaxLimPct"]["datatype"] == "FLOAT"
            assert born["W"]["properties"]["engUnit"] == "W"
            assert born["WMaxLimPct"]["properties"] == {"engUnit": "%", "engLow": 0.0, "engHigh": 100.0, "readOnly": False}
            assert born["Properties/model"]["value"] == "SE10K" and born["Properties/serial"]["value"] == "7F1234"
            assert len({m["alias"] for m in dbirth["metrics"] if m["alias"] is not None}) == 3

            # the backlog arrives after the births, marked historical, names and values decoded by the peer
            values: dict[str, list[Any]] = {}
            while values.get("W", [])[-1:] != [1500.0]:
                ddata = await peer.wait(lambda m: m["type"] == "DDATA" and m["device"] == "inv1")
                for metric in ddata["metrics"]:
                    assert metric["is_historical"]
                    values.setdefault(metric["name"], []).append(metric["value"])
            assert values["W"] == [1000.0, 1500.0] and values["temp"] == [40.0]

            # live data after the link came up is not historical; a change inside the deadband is not sent
            await inv.set("temp", 40.3)
            await inv.set("temp", 42.0)
            live = await peer.wait(lambda m: m["type"] == "DDATA" and "temp" in by_name(m))
            assert by_name(live)["temp"]["value"] == pytest.approx(42.0) and not by_name(live)["temp"]["is_historical"]

            # the primary host goes away: hold back and store; it comes back: a new birth, then the backlog
            await peer.send(op="state", online=False)
            for _ in range(200):
                if host.sync.status()["link"] == "down":
                    break
                await asyncio.sleep(0.02)
            assert host.sync.status()["link"] == "down"
            await inv.set("W", 1700.0)
            for _ in range(200):
                if host.sync.outbox.backlog()["normal"]["readings"] >= 1:
                    break
                await asyncio.sleep(0.02)
            assert host.sync.outbox.backlog()["normal"]["readings"] >= 1
            await peer.send(op="state", online=True)
            await peer.wait(lambda m: m["type"] == "NBIRTH")
            held = await peer.wait(lambda m: m["type"] == "DDATA" and "W" in by_name(m))
            assert by_name(held)["W"]["value"] == 1700.0 and by_name(held)["W"]["is_historical"]

            # rebirth on request
            await peer.send(op="rebirth", group="solar", node="plant-7")
            again = await peer.wait(lambda m: m["type"] == "NBIRTH")
            assert again["seq"] == 0 and by_name(again)["bdSeq"]["value"] == bdseq
            await peer.wait(lambda m: m["type"] == "DBIRTH")

            # static metadata read at run time: only what changed goes up, as Properties/<key> in DDATA
            transport = host.sync.transport
            await transport.set_attributes("inv1", {"model": "SE10K", "firmware": "4.14.0"})
            changed = await peer.wait(lambda m: m["type"] == "DDATA" and "Properties/firmware" in by_name(m))
            assert list(by_name(changed)) == ["Properties/firmware"]
            assert by_name(changed)["Properties/firmware"]["value"] == "4.14.0"
            sent = transport.bytes_sent
            await transport.set_attributes("inv1", {"firmware": "4.14.0"})
            assert transport.bytes_sent == sent

            # a write in limits goes through the guard to the device and comes back as data
            await peer.send(op="dcmd", group="solar", node="plant-7", device="inv1", name="WMaxLimPct",
                            datatype="FLOAT", value=50.0)
            result = await peer.wait(lambda m: m["type"] == "NDATA")
            outcome = json.loads(by_name(result)["Node Control/Command Result"]["value"])
            assert outcome["status"] == "ok" and outcome["point"] == "WMaxLimPct"
            assert inv.writes[-1] == ("WMaxLimPct", 50.0)

            # bad commands: refused by the guard (or before it), answered, audited, counted
            bad = [("inv1", "WMaxLimPct", "FLOAT", 150.0, "above the maximum"),
                   ("inv1", "WMaxLimPct", "STRING", "full", "got str"),
                   ("inv9", "WMaxLimPct", "FLOAT", 10.0, "unknown device"),
                   ("inv1", "Wnope", "FLOAT", 10.0, "has no point")]
            for device, name, datatype, value, reason in bad:
                await peer.send(op="dcmd", group="solar", node="plant-7", device=device, name=name,
                                datatype=datatype, value=value)
                result = await peer.wait(lambda m: m["type"] == "NDATA")
                outcome = json.loads(by_name(result)["Node Control/Command Result"]["value"])
                assert outcome["status"] == "rejected" and reason in outcome["message"], outcome
            assert len(inv.writes) == 1
            # hostile payloads never reach the guard: refused unread and counted
            refused = host.metrics.value("edgeplane_errors_total", part="sparkplug", kind="command_refused")
            intruder = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="intruder")
            intruder.connect(broker.host, broker.port)
            intruder.loop_start()
            intruder.publish("spBv1.0/solar/DCMD/plant-7/inv1", b"\xff\x00 not protobuf", qos=1).wait_for_publish(5)
            intruder.publish("spBv1.0/solar/DCMD/plant-7/inv1", b"\x00" * 70_000, qos=1).wait_for_publish(5)
            intruder.loop_stop()
            intruder.disconnect()
            for _ in range(200):
                if host.metrics.value("edgeplane_errors_total", part="sparkplug", kind="command_refused") >= refused + 2:
                    break
                await asyncio.sleep(0.02)
            assert host.metrics.value("edgeplane_errors_total", part="sparkplug", kind="command_refused") == refused + 2
            audit = await host.store.audit(limit=10)
            assert sum(1 for row in audit if row["status"] == "rejected") == 4
            # sequence numbers of the node count every message, births included
            seqs = [m["seq"] for m in peer.seen if m["type"] in ("NBIRTH", "DBIRTH", "NDATA", "DDATA")]
            last_birth = max(i for i, m in enumerate(peer.seen) if m["type"] == "NBIRTH")
            tail = [m["seq"] for m in peer.seen[last_birth:] if m["type"] in ("NBIRTH", "DBIRTH", "NDATA", "DDATA")]
            assert tail == list(range(len(tail))) and len(seqs) > len(tail)
        death = await peer.wait(lambda m: m["type"] == "NDEATH")
        assert by_name(death)["bdSeq"]["value"] == bdseq
    finally:
        await peer.close()


def test_uplink_settings_are_validated_by_the_sparkplug_model(edgeplane_site, mqtt_broker):
    class Broker:
        url = "mqtt://127.0.0.1:1883"

    site = _site(Broker())
    parsed = edgeplane_site(site, plugins=[sparkplug_plugin])
    assert isinstance(parsed.core.sync.uplink, edgeplane_sparkplug.SparkplugConfig)
    site["sync"]["uplink"]["group_id"] = "a/b"
    with pytest.raises(SiteError, match="group_id"):
        edgeplane_site(site, plugins=[sparkplug_plugin])
    site["sync"]["uplink"]["group_id"] = "solar"
    site["sync"]["uplink"]["transport"] = "sparkplugz"
    with pytest.raises(SiteError, match="no uplink transport 'sparkplugz'"):
        edgeplane_site(site, plugins=[sparkplug_plugin])
    del site["sync"]["uplink"]["transport"]  # the default, MQTT, has no group_id
    with pytest.raises(SiteError, match="group_id"):
        edgeplane_site(site, plugins=[sparkplug_plugin])
    assert sys.modules["edgeplane_sparkplug"] is edgeplane_sparkplug
