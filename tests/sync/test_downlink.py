"""Signed downlink through Mosquitto and the cloud end: desired config applied, twin, last-good.

The downlink's checks that need no broker (refusals, model hashes, command expiry) run over the
in-memory transport in test_memory_transport.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeplane import Bus, SiteError, SiteProblem, WallClock
from edgeplane.metrics import Metrics
from edgeplane.sync import SyncConfig, SyncService, generate_keypair, with_last_good
from edgeplane_cloud.embedded import CloudServer, push_message

from .conftest import Mosquitto, wait_until

LOCAL_SITE = {"site": {"id": "plant-1"}, "devices": {"m": {"connector": "memory", "points": {"x": {}}}}}


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "cloud.key", tmp_path / "cloud.pub"
    generate_keypair(private, public)
    return private, public


async def start_site(broker: Mosquitto, tmp_path: Path, public: Path, **callbacks) -> tuple[SyncService, Metrics]:
    config = SyncConfig.model_validate({"uplink": {"url": broker.url}, "trust": {"keys": [str(public)]},
                                        "durability": "process"})
    metrics = Metrics()
    service = SyncService(config, site_id="plant-1", bus=Bus(), clock=WallClock(), metrics=metrics,
                          store_dir=tmp_path / "site", base_site=LOCAL_SITE, **callbacks)
    await service.start()
    await wait_until(lambda: service.transport.connected, what="the site connected")
    return service, metrics


async def test_signed_config_is_applied_stored_as_last_good_and_reported(broker: Mosquitto, tmp_path: Path, keys):
    private, public = keys
    applied: list[dict] = []

    async def apply_config(site: dict) -> None:
        if site["devices"]["m"].get("poll") == "bad":
            raise SiteError([SiteProblem("devices.m.poll", "'bad' is not a duration", fix="write e.g. 1s")])
        applied.append(site)

    cloud = CloudServer(broker.url, tmp_path / "cloud")
    cloud.start()
    service, metrics = await start_site(broker, tmp_path, public, apply_config=apply_config)
    try:
        good = push_message(broker.url, "plant-1", "config", {"overlay": {"devices": {"m": {"poll": "2s"}}}}, private,
                            store=cloud.store)
        await wait_until(lambda: applied, what="the config applied")
        assert applied[-1]["devices"]["m"] == {"connector": "memory", "points": {"x": {}}, "poll": "2s"}
        # last-good: a host that starts offline merges the same overlay onto its local file
        assert with_last_good(LOCAL_SITE, tmp_path / "site")["devices"]["m"]["poll"] == "2s"
        await wait_until(lambda: not cloud.store.status()[0]["twin_differences"], what="twin in sync")

        bad = push_message(broker.url, "plant-1", "config", {"overlay": {"devices": {"m": {"poll": "bad"}}}}, private,
                           store=cloud.store)
        await wait_until(lambda: service.downlink.twin["config"].get("desired") == bad["id"], what="bad config handled")
        twin = service.downlink.twin["config"]
        assert twin["status"] == "failed" and "'bad' is not a duration" in twin["error"]
        assert twin["applied"] == good["id"]  # still running the good one
        assert with_last_good(LOCAL_SITE, tmp_path / "site")["devices"]["m"]["poll"] == "2s"
        await wait_until(lambda: any("not a duration" in d for d in cloud.store.status()[0]["twin_differences"]),
                         what="the cloud sees the difference, with the error")
        assert metrics.value("edgeplane_sync_downlink_refused_total", reason="invalid") == 1
    finally:
        await service.stop()
        cloud.stop()
