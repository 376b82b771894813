"""Item 1 of issue 14: a signed desired-config overlay may change only what an operator tunes from
afar (limits, solution parameters, uplink policies, model settings), never commands, files,
secrets, the store or the site id; and a forbidden overlay never becomes last-good."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from edgeplane.sync.downlink import Downlink, overlay_problems, remote_part, with_last_good
from edgeplane.sync.signing import generate_keypair, key_id, load_private_key, load_public_key, sign
from edgeplane.testing import run_host, wait_for

LOCAL = {
    "site": {"id": "plant-1"},
    "devices": {"m": {"connector": "memory", "poll": "1s", "points": {"x": {"type": "float64", "value": 1.0}}}},
    "solutions": {"hot": {"type": "threshold", "points": ["m/x"], "high": 50}},
    "sync": {"uplink": {"url": "mqtt://127.0.0.1:1"}, "trust": {"keys": ["keys/cloud.pub"]}},
}

FORBIDDEN = {
    "a simulator (a command the host runs)": {"simulators": {"pwn": {"command": ["sh", "-c", "touch /tmp/pwned"]}}},
    "a secret file reference": {"solutions": {"hot": {"high": "${file:/etc/shadow}"}}},
    "an environment reference": {"limits": {"m/x": {"max": "${env:HOME}"}}},
    "the trusted keys": {"sync": {"trust": {"keys": ["/tmp/attacker.pub"]}}},
    "the broker and its certificates": {"sync": {"uplink": {"url": "mqtt://evil:1883"}}},
    "the store": {"store": {"path": "/"}},
    "the site id": {"site": {"id": "plant-2"}},
    "the site section as a string": {"site": "oops"},
    "profile files": {"profiles": ["/etc/shadow"]},
    "the http listener": {"http": {"host": "0.0.0.0", "port": 80}},
    "a new device": {"devices": {"plc": {"connector": "modbus", "url": "tcp://10.0.0.9:502"}}},
    "a device's address": {"devices": {"m": {"url": "tcp://evil:502"}}},
    "removing a solution": {"solutions": {"hot": None}},
    "a solution's type": {"solutions": {"hot": {"type": "replay"}}},
    "a file path as a solution parameter": {"solutions": {"hot": {"model_path": "x.onnx"}}},
    "an absolute path as a value": {"solutions": {"hot": {"points": ["/etc/passwd"]}}},
    "the inference model folder": {"inference": {"models": "/tmp/evil-models"}},
}

ALLOWED = {
    "limits": {"limits": {"m/x": {"min": 0, "max": 100}}},
    "a solution parameter": {"solutions": {"hot": {"high": 60, "clear": 55}}},
    "a device's poll period": {"devices": {"m": {"poll": "2s"}}},
    "a point's limits": {"devices": {"m": {"points": {"x": {"limits": {"max": 10}}}}}},
    "an uplink policy": {"sync": {"policy": [{"topics": "alerts/#", "mode": "events", "priority": "high"}]}},
    "model settings": {"inference": {"preload": ["rul"]}},
}


@pytest.fixture
def signer(tmp_path: Path):
    private, public = tmp_path / "cloud.key", tmp_path / "cloud.pub"
    generate_keypair(private, public)
    key = load_public_key(public)
    return load_private_key(private), {key_id(key): key}, private, public


@pytest.mark.parametrize("overlay", FORBIDDEN.values(), ids=FORBIDDEN.keys())
async def test_a_forbidden_overlay_is_refused_counted_reported_and_never_saved(signer, tmp_path: Path, overlay):
    private, trusted, _, _ = signer
    applied: list[dict] = []
    refused: list[str] = []

    async def apply_config(site: dict[str, Any]) -> None:
        applied.append(site)

    downlink = Downlink(site_id="plant-1", store_dir=tmp_path / "site", trusted=trusted, base_site=LOCAL,
                        apply_config=apply_config, apply_model=None, execute_command=None,
                        on_refused=lambda reason, message: refused.append(reason))
    message = sign(private, site="plant-1", kind="config", body={"overlay": overlay}, revision=1)
    assert await downlink.handle(message, now=0.0) is None
    assert applied == []
    assert refused == ["not_allowed"]
    assert downlink.twin["config"]["status"] == "failed"
    assert "not allowed from the cloud" in downlink.twin["config"]["error"]
    assert not (tmp_path / "site" / "last-good.json").exists()


@pytest.mark.parametrize("overlay", ALLOWED.values(), ids=ALLOWED.keys())
def test_what_an_operator_tunes_from_afar_is_allowed(overlay):
    assert overlay_problems(overlay, LOCAL) == []


def test_a_last_good_overlay_with_a_command_in_it_is_ignored_at_start(tmp_path: Path):
    # written by an older version (or by hand): it must not come back at the next start
    (tmp_path / "last-good.json").write_text(json.dumps({"id": "old", "overlay": FORBIDDEN[
        "a simulator (a command the host runs)"]}))
    assert with_last_good(LOCAL, tmp_path) == LOCAL
    (tmp_path / "last-good.json").write_text(json.dumps({"id": "ok", "overlay": ALLOWED["limits"]}))
    assert with_last_good(LOCAL, tmp_path)["limits"] == {"m/x": {"min": 0, "max": 100}}


def test_pushing_a_whole_site_file_sends_only_the_remote_part():
    document = dict(LOCAL, simulators={"sim": {"command": ["{python}", "sim.py"]}}, store={"path": "data"},
                    limits={"m/x": {"max": 5}})
    part, left = remote_part(document)
    assert overlay_problems(part, document) == []
    assert part["limits"] == {"m/x": {"max": 5}}
    assert part["solutions"]["hot"] == {"points": ["m/x"], "high": 50}
    assert part["devices"]["m"] == {"poll": "1s"}
    assert {"site", "simulators", "store", "sync.uplink", "sync.trust"} <= set(left)


async def test_a_host_never_runs_a_command_sent_in_an_overlay(signer, tmp_path: Path, mqtt_broker):
    """End to end: Mosquitto, a host with a sync section, a signed overlay with a simulator in it."""
    from edgeplane_cloud.embedded import push_message

    _, _, private, public = signer
    broker = mqtt_broker()
    marker = tmp_path / "pwned"
    site = {
        "site": {"id": "plant-1"},
        "devices": {"m": {"connector": "memory", "points": {"x": {"type": "float64", "value": 1.0}}}},
        "solutions": {"hot": {"type": "threshold", "points": ["m/x"], "high": 50}},
        "sync": {"uplink": {"url": broker.url}, "trust": {"keys": [str(public)]}, "durability": "process"},
    }
    evil = {"simulators": {"pwn": {"command": [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]}},
            "solutions": {"hot": {"high": 70}}}
    async with run_host(site, store_dir=tmp_path / "store") as host:
        await wait_for(lambda: host.sync.transport.connected, timeout=20)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: push_message(broker.url, "plant-1", "config", {"overlay": evil},
                                                              private))
        await wait_for(lambda: host.sync.downlink.twin["config"].get("status") == "failed", timeout=20)
        assert "simulators" in host.sync.downlink.twin["config"]["error"]
        assert "simulator:pwn" not in host.parts
        assert host.solution("hot").config.high == 50  # nothing of the overlay was applied
        # an allowed overlay still works through the same path
        await loop.run_in_executor(None, lambda: push_message(broker.url, "plant-1", "config",
                                                              {"overlay": {"solutions": {"hot": {"high": 70}}}}, private))
        await wait_for(lambda: host.sync.downlink.twin["config"].get("status") == "applied", timeout=20)
        await wait_for(lambda: host.solution("hot").config.high == 70, timeout=10)
    await asyncio.sleep(0.5)
    assert not marker.exists()
    saved = json.loads((tmp_path / "store" / "sync" / "last-good.json").read_text())
    assert saved["overlay"] == {"solutions": {"hot": {"high": 70}}}
