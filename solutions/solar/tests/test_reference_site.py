"""End to end: configs/solar-plant.yaml as shipped (on free ports), through `edgeplane solar demo`'s
runner: the plant simulator subprocess, Mosquitto, `edgeplane cloud serve`, the host with all three
solutions and the inference service. A curtailment and a trip are injected the way the CLI does."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from click.testing import CliRunner

from edgeplane_cloud.embedded import CloudStore

from edgeplane_solar.cli import solar
from edgeplane_solar.demo import default_site, parse_fault, parse_limit, run_demo
from edgeplane.testing import free_port


def _site_on_free_ports(tmp_path: Path) -> Path:
    text = default_site().read_text()
    # the simulator takes consecutive inverter ports from --base-port: find a free run of them
    while True:
        ports = [free_port() for _ in range(6)]
        station, broker, http = ports[0], ports[1], ports[2]
        base = ports[3]
        if all(_port_free(base + i) for i in range(3)):
            break
    text = text.replace('"15021"', f'"{base}"').replace('"15020"', f'"{station}"')
    text = text.replace("tcp://127.0.0.1:15020", f"tcp://127.0.0.1:{station}")
    for i in range(3):
        text = text.replace(f"tcp://127.0.0.1:{15021 + i}", f"tcp://127.0.0.1:{base + i}")
    text = text.replace("18832", str(broker)).replace("port: 8712", f"port: {http}")
    text = text.replace("/tmp/edgeplane-solar-cloud", str(tmp_path / "cloud"))
    text = text.replace("/tmp/edgeplane-solar-models", str(tmp_path / "models"))
    text = text.replace('--speed, "120"', '--speed, "600"')  # 15 plant minutes every 1.5 s
    text += f"\nstore: {{path: {tmp_path / 'store'}}}\n"
    live = "\n".join(line.split("#")[0] for line in text.splitlines())
    assert not re.search(r"1502[0-3]|18832|8712", live), live
    site = tmp_path / "solar-plant.yaml"
    site.write_text(text)
    return site


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_the_shipped_site_file_is_valid():
    from edgeplane.cli import main

    result = CliRunner().invoke(main, ["validate", str(default_site())])
    assert result.exit_code == 0, result.output


async def test_reference_deployment_end_to_end(tmp_path):
    site = _site_on_free_ports(tmp_path)
    lines: list[str] = []
    schedule = [parse_limit("3s:50%"), parse_fault("14s:trip:inv2")]
    state = await run_demo(site, duration=30, every=3, schedule=schedule, echo=lines.append)
    output = "\n".join(lines)
    assert ">>> plant limit 50%: ok" in output, output
    assert ">>> injected trip on inv2" in output, output
    assert "!!! ALERT inv2 offline" in output, output
    assert state["dispatch"]["limit_w"] == 15_000
    assert state["forecast"]["model"] == "solar-forecast", output
    active = [a for a in state["alerts"] if a["active"]]
    assert [(a["device"], a["fault"]) for a in active] == [("inv2", "offline")], active
    # the cloud end got the alert and the forecasts through Mosquitto
    db = CloudStore(tmp_path / "cloud").site_db("solar-plant-1")
    kinds = {row[0] for row in db.execute("SELECT kind FROM events").fetchall()}
    assert {"alarm", "forecast", "allocation"} <= kinds, kinds


def test_demo_rejects_a_bad_schedule():
    result = CliRunner().invoke(solar, ["demo", "--inject", "10s:explode:inv1"])
    assert result.exit_code == 2 and "ACTION one of trip" in result.output
