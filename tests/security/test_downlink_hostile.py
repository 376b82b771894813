"""Items 6 and 7 of issue 14: the downlink never reflects unauthenticated bytes, is bounded and
rate-limited under a flood, and a signed but malformed message is refused, counted and reported
like any other (never an exception, never "applied")."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from edgeplane import Bus, WallClock
from edgeplane.metrics import Metrics
from edgeplane.sync import SyncConfig, SyncService
from edgeplane.sync.downlink import Downlink
from edgeplane.sync.signing import generate_keypair, key_id, load_private_key, load_public_key, sign
from edgeplane.testing import wait_for

LOCAL = {"site": {"id": "plant-1"}, "limits": {}}


@pytest.fixture
def keys(tmp_path: Path):
    private, public = tmp_path / "cloud.key", tmp_path / "cloud.pub"
    generate_keypair(private, public)
    key = load_public_key(public)
    return load_private_key(private), {key_id(key): key}, private, public


def downlink(tmp_path: Path, trusted: dict[str, Any], refused: list[str], **kw: Any) -> Downlink:
    async def apply_config(site: dict) -> None:
        pass

    return Downlink(site_id="plant-1", store_dir=tmp_path / "site", trusted=trusted, base_site=LOCAL,
                    apply_config=apply_config, apply_model=None, execute_command=None,
                    on_refused=lambda reason, message: refused.append(reason), **kw)


def signed_raw(private, payload: Any) -> bytes:
    raw = json.dumps(payload).encode()
    return json.dumps({"v": 1, "key": key_id(private.public_key()), "payload": base64.b64encode(raw).decode(),
                       "sig": base64.b64encode(private.sign(raw)).decode()}).encode()


async def test_an_unsigned_message_is_never_reflected_into_the_twin(keys, tmp_path: Path):
    _, trusted, _, _ = keys
    refused: list[str] = []
    dl = downlink(tmp_path, trusted, refused)
    huge_key = "k" * 2_000_000
    message = json.dumps({"v": 1, "key": huge_key, "payload": base64.b64encode(b"{}").decode(),
                          "sig": base64.b64encode(b"x" * 64).decode()}).encode()
    assert await dl.handle(message, 0.0) is None
    dl.flush()
    assert refused == ["unknown_key"]
    twin = (tmp_path / "site" / "twin.json").read_text()
    assert len(twin) < 2_000 and "kkkkkkkkkk" not in twin
    assert "not a key id, 2000000 characters" in dl.twin["last_refused"]["message"]


async def test_a_message_over_the_size_bound_is_dropped_unread(keys, tmp_path: Path):
    private, trusted, _, _ = keys
    refused: list[str] = []
    dl = downlink(tmp_path, trusted, refused, max_message_bytes=10_000)
    big = sign(private, site="plant-1", kind="config", body={"overlay": {"limits": {}}, "pad": "x" * 20_000}, revision=1)
    assert dl.submit(big) is False
    assert dl.pending == 0 and refused == ["too_large"]


async def test_a_flood_is_bounded_and_every_drop_counted(keys, tmp_path: Path):
    _, trusted, _, _ = keys
    refused: list[str] = []
    dl = downlink(tmp_path, trusted, refused, max_queued=64)
    accepted = sum(dl.submit(b'{"junk": %d}' % i) for i in range(3000))
    assert accepted == 64 and dl.pending == 64
    assert refused.count("flooded") == 3000 - 64
    assert not (tmp_path / "site" / "twin.json").exists()  # no fsync per dropped message
    dl.flush()
    assert json.loads((tmp_path / "site" / "twin.json").read_text())["refused"]["flooded"] == 3000 - 64


MALFORMED = {
    "a list payload": [1, 2, 3],
    "a string payload": "config please",
    "no expiry key": {"id": "a", "site": "plant-1", "kind": "config", "revision": 1, "issued": 0, "body": {"overlay": {}}},
    "no id": {"site": "plant-1", "kind": "config", "revision": 1, "issued": 0, "expires": None, "body": {"overlay": {}}},
    "a string expiry": {"id": "a", "site": "plant-1", "kind": "config", "revision": 1, "issued": 0, "expires": "soon",
                        "body": {"overlay": {}}},
    "a list body": {"id": "a", "site": "plant-1", "kind": "config", "revision": 1, "issued": 0, "expires": None,
                    "body": [1]},
    "a numeric site": {"id": "a", "site": 7, "kind": "config", "revision": 1, "issued": 0, "expires": None, "body": {}},
    "a NaN issue time": {"id": "a", "site": "plant-1", "kind": "config", "revision": 1, "issued": float("nan"),
                         "expires": None, "body": {}},
    "an id of 10,000 characters": {"id": "i" * 10_000, "site": "plant-1", "kind": "config", "revision": 1, "issued": 0,
                                   "expires": None, "body": {}},
}


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_signed_but_malformed_message_is_refused_and_counted(keys, tmp_path: Path, payload):
    private, trusted, _, _ = keys
    refused: list[str] = []
    dl = downlink(tmp_path, trusted, refused)
    assert await dl.handle(signed_raw(private, payload), 0.0) is None
    assert refused == ["malformed"]
    assert dl.twin["refused"] == {"malformed": 1}


@pytest.mark.parametrize("body", [{"overlay": {"site": "oops"}}, {"overlay": [1]}, {"overlay": "x"}, {}],
                         ids=["site oops", "list overlay", "string overlay", "no overlay"])
async def test_a_signed_config_that_cannot_apply_is_a_counted_failure_not_an_exception(keys, tmp_path: Path, body):
    private, trusted, _, _ = keys
    refused: list[str] = []
    dl = downlink(tmp_path, trusted, refused)
    assert await dl.handle(sign(private, site="plant-1", kind="config", body=body, revision=1), 0.0) is None
    assert len(refused) == 1 and dl.twin["config"]["status"] == "failed"


async def test_a_flood_through_the_broker_is_bounded_and_a_failed_config_is_not_logged_as_applied(
        keys, tmp_path: Path, mqtt_broker, caplog):
    import paho.mqtt.client as mqtt

    private, _, private_path, public = keys
    broker = mqtt_broker()
    states: list[bytes] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watcher")
    subscribed = threading.Event()
    watcher.on_connect = lambda c, *a: c.subscribe("edgeplane/plant-1/up/state", qos=1)
    watcher.on_subscribe = lambda *a: subscribed.set()
    watcher.on_message = lambda c, u, m: states.append(m.payload)
    watcher.connect("127.0.0.1", broker.port)
    watcher.loop_start()

    async def apply_config(site: dict) -> None:
        raise ValueError("the inverter rejects this limit")

    config = SyncConfig.model_validate({"uplink": {"url": broker.url}, "trust": {"keys": [str(public)]},
                                        "durability": "process", "report_interval": 3600})
    metrics = Metrics()
    service = SyncService(config, site_id="plant-1", bus=Bus(), clock=WallClock(), metrics=metrics,
                          store_dir=tmp_path / "site", base_site=LOCAL, apply_config=apply_config)
    await service.start()
    try:
        await wait_for(lambda: service.transport.connected and subscribed.is_set(), timeout=20)
        await wait_for(lambda: len(states) >= 1, timeout=10)  # the report at connect
        before = len(states)
        flood = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flood")
        flood.connect("127.0.0.1", broker.port)
        flood.loop_start()
        for i in range(3000):
            flood.publish("edgeplane/plant-1/down/command", b'{"v": 1, "key": "%d"}' % i, qos=1)
        await asyncio.sleep(0)

        def counted() -> float:
            return sum(metrics.value("edgeplane_sync_downlink_refused_total", reason=r) or 0
                       for r in ("unsigned", "unknown_key", "flooded"))
        await wait_for(lambda: counted() == 3000, timeout=60)
        flood.loop_stop()
        flood.disconnect()
        # a signed config that fails to apply: reported at once, and never logged as applied
        caplog.set_level(logging.INFO, logger="edgeplane.sync")
        await asyncio.get_running_loop().run_in_executor(None, lambda: flood_free_push(broker, private_path))
        await wait_for(lambda: service.downlink.twin["config"].get("status") == "failed", timeout=20)
        await wait_for(lambda: b"the inverter rejects this limit" in states[-1], timeout=10)
        assert len(states) - before <= 20, f"{len(states) - before} state reports for a flood of 3000"
        assert not any("applied downlink" in r.getMessage() for r in caplog.records)
    finally:
        watcher.loop_stop()
        watcher.disconnect()
        await service.stop()


def flood_free_push(broker, private_path: Path) -> None:
    from edgeplane.sync.signing import load_private_key as load

    import paho.mqtt.publish as publish

    message = sign(load(private_path), site="plant-1", kind="config",
                   body={"overlay": {"limits": {"inv/x": {"max": 5}}}}, revision=1)
    publish.single("edgeplane/plant-1/down/config", message, qos=1, hostname="127.0.0.1", port=broker.port)
