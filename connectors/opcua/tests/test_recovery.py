"""Recovery: the server goes away mid-subscription (or mid-poll) and comes back on the same port."""

from __future__ import annotations

import asyncio
import signal

import pytest

from edgeplane import Quality
from edgeplane.testing import wait_for, wait_for_batch
from edgeplane_opcua import plugin


@pytest.mark.parametrize("mode, how", [("subscribe", signal.SIGTERM), ("poll", signal.SIGKILL)])
async def test_values_resume_after_a_server_restart(edgeplane_host, sim_factory, mode, how):
    server = sim_factory()
    site = {"site": {"id": "t"},
            "devices": {"plc": {"connector": "opcua", "url": server.url, "mode": mode, "poll": "100ms",
                                "points": {"counter": {"node": "ns=2;s=Machine.Counter"},
                                           "temp": {"path": "Machine/Temperature"}}}}}
    async with edgeplane_host(site, plugins=[plugin]) as host:
        sub = host.bus.subscribe("plc/counter", maxsize=10_000)
        first = await wait_for_batch(sub, timeout=15)
        assert first.quality[0] == Quality.GOOD
        health = lambda: host.health()["device:plc"]  # noqa: E731

        # SIGTERM: the server closes its sockets; SIGKILL: the OS drops them mid-read
        server.proc.send_signal(how)
        await asyncio.get_running_loop().run_in_executor(None, server.proc.wait)
        await wait_for(lambda: health()["state"] == "degraded", timeout=15)
        assert "link down" in health()["detail"]
        assert host.metrics.value("edgeplane_opcua_link_up", device="plc") == 0
        bad = await wait_for_batch(sub, timeout=15)
        while bad.quality[0] != Quality.BAD:
            bad = await wait_for_batch(sub, timeout=15)

        await asyncio.get_running_loop().run_in_executor(None, server.restart)
        # the bound: values resume within 10 s of the server being back, with no host restart
        resumed = await wait_for_batch(sub, timeout=10)
        while resumed.quality[0] != Quality.GOOD:
            resumed = await wait_for_batch(sub, timeout=10)
        await wait_for(lambda: health()["state"] == "ok", timeout=10)
        assert host.metrics.value("edgeplane_opcua_reconnects_total", device="plc") == 1
        assert host.metrics.value("edgeplane_restarts_total", part="device:plc") == 0  # recovered inside run()
        before = host.bus.published_points
        await wait_for(lambda: host.bus.published_points > before + 3, timeout=10)
        assert host.bus.latest("plc/temp")[2] == Quality.GOOD


async def test_values_resume_after_a_node_opcua_server_restart(edgeplane_host, tmp_path):
    """The same recovery against the independent implementation: a subscription survives it."""
    import shutil

    from .conftest import NODE_DIR, ServerProcess, free_port

    port = free_port()
    server = ServerProcess([shutil.which("node"), str(NODE_DIR / "server.js"), str(port), str(tmp_path / "pki")], port,
                           f"opc.tcp://127.0.0.1:{port}/UA/edgeplane", cwd=NODE_DIR).start()
    site = {"site": {"id": "t"},
            "devices": {"plant": {"connector": "opcua", "url": server.url, "publishing_interval": "100ms",
                                  "points": {"temp": {"path": "Plant/Temperature", "sampling_interval": "100ms"}}}}}
    try:
        async with edgeplane_host(site, plugins=[plugin]) as host:
            sub = host.bus.subscribe("plant/temp", maxsize=10_000)
            assert (await wait_for_batch(sub, timeout=15)).quality[0] == Quality.GOOD
            server.proc.send_signal(signal.SIGKILL)
            await asyncio.get_running_loop().run_in_executor(None, server.proc.wait)
            await wait_for(lambda: host.health()["device:plant"]["state"] == "degraded", timeout=15)
            await asyncio.get_running_loop().run_in_executor(None, server.restart)
            resumed = await wait_for_batch(sub, timeout=10)
            while resumed.quality[0] != Quality.GOOD:
                resumed = await wait_for_batch(sub, timeout=10)
            await wait_for(lambda: host.health()["device:plant"]["state"] == "ok", timeout=10)
            assert host.metrics.value("edgeplane_restarts_total", part="device:plant") == 0
    finally:
        server.stop()
