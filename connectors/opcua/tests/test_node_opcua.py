"""The connector against node-opcua, an independent server implementation (one server per module)."""

from __future__ import annotations

import numpy as np

from edgeplane import Quality
from edgeplane.testing import wait_for, wait_for_batch
from edgeplane_opcua import plugin


def site(url: str, points: dict, **device) -> dict:
    return {"site": {"id": "t"}, "devices": {"plant": {"connector": "opcua", "url": url, "points": points, **device}}}


async def test_subscribe_arrays_and_browse_paths(edgeplane_host, node_server):
    # node-opcua puts its own namespace at index 2: names without 'ns:' find it anyway
    points = {"temp": {"path": "Plant/Temperature", "sampling_interval": "100ms"},
              "wave": {"node": "ns=2;s=Waveform"}}
    async with edgeplane_host(site(node_server.url, points, publishing_interval="100ms"), plugins=[plugin]) as host:
        assert host.health()["device:plant"]["state"] == "ok", host.health()
        temps = host.bus.subscribe("plant/temp", maxsize=1000)
        first = await wait_for_batch(temps, timeout=15)
        assert first.quality[0] == Quality.GOOD and 18.9 <= first.values[0] <= 21.1
        second = await wait_for_batch(temps, timeout=15)
        assert second.ts[0] >= first.ts[0] and second.values[0] != first.values[0]
        wave = await wait_for_batch(host.bus.subscribe("plant/wave"), timeout=15)
        assert len(wave) == 64 and np.all(wave.ts == wave.ts[0])  # no sample_rate: one time stamp for the window
        assert np.all(np.abs(wave.values) <= 1.0)


async def test_poll_write_and_method(edgeplane_host, node_server):
    points = {"counter": {"node": "ns=2;s=Counter", "mode": "poll"},
              "sp": {"path": "Plant/Setpoint", "access": "rw"},
              "double": {"method": "Plant/Double", "access": "w"}}
    async with edgeplane_host(site(node_server.url, points, poll="100ms"), plugins=[plugin]) as host:
        sub = host.bus.subscribe("plant/counter", maxsize=1000)
        first = await wait_for_batch(sub, timeout=15)
        later = first
        while later.values[0] <= first.values[0]:
            later = await wait_for_batch(sub, timeout=15)
        result = await host.commands.execute("plant", "sp", 17, source="test")
        assert result.ok and result.readback == 17.0, result
        assert host.bus.latest("plant/sp")[1] == 17.0
        result = await host.commands.execute("plant", "sp", "seventeen", source="test")
        assert result.status.value == "failed" and "Double" in result.message and "'plant'" in result.message
        called = await host.commands.execute("plant", "double", 21, source="test")
        assert called.ok, called
        assert host.bus.latest("plant/double")[1] == 42.0


async def test_deadband_against_a_server_that_compares_with_the_last_report(edgeplane_host, node_server):
    points = {"counter": {"node": "ns=2;s=Counter", "deadband": 3, "sampling_interval": "100ms"}}
    async with edgeplane_host(site(node_server.url, points, publishing_interval="100ms"), plugins=[plugin]) as host:
        sub = host.bus.subscribe("plant/counter", maxsize=1000)
        values = [(await wait_for_batch(sub, timeout=15)).values[0] for _ in range(3)]
        assert (np.diff(values) > 3).all(), values


async def test_secure_channel_to_node_opcua(edgeplane_host, node_server, pki, tmp_path):
    # node-opcua made its own certificate in its PKI folder; trusting that folder pins it
    trusted = node_server.pki / "server" / "own" / "certs"
    security = {"policy": "Basic256Sha256", "mode": "SignAndEncrypt", "certificate": str(pki.client_cert),
                "private_key": str(pki.client_key), "trust_dir": str(trusted)}
    points = {"temp": {"node": "ns=2;s=Temperature"}}
    async with edgeplane_host(site(node_server.url, points, security=security, username="operator",
                                   password="s3cret-pw"), plugins=[plugin]) as host:
        assert host.health()["device:plant"]["state"] == "ok", host.health()
        batch = await wait_for_batch(host.bus.subscribe("plant/temp"), timeout=15)
        assert batch.quality[0] == Quality.GOOD
