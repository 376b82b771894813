"""configs/factory.yaml: valid, and runnable as a whole (simulators: OPC UA line, Mosquitto, cloud end)."""

from __future__ import annotations

from pathlib import Path

import yaml

from edgeplane_pdm.demo import default_site, run_demo
from edgeplane_pdm.testing import free_port


def test_factory_site_validates(edgeplane_site, plugins):
    site = edgeplane_site(default_site(), plugins=plugins)
    assert site.core.simulators.keys() >= {"line", "broker", "cloud"}
    assert set(site.core.solutions["pdm"]["machines"]) == {"m1", "m2", "m3"}
    rules = {r.topics: r.mode for r in site.core.sync.policy}
    assert rules == {"alerts/#": "events", "pdm/+/+": "aggregate"}  # never raw waveforms


def fast_copy(tmp_path: Path) -> Path:
    """The reference site on free ports, with a short commissioning and a fast degradation."""
    raw = yaml.safe_load(default_site().read_text())
    line, broker = free_port(), free_port()
    raw["simulators"]["line"]["command"] = ["{python}", "-m", "edgeplane_pdm.linesim", "--port", str(line),
                                            "--degrade-after", "8", "--degrade-over", "10", "--period", "0.5"]
    raw["simulators"]["line"]["ready"] = f"tcp://127.0.0.1:{line}"
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"user root\nlistener {broker} 127.0.0.1\nallow_anonymous true\n")
    raw["simulators"]["broker"] = {"command": ["mosquitto", "-c", str(conf)], "ready": f"tcp://127.0.0.1:{broker}"}
    raw["simulators"]["cloud"]["command"] = ["{python}", "-m", "edgeplane.cli", "cloud", "serve", "--broker",
                                             f"mqtt://127.0.0.1:{broker}", "--data", str(tmp_path / "cloud")]
    raw["devices"]["line"]["url"] = f"opc.tcp://127.0.0.1:{line}/edgeplane/line/"
    raw["solutions"]["pdm"]["commissioning"] = 6
    raw["solutions"]["pdm"]["alert"]["persist"] = 2
    raw["inference"]["models"] = str(tmp_path / "models")
    raw["sync"]["uplink"]["url"] = f"mqtt://127.0.0.1:{broker}"
    raw.pop("http", None)
    path = tmp_path / "factory.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def test_factory_site_runs_end_to_end_with_its_simulators(tmp_path):
    lines: list[str] = []
    result = await run_demo(fast_copy(tmp_path), duration=240, echo=lines.append, every=5, until_alert=True)
    shown = "\n".join(lines)  # what the demo printed, for the failure message
    assert result["alerts"], shown
    first = result["alerts"][0]
    assert first["machine"] == "m3" and first["kind"] == "alert", shown
    assert result["health"]["m1"] > result["health"]["m3"], shown
    assert any(line.startswith("[ALERT") and "BPFO" in line for line in lines), shown
    assert any("machine  health" in line for line in lines), shown
    assert result["bytes_read"] > 0 and result["bytes_sent"] > 0, (result, shown)
    assert result["sent_over_read"] <= 0.02, (result, shown)
