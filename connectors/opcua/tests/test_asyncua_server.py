"""The connector against the asyncua simulated machine with security on (one server per module)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from edgeplane import Quality
from edgeplane.testing import wait_for, wait_for_batch
from edgeplane_opcua import plugin

USER, PASSWORD = "operator", "s3cret-pw"  # the simulator's user (see conftest.sim_process)


def site(url: str, points: dict, **device) -> dict:
    return {"site": {"id": "t"}, "devices": {"plc": {"connector": "opcua", "url": url, "points": points, **device}},
            "supervision": {"backoff_initial": 0.05, "backoff_max": 0.5}}


def secure(pki, mode="SignAndEncrypt", **trust) -> dict:
    return {"policy": "Basic256Sha256", "mode": mode, "certificate": str(pki.client_cert),
            "private_key": str(pki.client_key), **trust}


async def collect(host, topics: set[str], timeout: float = 15.0) -> dict:
    """The newest batch of each of ``topics``. From the latest-value cache: a point that never
    changes sends only its first value, which may come before a test could subscribe."""
    await wait_for(lambda: all(host.bus.latest_batch(t) is not None for t in topics), timeout=timeout)
    return {t: host.bus.latest_batch(t) for t in topics}


async def test_secure_subscription_with_user_pinned_thumbprint(edgeplane_host, sim, pki, monkeypatch):
    monkeypatch.setenv("PLC_PASSWORD", PASSWORD)
    points = {
        "temp": {"node": "ns=2;s=Machine.Temperature", "unit": "degC", "sampling_interval": "50ms"},
        "vib": {"path": "Machine/Vibration", "sample_rate": 1000},
        "broken": {"node": "ns=2;s=Machine.Broken"},
        "drifting": {"node": "ns=2;s=Machine.Drifting"},
        "name": {"path": "2:Machine/2:Name"},
    }
    config = site(sim.url, points, username=USER, password="${env:PLC_PASSWORD}",
                  security=secure(pki, server_thumbprint=pki.thumbprint(pki.server_cert)))
    async with edgeplane_host(config, plugins=[plugin]) as host:
        assert host.health()["device:plc"]["state"] == "ok", host.health()
        seen = await collect(host, {"plc/temp", "plc/vib", "plc/broken", "plc/drifting", "plc/name"})
        temp = seen["plc/temp"]
        assert temp.quality[0] == Quality.GOOD and 14.0 <= temp.values[0] <= 26.0 and temp.unit == "degC"
        assert abs(temp.ts[0] - time.time()) < 30  # the simulator's source time stamp, not zero
        vib = seen["plc/vib"]
        assert len(vib) == 256 and vib.values.dtype == np.float64
        assert np.allclose(np.diff(vib.ts), 0.001, atol=1e-5)  # spread by sample_rate, last sample at the node's time
        assert seen["plc/broken"].quality[0] == Quality.BAD and np.isnan(seen["plc/broken"].values[0])
        assert seen["plc/drifting"].quality[0] == Quality.UNCERTAIN and seen["plc/drifting"].values[0] == 1.0
        assert seen["plc/name"].values[0] == "press-7"
        assert host.metrics.value("edgeplane_opcua_errors_total", device="plc", point="broken", reason="bad_status") >= 1
        # data changes keep coming through the subscription
        before = host.bus.published_points
        await wait_for(lambda: host.bus.published_points > before + 10, timeout=10)


async def test_sign_mode_with_trust_folder(edgeplane_host, sim, pki, tmp_path):
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "plc.der").write_bytes(pki.server_cert.read_bytes())
    config = site(sim.url, {"counter": {"node": "ns=2;s=Machine.Counter"}}, security=secure(pki, "Sign", trust_dir=str(trusted)))
    async with edgeplane_host(config, plugins=[plugin]) as host:
        batch = await wait_for_batch(host.bus.subscribe("plc/counter"), timeout=15)
        assert batch.quality[0] == Quality.GOOD and batch.values[0] >= 0


async def test_untrusted_server_certificate_is_refused(edgeplane_host, sim, pki):
    config = site(sim.url, {"temp": {"node": "ns=2;s=Machine.Temperature"}},
                  security=secure(pki, server_certificate=str(pki.stranger_cert)))
    async with edgeplane_host(config, plugins=[plugin]) as host:
        health = host.health()["device:plc"]
        assert health["state"] == "degraded"
        assert "not trusted" in health["detail"] and pki.thumbprint(pki.server_cert) in health["detail"]
        assert host.metrics.value("edgeplane_opcua_errors_total", device="plc", point="", reason="certificate") >= 1
        assert host.bus.latest("plc/temp") is None  # not one secured request went out


async def test_wrong_password_is_refused_and_the_host_keeps_running(edgeplane_host, sim, pki):
    config = site(sim.url, {"temp": {"node": "ns=2;s=Machine.Temperature"}}, username=USER, password="wrong",
                  security=secure(pki, server_thumbprint=pki.thumbprint(pki.server_cert)))
    config["devices"]["mem"] = {"connector": "memory", "points": {"x": {"value": 1.0}}}
    async with edgeplane_host(config, plugins=[plugin]) as host:
        health = host.health()["device:plc"]
        assert health["state"] == "degraded" and "Bad" in health["detail"], health
        assert host.health()["device:mem"]["state"] == "ok"
        assert host.metrics.value("edgeplane_opcua_errors_total", device="plc", point="", reason="connect") >= 1
        # the password never shows up in health or logs
        assert "wrong" not in health["detail"] or "Bad" in health["detail"]


async def test_polling_with_browse_paths(edgeplane_host, sim):
    points = {"counter": {"path": "Machine/Counter"}, "speed": {"path": "Objects/2:Machine/2:Speed"},
              "running": {"node": "ns=2;s=Machine.Running"}}
    async with edgeplane_host(site(sim.url, points, mode="poll", poll="100ms"), plugins=[plugin]) as host:
        sub = host.bus.subscribe("plc/counter")
        first = await wait_for_batch(sub, timeout=15)
        later = first
        while later.values[0] <= first.values[0]:
            later = await wait_for_batch(sub, timeout=15)
        assert later.ts[0] > first.ts[0]
        await wait_for(lambda: host.bus.latest("plc/speed") is not None and host.bus.latest("plc/running") is not None, 10)
        assert host.bus.latest("plc/speed")[1] == 1500.0
        assert host.bus.latest("plc/running")[1] == 1.0  # bools travel as numbers on the bus


async def test_unknown_nodes_are_bad_counted_and_named(edgeplane_host, sim, caplog):
    points = {"temp": {"node": "ns=2;s=Machine.Temperature"}, "ghost": {"node": "ns=2;s=Machine.Ghost"},
              "lost": {"path": "Machine/Lost"}}
    async with edgeplane_host(site(sim.url, points), plugins=[plugin]) as host:
        await wait_for_batch(host.bus.subscribe("plc/temp"), timeout=15)
        for point in ("ghost", "lost"):
            assert host.bus.latest(f"plc/{point}")[2] == Quality.BAD
            assert host.metrics.value("edgeplane_opcua_errors_total", device="plc", point=point, reason="unknown_node") == 1
        health = host.health()["device:plc"]
        assert health["state"] == "degraded" and "ghost" in health["detail"]
    text = caplog.text
    assert "'plc'" in text and "ns=2;s=Machine.Ghost" in text and "BadNodeIdUnknown" in text
    assert "has no child 'Lost'" in text


async def test_deadband_filters_small_changes(edgeplane_host, sim):
    # the counter moves by 1 every 50 ms; a deadband of 5 must hold most of those changes back
    points = {"every": {"node": "ns=2;s=Machine.Counter", "sampling_interval": "20ms", "queue_size": 10},
              "banded": {"node": "ns=2;s=Machine.Counter", "deadband": 5, "sampling_interval": "20ms"}}
    async with edgeplane_host(site(sim.url, points, publishing_interval="100ms"), plugins=[plugin]) as host:
        every, banded = host.bus.subscribe("plc/every", maxsize=10_000), host.bus.subscribe("plc/banded", maxsize=10_000)
        # the banded item's first value may come before this test subscribes: the latest-value
        # cache has it either way
        await wait_for(lambda: every.depth >= 20 and host.bus.latest("plc/banded") is not None, timeout=30)
        assert host.metrics.value("edgeplane_opcua_errors_total", device="plc", point="banded", reason="bad_filter") == 0

        def values(sub):
            out = []
            while (batch := sub.get_nowait()) is not None:
                out.extend(batch.values.tolist())
            return out

        # what a deadband guarantees, however the machine's load spaces the samples: every
        # reported change is at least the deadband, while unfiltered changes are smaller. (asyncua's
        # server compares with the last *sample*, so a slow counter may report only its first value;
        # the node-opcua tests check the usual semantics.)
        every_values, banded_values = values(every), values(banded)
        every_steps = [abs(b - a) for a, b in zip(every_values, every_values[1:])]
        banded_steps = [abs(b - a) for a, b in zip(banded_values, banded_values[1:])]
        assert min(every_steps) < 5, every_values
        assert all(step >= 5 for step in banded_steps), banded_values
        assert len(banded_values) < len(every_values) / 3, (banded_values, every_values)


async def test_guarded_writes_coerce_to_node_type_and_read_back(edgeplane_host, sim, caplog):
    points = {"sp": {"node": "ns=2;s=Machine.Setpoint", "access": "rw", "limits": {"min": 0, "max": 100}},
              "mode": {"path": "Machine/Mode", "access": "rw"},
              "speed": {"node": "ns=2;s=Machine.Speed"},
              "scale": {"method": "Machine/Scale", "access": "w"},
              "scale_by_id": {"method": "ns=2;s=Machine.Scale", "object": "ns=2;s=Machine", "access": "w"}}
    async with edgeplane_host(site(sim.url, points), plugins=[plugin]) as host:
        ok = await host.commands.execute("plc", "sp", 12.5, source="test")
        assert ok.ok and ok.readback == 12.5
        assert host.bus.latest("plc/sp")[1] == 12.5
        ok = await host.commands.execute("plc", "mode", 3, source="test")
        assert ok.ok and ok.readback == 3 and isinstance(ok.readback, int)
        guard = await host.commands.execute("plc", "sp", 150, source="test")
        assert guard.status.value == "rejected"
        bad = await host.commands.execute("plc", "mode", 2.5, source="test")
        assert bad.status.value == "failed" and "UInt16" in bad.message and "'mode'" in bad.message
        bad = await host.commands.execute("plc", "mode", 70000, source="test")
        assert bad.status.value == "failed" and "does not fit" in bad.message
        bad = await host.commands.execute("plc", "mode", "fast", source="test")
        assert bad.status.value == "failed" and "not a number" in bad.message
        assert host.metrics.value("edgeplane_opcua_errors_total", device="plc", point="mode", reason="type_mismatch") == 3
        ro = await host.commands.execute("plc", "speed", 1, source="test")
        assert ro.status.value == "rejected"  # read-only: the guard stops it before the connector
        called = await host.commands.execute("plc", "scale", [2, 3], source="test")
        assert called.ok, called
        assert host.bus.latest("plc/scale")[1] == 6.0
        called = await host.commands.execute("plc", "scale_by_id", [1.5, 2], source="test")
        assert called.ok and host.bus.latest("plc/scale_by_id")[1] == 3.0
        wrong = await host.commands.execute("plc", "scale", [1], source="test")
        assert wrong.status.value == "failed" and "takes 2 arguments (value, factor)" in wrong.message
        assert host.health()["device:plc"]["state"] == "ok"
