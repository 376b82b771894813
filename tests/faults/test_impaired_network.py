"""Impaired network between a site and its broker: readings produced = stored at the cloud end,
no duplicates, under each impairment a lossy cellular link puts on a TCP session.

site (SyncService) --> FaultProxy --> Mosquitto --> cloud end (edgeplane_cloud, persistent session)

Each test produces readings for a few seconds through the impairment, then the link heals and the
outbox drains; the cloud end must hold every reading exactly once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from edgeplane_cloud.embedded import CloudServer

from edgeplane import Batch, Bus, WallClock
from edgeplane.metrics import Metrics
from edgeplane.sync import SyncConfig, SyncService
from edgeplane.testing import FaultProxy

SITE = "plant-9"


def cloud_counts(cloud: CloudServer) -> tuple[int, int]:
    """(readings stored, distinct (stream, ts) among them)."""
    (total, distinct), = cloud.store.query(SITE, "SELECT COUNT(*), (SELECT COUNT(*) FROM (SELECT DISTINCT stream, ts "
                                                 "FROM readings)) FROM readings")
    return total, distinct


class Link:
    """A site whose uplink runs through a FaultProxy to a real broker and cloud end."""

    def __init__(self, broker, tmp_path: Path):
        self.broker = broker
        self.tmp_path = tmp_path
        self.proxy = FaultProxy("127.0.0.1", broker.port, seed=7)
        self.cloud = CloudServer(broker.url, tmp_path / "cloud")
        self.bus = Bus()
        self.produced = 0
        self.service: SyncService | None = None

    async def start(self) -> None:
        await self.proxy.start()
        self.cloud.start()
        config = SyncConfig.model_validate({
            # keepalive 2 s: a link that went silent (black hole) is noticed in seconds
            "uplink": {"url": self.proxy.url("mqtt"), "inflight": 8, "max_envelope_bytes": 20_000, "keepalive": 2},
            "policy": [{"topics": "dev*/#", "mode": "raw", "priority": "low"}],
            "compression": "zstd", "durability": "process", "report_interval": 60,
        })
        self.service = SyncService(config, site_id=SITE, bus=self.bus, clock=WallClock(), metrics=Metrics(),
                                   store_dir=self.tmp_path / "site")
        await self.service.start()

    async def produce(self, seconds: float, per_second: int = 4000, noisy: bool = False) -> None:
        """Readings of two devices at ``per_second``, each with a unique timestamp (``noisy``: values
        that do not compress, so envelopes are as large as the settings allow)."""
        end = time.monotonic() + seconds
        rng = np.random.default_rng(self.produced)
        while time.monotonic() < end:
            for device in ("dev1", "dev2"):
                ts = np.arange(self.produced, self.produced + 40, dtype=float)
                await self.bus.publish(Batch.of(f"{device}/temp", ts, rng.standard_normal(40) if noisy else np.sin(ts)))
            self.produced += 40
            await asyncio.sleep(80 / per_second)

    async def healed_and_complete(self, timeout: float = 60) -> tuple[int, int]:
        self.proxy.clear()
        expected = 2 * self.produced
        deadline = time.monotonic() + timeout
        while cloud_counts(self.cloud)[0] < expected:
            assert time.monotonic() < deadline, (f"{cloud_counts(self.cloud)[0]} of {expected} readings at the cloud end "
                                                 f"after the link healed; link {self.service.status()['link']}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # a late duplicate would land now
        return cloud_counts(self.cloud)

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
        await self.proxy.stop()
        self.cloud.stop()


@pytest.fixture
async def link(mqtt_broker, tmp_path):
    broker = mqtt_broker(persistence=True)
    site = Link(broker, tmp_path)
    await site.start()
    try:
        yield site
    finally:
        await site.stop()


async def test_latency_with_jitter(link: Link):
    link.proxy.latency, link.proxy.jitter = 0.15, 0.1  # 50-250 ms each way
    await link.produce(3)
    assert await link.healed_and_complete() == (2 * link.produced, 2 * link.produced)


async def test_bandwidth_cap(link: Link):
    link.proxy.bandwidth = 20_000  # bytes/s each way: less than the site produces, so it queues
    await link.produce(3)
    assert link.service.outbox.backlog()["low"]["readings"] > 0
    assert await link.healed_and_complete() == (2 * link.produced, 2 * link.produced)


async def test_a_link_slower_than_one_envelope_keeps_moving(link: Link):
    """A backlog gathered during an outage meets a 1.2 kB/s link, on which one of the fixture's 20 kB
    envelopes (about 10 kB compressed) takes longer to cross than two 2 s keepalives: the uplink paces
    itself to the measured rate (smaller envelopes, a smaller window) and delivers everything over the
    slow link without the session being dropped. Without pacing the keepalive ping waited behind the
    envelope, the session dropped every few seconds and the backlog never moved."""
    link.proxy.black_hole = True
    await link.produce(0.6, per_second=2000, noisy=True)
    link.proxy.black_hole = False
    link.proxy.reset_all()  # the silent session ends now rather than at its keepalive
    link.proxy.bandwidth = 1_200
    expected = 2 * link.produced
    deadline = time.monotonic() + 60
    while cloud_counts(link.cloud)[0] < expected:  # the link stays slow all along
        assert time.monotonic() < deadline, (
            f"{cloud_counts(link.cloud)[0]} of {expected} readings over a 1.2 kB/s link in 60 s; "
            f"{link.service.status()['link_drops']} link drops, rate {link.service.status()['link_rate_bytes_s']}")
        await asyncio.sleep(0.2)
    drops = link.service.status()["link_drops"]
    await asyncio.sleep(0.3)
    assert cloud_counts(link.cloud) == (expected, expected)
    assert 600 < link.service.status()["link_rate_bytes_s"] < 2_400  # the link's rate, not a burst's
    assert drops <= 3  # the black hole's session, and the first envelopes sent before the rate was known


async def test_stalls_of_a_few_seconds(link: Link):
    await asyncio.gather(link.produce(5), _stalls(link.proxy))
    assert await link.healed_and_complete() == (2 * link.produced, 2 * link.produced)


async def _stalls(proxy: FaultProxy) -> None:
    await asyncio.sleep(0.5)
    await proxy.stall(2.0)
    await asyncio.sleep(0.5)
    await proxy.stall(2.0)


async def test_connection_resets(link: Link):
    link.proxy.reset_every = 0.7  # a reset about every 0.7 s, mid-envelope as often as not
    await link.produce(4)
    assert link.proxy.stats.resets >= 2
    assert await link.healed_and_complete() == (2 * link.produced, 2 * link.produced)


async def test_black_hole(link: Link):
    await link.produce(1)
    link.proxy.black_hole = True  # the open session goes silent; reconnects are accepted, never answered
    await link.produce(4)
    assert link.proxy.stats.swallowed > 0
    assert await link.healed_and_complete() == (2 * link.produced, 2 * link.produced)


async def test_a_backlog_drains_through_a_slow_link_after_an_outage(link: Link):
    """A backlog of incompressible readings gathered during an outage drains through a 16 kB/s link
    whose in-flight window (8 envelopes) takes longer to cross than the 2 s keepalive. The link is
    never healed here: everything must go through it. (A link too slow for even one envelope: the
    next test.)"""
    link.proxy.black_hole = True  # an outage first, so a backlog waits when the slow link comes up
    await link.produce(3, noisy=True)
    link.proxy.black_hole = False
    link.proxy.bandwidth = 16_000  # 8 envelopes of ~20 kB in flight need ~10 s; the keepalive allows 3 s
    expected = 2 * link.produced
    deadline = time.monotonic() + 60
    while cloud_counts(link.cloud)[0] < expected:
        assert time.monotonic() < deadline, (f"{cloud_counts(link.cloud)[0]} of {expected} readings through the slow link; "
                                             f"link {link.service.status()['link']}")
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.3)
    assert cloud_counts(link.cloud) == (expected, expected)
