"""The reference deployment: configs/intersection.yaml validates, and the demo runs it whole
(SUMO, controller, fixed-time twin, Mosquitto and the cloud end) and shows the fallback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgeplane.testing import free_port

REPO = Path(__file__).resolve().parents[3]
SITE = REPO / "configs" / "intersection.yaml"


def test_reference_site_validates() -> None:
    done = subprocess.run([sys.executable, "-m", "edgeplane.cli", "validate", str(SITE)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    site = yaml.safe_load(SITE.read_text())
    assert site["devices"]["sumo"]["connector"] == "sumo" and site["solutions"]["signal"]["type"] == "traffic-signal"
    assert {"broker", "cloud"} <= set(site["simulators"]) and site["sync"]["uplink"]["url"].startswith("mqtt://")


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs Debian's mosquitto (scripts/setup.sh installs it)")
def test_demo_runs_the_whole_deployment_and_shows_the_fallback(tmp_path) -> None:
    port = free_port()
    text = SITE.read_text().replace("18833", str(port)).replace("/tmp/edgeplane-intersection-cloud", str(tmp_path / "cloud"))
    text = text.replace("/tmp/edgeplane-intersection-models", str(tmp_path / "models"))
    site = yaml.safe_load(text)
    # a shorter, cheaper run of the same deployment on the single-intersection net
    for name in ("sumo", "fixed"):
        site["devices"][name]["net"] = "single-intersection"
    site["solutions"]["signal"]["net"] = "single-intersection"
    site["solutions"]["signal"]["deadline"] = "2s"  # a loaded CI machine must not fall back by luck
    site["inference"]["preload"] = ["traffic-single-intersection"]
    site["store"] = {"path": str(tmp_path / "store")}
    site["http"] = {"port": None}
    path = tmp_path / "intersection.yaml"
    path.write_text(yaml.safe_dump(site))
    done = subprocess.run(
        # speed 20 (15 s wall), not 0: the cloud end has no readiness probe, and a 300 s run as fast as
        # possible can be over before it has subscribed
        [sys.executable, "-m", "edgeplane.cli", "traffic", "demo", "--site", str(path), "--seconds", "300", "--speed", "20",
         "--kill-model-at", "100", "--restore-at", "200", "--json"],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["unsafe_transitions"] == 0 and summary["commands"] > 10
    assert summary["fallbacks"] == 1 and summary["recoveries"] == 1
    assert summary["fixed_time_delay_s"] > 0 and summary["avg_delay_s"] > 0
    assert any("model fault injected" in line for line in lines)
    assert any("[FALLBACK: model missing" in line for line in lines)
    assert any("fixed-time" in line for line in lines)
    # the cloud end received the site's uplink
    assert any((tmp_path / "cloud").rglob("*")), "edgeplane cloud serve wrote nothing"
