"""The sync layer inside a whole host: alerts go up, desired config from the cloud reloads the
site, and a restarted host starts from its last good config with the broker down."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeplane.plugins import Plugins
from edgeplane.sync import generate_keypair
from edgeplane_cloud.embedded import CloudServer, push_message
from edgeplane.testing import run_host

from .conftest import Mosquitto, wait_until


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "cloud.key", tmp_path / "cloud.pub"
    generate_keypair(private, public)
    return private, public


def cloud_events(cloud: CloudServer) -> list[tuple[str, str]]:
    return cloud.store.query("plant-9", "SELECT stream, kind FROM events")


def site(url: str, public: Path, store: Path) -> dict:
    return {
        "site": {"id": "plant-9"},
        "devices": {"m1": {"connector": "memory", "points": {"temp": {"type": "float64", "value": 20.0}}}},
        "solutions": {"hot": {"type": "threshold", "points": ["m1/temp"], "high": 50, "clear": 45}},
        "sync": {
            "uplink": {"url": url},
            "policy": [{"topics": "alerts/#", "mode": "events", "priority": "high"},
                       {"topics": "m1/#", "mode": "raw", "priority": "low"}],
            "trust": {"keys": [str(public)]},
            "durability": "process",
        },
        "store": {"path": str(store)},
    }


async def test_alerts_and_readings_reach_the_cloud_and_desired_config_reloads(broker: Mosquitto, tmp_path: Path, keys):
    private, public = keys
    cloud = CloudServer(broker.url, tmp_path / "cloud")
    cloud.start()
    doc = site(broker.url, public, tmp_path / "store")
    try:
        async with run_host(doc) as host:
            assert host.sync is not None
            await wait_until(lambda: host.sync.transport.connected, what="the site connected")
            await host.device("m1").set("temp", 61.0)  # raises the alarm
            await wait_until(lambda: cloud.store.readings("plant-9"), what="readings at the cloud end")
            await wait_until(lambda: ("alerts/hot", "alarm") in cloud_events(cloud), what="the alert at the cloud end")

            # a solution parameter: what a cloud overlay may change (issue 14: never commands, files, devices)
            push_message(broker.url, "plant-9", "config", {"overlay": {"solutions": {"hot": {"high": 55}}}},
                         private, store=cloud.store)
            await wait_until(lambda: "solution:hot" in host.parts and host.solution("hot").config.high == 55,
                             what="the solution retuned by the cloud")
            await wait_until(lambda: not cloud.store.status()[0]["twin_differences"], what="twin in sync")
            assert host.device("m1") is not None  # untouched by the reload

        # the broker is down and the host starts again: it runs the last good config
        broker.stop()
        from edgeplane.cli import load_with_cloud_overlay

        path = tmp_path / "site.yaml"
        import yaml

        path.write_text(yaml.safe_dump(doc))
        loaded, local = load_with_cloud_overlay(path, Plugins.load(entry_points=False))
        assert loaded.solutions["hot"].high == 55 and local["solutions"]["hot"]["high"] == 50
        async with run_host(loaded, local_site=local) as offline:
            assert offline.solution("hot").config.high == 55  # running the cloud's config with no cloud
            assert offline.sync.status()["link"] == "down"
    finally:
        cloud.stop()
