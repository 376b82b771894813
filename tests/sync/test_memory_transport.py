"""The sync service over edgeplane.testing's in-memory transport: the outbox's plumbing (acknowledge,
refuse, a dropped link, the downlink's signature checks) without a broker. What MQTT itself does
(sessions, outages at the broker, TLS, ACLs) is tested against real Mosquitto beside this file."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgeplane import Batch, Bus, WallClock
from edgeplane.metrics import Metrics
from edgeplane.sync import SyncConfig, SyncService, decode_envelope, generate_keypair, sign
from edgeplane.sync.signing import load_private_key
from edgeplane.testing import MemoryTransport, memory_transport_plugin, wait_for

from .conftest import wait_until

LOCAL_SITE = {"site": {"id": "plant-1"}, "devices": {"m": {"connector": "memory", "points": {"x": {}}}}}
POLICY = [{"topics": "dev/#", "mode": "raw", "priority": "normal"}]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "cloud.key", tmp_path / "cloud.pub"
    generate_keypair(private, public)
    return private, public


def make_service(tmp_path: Path, transport: MemoryTransport, bus: Bus | None = None, metrics: Metrics | None = None,
                 **options) -> SyncService:
    doc = {"uplink": {"url": "mqtt://memory.invalid:1883"}, "policy": POLICY, "durability": "process", **options}
    return SyncService(SyncConfig.model_validate(doc), site_id="plant-1", bus=bus or Bus(), clock=WallClock(),
                       metrics=metrics or Metrics(), store_dir=tmp_path / "site", transport=transport,
                       base_site=LOCAL_SITE)


def delivered(transport: MemoryTransport) -> list[float]:
    """The reading values in every data envelope the in-memory broker acknowledged, in order."""
    from edgeplane.sync.codec import decode_block

    values: list[float] = []
    for message in transport.published:
        if message.topic.endswith("/up/data"):
            for record in decode_envelope(message.payload).records:
                values.extend(decode_block(record.block)["values"].tolist())
    return values


async def publish(bus: Bus, start: int, n: int) -> None:
    for i in range(start, start + n):
        await bus.publish(Batch.of("dev/temp", np.array([float(i)]), np.array([float(i)])))


async def test_readings_reach_the_far_end_once_and_leave_the_outbox(tmp_path: Path):
    transport, bus = MemoryTransport(), Bus()
    service = make_service(tmp_path, transport, bus)
    await service.start()
    try:
        await publish(bus, 0, 20)
        await wait_until(lambda: len(delivered(transport)) == 20, what="20 readings acknowledged")
        assert sorted(delivered(transport)) == [float(i) for i in range(20)]
        await wait_until(lambda: service.outbox.backlog()["normal"]["records"] == 0, what="outbox empty")
        assert "edgeplane/plant-1/up/state" in transport.topics()  # the twin report, retained
        assert all(m.retain for m in transport.published if m.topic.endswith("/up/state"))
    finally:
        await service.stop()


async def test_refused_publishes_keep_their_records_until_the_far_end_acknowledges(tmp_path: Path):
    transport, bus = MemoryTransport(), Bus()
    transport.refuse()
    service = make_service(tmp_path, transport, bus)
    await service.start()
    try:
        await publish(bus, 0, 10)
        await wait_until(lambda: transport.refused > 0, what="a refused publish")
        assert delivered(transport) == []
        assert service.outbox.backlog()["normal"]["readings"] == 10  # nothing lost, nothing acknowledged
        transport.accept()
        await wait_until(lambda: len(delivered(transport)) == 10, what="the backlog acknowledged")
        assert sorted(delivered(transport)) == [float(i) for i in range(10)]  # each once
    finally:
        await service.stop()


async def test_a_dropped_link_fails_what_is_in_flight_and_the_outbox_sends_it_again(tmp_path: Path):
    transport, bus, metrics = MemoryTransport(), Bus(), Metrics()
    service = make_service(tmp_path, transport, bus, metrics)
    await service.start()
    try:
        await wait_until(lambda: transport.published, what="the first twin report")
        transport.hold()
        await publish(bus, 0, 5)
        await wait_until(lambda: transport.in_flight > 0, what="a publish in flight")
        transport.drop_link("cable pulled")
        assert not service.transport.connected and service.status()["link"] == "down"
        assert service.link_drops == 1
        await publish(bus, 5, 5)  # stored while the link is down
        transport.release()
        assert delivered(transport) == []
        transport.restore_link()
        await wait_until(lambda: len(delivered(transport)) == 10, what="everything sent after the link came back")
        assert sorted(delivered(transport)) == [float(i) for i in range(10)]
    finally:
        await service.stop()


async def test_a_site_file_chooses_the_memory_transport_by_name(edgeplane_host):
    site = {"site": {"id": "t1"},
            "devices": {"dev": {"connector": "memory", "points": {"temp": {"type": "float64", "value": 1.0}}}},
            "sync": {"uplink": {"transport": "memory", "url": "mqtt://memory.invalid:1883"}, "policy": POLICY,
                     "durability": "process"}}
    async with edgeplane_host(site, plugins=[memory_transport_plugin]) as host:
        transport = host.sync.transport
        assert isinstance(transport, MemoryTransport)
        await wait_for(lambda: delivered(transport), timeout=10)
        assert delivered(transport)[0] == 1.0


# -- the downlink: signatures, expiry, replay, model hashes (the same code path MQTT feeds) --------


async def start_site(tmp_path: Path, public: Path, **callbacks) -> tuple[SyncService, MemoryTransport, Metrics]:
    transport, metrics = MemoryTransport(), Metrics()
    config = SyncConfig.model_validate({"uplink": {"url": "mqtt://memory.invalid:1883"}, "trust": {"keys": [str(public)]},
                                        "durability": "process"})
    service = SyncService(config, site_id="plant-1", bus=Bus(), clock=WallClock(), metrics=metrics,
                          store_dir=tmp_path / "site", base_site=LOCAL_SITE, transport=transport, **callbacks)
    await service.start()
    return service, transport, metrics


revisions = iter(range(1, 1_000_000))


def signed(private: Path, kind: str, body: dict, **options) -> bytes:
    return sign(load_private_key(private), site="plant-1", kind=kind, body=body, revision=next(revisions), **options)


async def test_unsigned_forged_expired_and_wrong_site_messages_are_refused(tmp_path: Path, keys):
    private, public = keys
    applied: list[dict] = []

    async def apply_config(site: dict) -> None:
        applied.append(site)

    service, transport, metrics = await start_site(tmp_path, public, apply_config=apply_config)
    overlay = {"overlay": {"devices": {"m": {"poll": "9s"}}}}
    rogue = Ed25519PrivateKey.generate()
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
            assert transport.deliver("edgeplane/plant-1/down/config", payload) == 1
        await wait_until(lambda: sum(service.downlink.twin["refused"].values()) == 5, what="five refusals")
        assert applied == []
        for reason in messages:
            assert service.downlink.twin["refused"][reason] == 1
            assert metrics.value("edgeplane_sync_downlink_refused_total", reason=reason) == 1
    finally:
        await service.stop()


async def test_model_version_is_verified_and_handed_to_the_inference_service(tmp_path: Path, keys):
    private, public = keys
    models: list[dict] = []

    async def apply_model(**kw) -> None:
        models.append(kw)

    service, transport, _ = await start_site(tmp_path, public, apply_model=apply_model)
    try:
        data = b"onnx-bytes" * 100
        body = {"name": "rul", "version": "3", "sha256": hashlib.sha256(data).hexdigest(),
                "data": base64.b64encode(data).decode()}
        transport.deliver("edgeplane/plant-1/down/model", signed(private, "model", body))
        await wait_until(lambda: models, what="the model handed over")
        assert models[0]["path"].read_bytes() == data and models[0]["version"] == "3"
        tampered = dict(body, version="4", data=base64.b64encode(data + b"x").decode())
        transport.deliver("edgeplane/plant-1/down/model", signed(private, "model", tampered))
        await wait_until(lambda: service.downlink.twin["models"]["rul"]["desired"] == "4", what="bad model handled")
        state = service.downlink.twin["models"]["rul"]
        assert state["status"] == "failed" and "sha256" in state["error"] and state["applied"] == "3"
        assert len(models) == 1
    finally:
        await service.stop()


async def test_commands_run_once_and_need_an_expiry(tmp_path: Path, keys):
    private, public = keys
    calls: list[tuple] = []

    async def execute_command(device: str, point: str, value) -> str:
        calls.append((device, point, value))
        return "ok"

    service, transport, _ = await start_site(tmp_path, public, execute_command=execute_command)
    try:
        command = signed(private, "command", {"device": "inv1", "point": "WMaxLimPct", "value": 50}, ttl=60)
        transport.deliver("edgeplane/plant-1/down/command", command)
        transport.deliver("edgeplane/plant-1/down/command",
                          signed(private, "command", {"device": "inv1", "point": "WMaxLimPct", "value": 70}))
        await wait_until(lambda: len(service.downlink.twin["commands"]) == 2, what="two commands handled")
        assert calls == [("inv1", "WMaxLimPct", 50)]
        assert service.downlink.twin["commands"][1]["status"] == "refused"
    finally:
        await service.stop()
