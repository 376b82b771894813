"""Signed downlink through Mosquitto: desired config, models, commands; refusals; twin; last-good."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgeplane import Bus, SiteError, SiteProblem, WallClock
from edgeplane.metrics import Metrics
from edgeplane.sync import SyncConfig, SyncService, generate_keypair, sign, with_last_good
from edgeplane_cloud.embedded import CloudServer, push_message

from .conftest import Broker, wait_until

LOCAL_SITE = {"site": {"id": "plant-1"}, "devices": {"m": {"connector": "memory", "points": {"x": {}}}}}


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "cloud.key", tmp_path / "cloud.pub"
    generate_keypair(private, public)
    return private, public


async def start_site(broker: Broker, tmp_path: Path, public: Path, **callbacks) -> tuple[SyncService, Metrics]:
    config = SyncConfig.model_validate({"uplink": {"url": broker.url}, "trust": {"keys": [str(public)]},
                                        "durability": "process"})
    metrics = Metrics()
    service = SyncService(config, site_id="plant-1", bus=Bus(), clock=WallClock(), metrics=metrics,
                          store_dir=tmp_path / "site", base_site=LOCAL_SITE, **callbacks)
    await service.start()
    await wait_until(lambda: service.transport.connected, what="the site connected")
    return service, metrics


async def test_signed_config_is_applied_stored_as_last_good_and_reported(broker: Broker, tmp_path: Path, keys):
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


async def test_unsigned_forged_expired_and_wrong_site_messages_are_refused(broker: Broker, tmp_path: Path, keys):
    private, public = keys
    applied: list[dict] = []

    async def apply_config(site: dict) -> None:
        applied.append(site)

    service, metrics = await start_site(broker, tmp_path, public, apply_config=apply_config)
    import paho.mqtt.publish as publish

    host, port = "127.0.0.1", broker.port
    overlay = {"overlay": {"devices": {"m": {"poll": "9s"}}}}
    rogue = Ed25519PrivateKey.generate()
    from edgeplane.sync.signing import load_private_key

    trusted = load_private_key(private)
    forged = json.loads(sign(trusted, site="plant-1", kind="config", body=overlay, revision=1))
    forged["payload"] = base64.b64encode(base64.b64decode(forged["payload"]).replace(b"9s", b"1s")).decode()
    messages = {
        "unsigned": json.dumps({"kind": "config", "body": overlay}).encode(),
        "unknown_key": sign(rogue, site="plant-1", kind="config", body=overlay, revision=2),
        "forged": json.dumps(forged).encode(),
        "expired": sign(trusted, site="plant-1", kind="config", body=overlay, revision=3, ttl=10, issued=1_000_000.0),
        "wrong_site": sign(trusted, site="plant-2", kind="config", body=overlay, revision=4),
    }
    try:
        for payload in messages.values():
            publish.single("edgeplane/plant-1/down/config", payload, qos=1, hostname=host, port=port)
        await wait_until(lambda: sum(service.downlink.twin["refused"].values()) == 5, what="five refusals")
        assert applied == []
        for reason in messages:
            assert service.downlink.twin["refused"][reason] == 1
            assert metrics.value("edgeplane_sync_downlink_refused_total", reason=reason) == 1
    finally:
        await service.stop()


async def test_model_version_is_verified_and_handed_to_the_inference_service(broker: Broker, tmp_path: Path, keys):
    private, public = keys
    models: list[dict] = []

    async def apply_model(**kw) -> None:
        models.append(kw)

    service, _ = await start_site(broker, tmp_path, public, apply_model=apply_model)
    try:
        data = b"onnx-bytes" * 100
        body = {"name": "rul", "version": "3", "sha256": hashlib.sha256(data).hexdigest(),
                "data": base64.b64encode(data).decode()}
        push_message(broker.url, "plant-1", "model", body, private)
        await wait_until(lambda: models, what="the model handed over")
        assert models[0]["path"].read_bytes() == data and models[0]["version"] == "3"
        tampered = dict(body, version="4", data=base64.b64encode(data + b"x").decode())
        push_message(broker.url, "plant-1", "model", tampered, private)
        await wait_until(lambda: service.downlink.twin["models"]["rul"]["desired"] == "4", what="bad model handled")
        state = service.downlink.twin["models"]["rul"]
        assert state["status"] == "failed" and "sha256" in state["error"] and state["applied"] == "3"
        assert len(models) == 1
    finally:
        await service.stop()


async def test_commands_run_once_and_need_an_expiry(broker: Broker, tmp_path: Path, keys):
    private, public = keys
    calls: list[tuple] = []

    async def execute_command(device: str, point: str, value) -> str:
        calls.append((device, point, value))
        return "ok"

    service, _ = await start_site(broker, tmp_path, public, execute_command=execute_command)
    try:
        push_message(broker.url, "plant-1", "command", {"device": "inv1", "point": "WMaxLimPct", "value": 50}, private, ttl=60)
        push_message(broker.url, "plant-1", "command", {"device": "inv1", "point": "WMaxLimPct", "value": 70}, private)
        await wait_until(lambda: len(service.downlink.twin["commands"]) == 2, what="two commands handled")
        assert calls == [("inv1", "WMaxLimPct", 50)]
        assert service.downlink.twin["commands"][1]["status"] == "refused"
    finally:
        await service.stop()
