"""The reference deployments switch to a Sparkplug B or ThingsBoard uplink by their site file alone.

Every shipped site validates with either uplink in place of its ``sync.uplink`` line, loading
plugins the way ``edgeplane run`` does. Each then runs in each mode against an independent
Sparkplug host application (pysparkplug) and against the ThingsBoard stand-in, both on a real
Mosquitto: the solar plant (SunSpec inverters over Modbus, three solutions; guarded writes), the
intersection (SUMO on the single-intersection net, through ``edgeplane traffic demo``) and the
factory (the OPC UA line, through the pdm demo runner), the last two briefly, with their
aggregates flushed at stop. Only the uplink line and the ports differ from the shipped files.
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
from edgeplane.testing import free_port
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
        station, broker, http, base = (free_port() for _ in range(4))
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


def _intersection_site(tmp_path: Path, uplink: str) -> Path:
    """configs/intersection.yaml made short (the single-intersection net), its uplink line switched."""
    port = free_port()
    text = (CONFIGS / "intersection.yaml").read_text().replace("18833", str(port))
    text = text.replace("/tmp/edgeplane-intersection-cloud", str(tmp_path / "cloud"))
    text = text.replace("/tmp/edgeplane-intersection-models", str(tmp_path / "models"))
    site = yaml.safe_load(_switch(text, uplink))
    for name in ("sumo", "fixed"):
        site["devices"][name]["net"] = "single-intersection"
    site["solutions"]["signal"]["net"] = "single-intersection"
    site["solutions"]["signal"]["deadline"] = "2s"
    site["inference"]["preload"] = ["traffic-single-intersection"]
    site["store"] = {"path": str(tmp_path / "store")}
    site["http"] = {"port": None}
    path = tmp_path / "intersection.yaml"
    path.write_text(yaml.safe_dump(site))
    return path


async def _traffic_demo(path: Path) -> dict[str, Any]:
    import asyncio
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgeplane.cli", "traffic", "demo", "--site", str(path), "--seconds", "300", "--speed", "0",
        "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 200)
    assert proc.returncode == 0, out.decode()[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_intersection_over_sparkplug(tmp_path, mqtt_broker):
    broker = mqtt_broker()
    peer = await PeerHost.start(broker, "scada")
    try:
        await peer.send(op="state", online=True)
        summary = await _traffic_demo(_intersection_site(tmp_path, _uplinks(broker.url)["sparkplug"]))
        assert summary["unsafe_transitions"] == 0 and summary["commands"] > 10
        await peer.wait(lambda m: m["type"] == "NBIRTH" and m["node"] == "intersection-cologne1", timeout=5)
        # the signal aggregates, flushed at stop, arrive named and typed after their device's birth
        data = await peer.wait(lambda m: m["type"] == "DDATA" and m["device"] == "signal", timeout=5)
        assert all(m["name"].rsplit("/", 1)[-1] in {"mean", "min", "max", "count", "last"} for m in data["metrics"])
        assert any(m["type"] == "DBIRTH" and m["device"] == "signal" for m in peer.seen)
        await peer.wait(lambda m: m["type"] == "NDEATH", timeout=5)
    finally:
        await peer.close()


async def test_intersection_over_thingsboard(tmp_path, mqtt_broker):
    broker = mqtt_broker(users={"gw": "gw-secret", "tb": "tb-secret"})
    server = ThingsBoardStandIn(broker, "tb", "tb-secret")
    try:
        summary = await _traffic_demo(_intersection_site(tmp_path, _uplinks(broker.url)["thingsboard"]))
        assert summary["unsafe_transitions"] == 0 and summary["commands"] > 10
        _, doc = await server.wait(lambda t, d: t == "v1/gateway/telemetry" and "intersection-cologne1.signal" in d, timeout=5)
        keys = {k for entry in doc["intersection-cologne1.signal"] for k in entry["values"]}
        assert keys and all(k.rsplit("/", 1)[-1] in {"mean", "min", "max", "count", "last"} for k in keys)
        await server.wait(lambda t, d: t == "v1/gateway/disconnect", timeout=5)
        assert server.problems == []
    finally:
        server.close()


def _factory_site(tmp_path: Path, uplink: str) -> Path:
    """configs/factory.yaml on free ports with a short commissioning, its uplink line switched."""
    raw = yaml.safe_load(_switch((CONFIGS / "factory.yaml").read_text(), uplink))
    line = free_port()
    raw["simulators"]["line"]["command"] = ["{python}", "-m", "edgeplane_pdm.linesim", "--port", str(line),
                                            "--period", "0.5"]
    raw["simulators"]["line"]["ready"] = f"tcp://127.0.0.1:{line}"
    for name in ("broker", "cloud"):  # the uplink goes to the test's broker: the site's own are not needed
        raw["simulators"].pop(name, None)
    raw["devices"]["line"]["url"] = f"opc.tcp://127.0.0.1:{line}/edgeplane/line/"
    raw["solutions"]["pdm"]["commissioning"] = 4
    raw["inference"]["models"] = str(tmp_path / "models")
    raw["store"] = {"path": str(tmp_path / "store")}
    raw.pop("http", None)
    path = tmp_path / "factory.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def test_factory_over_sparkplug(tmp_path, mqtt_broker):
    from edgeplane_pdm.demo import run_demo

    broker = mqtt_broker()
    peer = await PeerHost.start(broker, "scada")
    try:
        await peer.send(op="state", online=True)
        result = await run_demo(_factory_site(tmp_path, _uplinks(broker.url)["sparkplug"]), duration=10,
                                echo=lambda line: None, every=5)
        assert result["bytes_read"] > 0
        await peer.wait(lambda m: m["type"] == "NBIRTH" and m["node"] == "factory-line-1", timeout=5)
        # the hourly machine aggregates, flushed at stop, go up as pdm metrics after their birth
        data = await peer.wait(lambda m: m["type"] == "DDATA" and m["device"] == "pdm", timeout=5)
        assert {m["name"].rsplit("/", 1)[-1] for m in data["metrics"]} <= {"mean", "min", "max", "last"}
        await peer.wait(lambda m: m["type"] == "NDEATH", timeout=5)
    finally:
        await peer.close()


async def test_factory_over_thingsboard(tmp_path, mqtt_broker):
    from edgeplane_pdm.demo import run_demo

    broker = mqtt_broker(users={"gw": "gw-secret", "tb": "tb-secret"})
    server = ThingsBoardStandIn(broker, "tb", "tb-secret")
    try:
        result = await run_demo(_factory_site(tmp_path, _uplinks(broker.url)["thingsboard"]), duration=10,
                                echo=lambda line: None, every=5)
        assert result["bytes_read"] > 0
        await server.wait(lambda t, d: t == "v1/gateway/connect" and d["device"] == "factory-line-1.line", timeout=5)
        _, doc = await server.wait(lambda t, d: t == "v1/gateway/telemetry" and "factory-line-1.pdm" in d, timeout=5)
        keys = {k for entry in doc["factory-line-1.pdm"] for k in entry["values"]}
        assert keys and all(k.rsplit("/", 1)[-1] in {"mean", "min", "max", "last"} for k in keys)
        await server.wait(lambda t, d: t == "v1/gateway/disconnect", timeout=5)
        assert server.problems == []
    finally:
        server.close()
