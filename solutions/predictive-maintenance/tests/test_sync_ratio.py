"""Only alerts and aggregates go up: bytes sent to the cloud over bytes read stays under 2%."""

from __future__ import annotations

import asyncio

from edgeplane import Event
from edgeplane_cloud.embedded import CloudServer
from edgeplane.testing import wait_for

from edgeplane_pdm.testing import line_server, line_site


async def test_cloud_gets_alerts_and_aggregates_not_waveforms(edgeplane_host, plugins, mosquitto, tmp_path):
    cloud = CloudServer(mosquitto, tmp_path / "cloud")
    cloud.start()
    sync = {
        "uplink": {"url": mosquitto},
        "durability": "process",
        "policy": [
            {"topics": "alerts/#", "mode": "events", "priority": "high"},
            {"topics": "pdm/+/+", "mode": "aggregate", "window": "1h", "stats": ["mean", "min", "max", "last"]},
        ],
    }
    try:
        async with line_server(2, degrade_after=4.0, degrade_over=6.0) as url:
            async with edgeplane_host(line_site(url, 2, sync=sync), plugins=plugins) as host:
                alerts = host.bus.subscribe("alerts/#", name="test-alerts")

                async def first_alert() -> Event:
                    while True:
                        m = await alerts.get()
                        if isinstance(m, Event) and m.kind == "alert":
                            return m

                await asyncio.wait_for(first_alert(), 120)
                solution = host.solution("pdm")
                # the alert itself reaches the cloud while the host runs
                await wait_for(lambda: any(s.startswith("alerts/") for s in _streams(cloud)), timeout=60, interval=0.2)
            # stopping flushed the hourly aggregates
            await wait_for(lambda: any(s.startswith("pdm/m2/health") for s in _streams(cloud)), timeout=30, interval=0.2)
            streams = _streams(cloud)
            assert not any(s.startswith("line/") for s in streams), streams  # raw waveforms never go up
            assert ("alert", "warning") in _events(cloud) or ("alert", "critical") in _events(cloud)
            sent, read = host.sync.bytes_sent, solution.bytes_read
            assert sent > 0 and read > 0
            assert sent / read <= 0.02, f"sent {sent} B over read {read} B"
    finally:
        cloud.stop()


def _streams(cloud: CloudServer) -> set[str]:
    """Streams of every record the cloud stored (raw readings, aggregates and events alike)."""
    return {row[0] for row in cloud.store.query("factory-test", "SELECT DISTINCT stream FROM records")}


def _events(cloud: CloudServer) -> list[tuple[str, str | None]]:
    return cloud.store.query("factory-test", "SELECT kind, severity FROM events")
