"""The reference deployments switch to a Sparkplug B or ThingsBoard uplink by their site file alone.

Every shipped site validates with either uplink in place of its ``sync.uplink`` line, loading
plugins the way ``edgeplane run`` does; the solar plant (SunSpec inverters over Modbus from its
simulator, three solutions) then runs in each mode against an independent Sparkplug host
application (pysparkplug) and against the ThingsBoard stand-in, both on a real Mosquitto.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeplane.config import load_site
from edgeplane.host import Host
from edgeplane.plugins import Plugins
from edgeplane_sparkplug import SparkplugConfig
from edgeplane_sparkplug.testing import PeerHost, by_name
from edgeplane_thingsboard import ThingsBoardConfig
from edgeplane_thingsboard.testing import ThingsBoardStandIn

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
UPLINK_LINE = re.compile(r"^  uplink: \{[^\n]*\}$", re.M)


def _uplinks(url: str) -> dict[str, str]:
    """The one line of a site file that chooses the uplink, per mode."""
    return {
        "sparkplug": f'  uplink: {{transport: sparkplug, url: "{url}", group_id: reference, primary_host: scada}}',
        "thingsboard": f'  uplink: {{transport: thingsboard, url: "{url}", username: gw, password: gw-secret}}',
    }


def _switch(text: str, line: str) -> str:
    assert len(UPLINK_LINE.findall(text)) == 1, "the site file has one 'uplink:' line in its sync section"
    return UPLINK_LINE.sub(line, text)


@pytest.mark.parametrize("mode, model", [("sparkplug", SparkplugConfig), ("thingsboard", ThingsBoardConfig)])
@pytest.mark.parametrize("name", ["solar-plant.yaml", "factory.yaml", "intersection.yaml"])
def test_each_reference_site_validates_with_either_uplink(tmp_path, name, mode, model):
    text = (CONFIGS / name).read_text()
    switched = _switch(text, _uplinks("mqtt://127.0.0.1:1883")[mode])
    path = CONFIGS / f".{name}.{mode}.yaml"  # next to the original: relative profile paths still resolve
    try:
        path.write_text(switched)
        raw = yaml.safe_load(switched)
        plugins = Plugins.load_for_site(raw)  # as `edgeplane run` loads them: the transport's plugin comes too
        site = load_site(path, plugins.registry)
    finally:
        path.unlink(missing_ok=True)
    assert isinstance(site.core.sync.uplink, model)
    original = yaml.safe_load(text)
    assert [r.model_dump(mode="json") for r in site.core.sync.policy] == [
        r.model_dump(mode="json") for r in load_site(CONFIGS / name, Plugins.load_for_site(original).registry).core.sync.policy]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _solar_site(tmp_path: Path, uplink: str) -> Path:
    """configs/solar-plant.yaml on free ports, its uplink line switched; nothing else changes."""
    text = (CONFIGS / "solar-plant.yaml").read_text()
    while True:  # the simulator takes consecutive inverter ports from --base-port
        station, broker, http, base = (_free_port() for _ in range(4))
        if all(_port_free(base + i) for i in range(3)):
            break
    text = text.replace('"15021"', f'"{base}"').replace('"15020"', f'"{station}"')
    text = text.replace("tcp://127.0.0.1:15020", f"tcp://127.0.0.1:{station}")
    for i in range(3):
        text = text.replace(f"tcp://127.0.0.1:{15021 + i}", f"tcp://127.0.0.1:{base + i}")
    text = text.replace("18832", str(broker)).replace("port: 8712", f"port: {http}")
    text = text.replace("/tmp/edgeplane-solar-cloud", str(tmp_path / "cloud"))
    text = text.replace("/tmp/edgeplane-solar-models", str(tmp_path / "models"))
    text = text.replace('--speed, "120"', '--speed, "600"')
    text = _switch(text, uplink) + f"\nstore: {{path: {tmp_path / 'store'}}}\n"
    path = tmp_path / "solar-plant.yaml"
    path.write_text(text)
    return path


async def _start(path: Path) -> Host:
    plugins = Plugins.load_for_site(yaml.safe_load(path.read_text()))
    host = Host(load_site(path, plugins.registry), plugins)
    await host.start()
    return host


async def test_solar_plant_over_sparkplug(tmp_path, mqtt_broker):
    broker = mqtt_broker()
    peer = await PeerHost.start(broker, "scada")
    host = None
    try:
        await peer.send(op="state", online=True)
        host = await _start(_solar_site(tmp_path, _uplinks(broker.url)["sparkplug"]))
        nbirth = await peer.wait(lambda m: m["type"] == "NBIRTH")
        assert nbirth["node"] == "solar-plant-1" and nbirth["seq"] == 0
        plant = by_name(await peer.wait(lambda m: m["type"] == "DBIRTH" and m["device"] == "plant"))
        assert plant["limit_pct"]["datatype"] == "DOUBLE" and plant["limit_pct"]["properties"]["engUnit"] == "%"
        # a solution's output, born when it first appears, then its values by alias
        await peer.wait(lambda m: m["type"] == "DBIRTH" and m["device"] == "forecast", timeout=60)
        data = await peer.wait(lambda m: m["type"] == "DDATA" and m["device"] == "forecast", timeout=60)
        event = json.loads(data["metrics"][0]["value"])
        assert event["kind"] == "forecast" and data["metrics"][0]["datatype"] == "STRING"

        await peer.send(op="dcmd", group="reference", node="solar-plant-1", device="plant", name="limit_pct",
                        datatype="DOUBLE", value=150.0)
        result = await peer.wait(lambda m: m["type"] == "NDATA" and "Node Control/Command Result" in by_name(m))
        outcome = json.loads(by_name(result)["Node Control/Command Result"]["value"])
        assert outcome["status"] == "rejected" and "above the maximum 100" in outcome["message"]
        await peer.send(op="dcmd", group="reference", node="solar-plant-1", device="plant", name="limit_pct",
                        datatype="DOUBLE", value=80.0)
        result = await peer.wait(lambda m: m["type"] == "NDATA" and "Node Control/Command Result" in by_name(m))
        assert json.loads(by_name(result)["Node Control/Command Result"]["value"])["status"] == "ok"
        assert host.sync.status()["link"] == "up"
    finally:
        if host is not None:
            await host.stop()
        await peer.close()
    assert any(m["type"] == "NDEATH" for m in peer.seen) or await peer.wait(lambda m: m["type"] == "NDEATH")


async def test_solar_plant_over_thingsboard(tmp_path, mqtt_broker):
    broker = mqtt_broker(users={"gw": "gw-secret", "tb": "tb-secret"})
    server = ThingsBoardStandIn(broker, "tb", "tb-secret")
    host = None
    try:
        host = await _start(_solar_site(tmp_path, _uplinks(broker.url)["thingsboard"]))
        for device in ("met", "inv1", "inv2", "inv3", "plant"):
            await server.wait(lambda t, d, device=device: t == "v1/gateway/connect"
                              and d["device"] == f"solar-plant-1.{device}")
        _, doc = await server.wait(lambda t, d: t == "v1/gateway/telemetry" and "solar-plant-1.forecast" in d, timeout=60)
        entry = doc["solar-plant-1.forecast"][0]
        assert isinstance(entry["ts"], int) and json.loads(next(iter(entry["values"].values())))["kind"] == "forecast"
        server.rpc("solar-plant-1.plant", 7, "write", {"point": "limit_pct", "value": 150})
        _, reply = await server.wait(lambda t, d: t == "v1/gateway/rpc" and d.get("id") == 7)
        assert reply["data"]["success"] is False and "above the maximum 100" in reply["data"]["error"]
    finally:
        if host is not None:
            await host.stop()
    await server.wait(lambda t, d: t == "v1/gateway/disconnect")
    server.close()
    assert server.problems == []
