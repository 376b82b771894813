"""Goodput of the sync uplink through an impaired link, against the same path unimpaired.

    python benchmarks/impaired_link.py [--json] [--readings 600000]

Path: SyncService -> FaultProxy (edgeplane.testing) -> Mosquitto -> cloud end (edgeplane-cloud,
SQLite). Each case fills the site's outbox with the same readings (two streams, noisy values,
unique timestamps) while the link is down, as after an outage, then lets the link come back with
the case's impairment and times until the cloud end holds all of them: goodput is readings (and
envelope bytes) stored per second. Every case also checks stored == produced and 0 duplicates.
The unimpaired case runs through the proxy too, so the proxy's own cost is in the baseline; an
unreported warm-up case runs first.

Impairments (the seed: edge links lose up to 10% of packets; over TCP that becomes delay, a lower
rate, stalls and resets):

* latency:   100 ms +- 50 ms each way
* bandwidth: 100 kB/s each way
* stalls:    2 s of nothing after every 1 s of flow
* resets:    a TCP RST about every second
* black hole: the first 3 s accept and never answer, then the link heals

``unimpaired_again`` repeats the baseline last: the spread of the two is the noise of the machine.

Needs ``mosquitto`` on PATH (or /usr/sbin).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from edgeplane_cloud.embedded import CloudServer
from edgeplane_mqtt.testing import Mosquitto

from edgeplane import Batch, Bus, WallClock
from edgeplane.metrics import Metrics
from edgeplane.sync import SyncConfig, SyncService
from edgeplane.testing import FaultProxy

CASES = ["unimpaired", "latency", "bandwidth", "stalls", "resets", "black_hole", "unimpaired_again"]


def cloud_counts(cloud: CloudServer, site: str) -> tuple[int, int]:
    db = cloud.store.site_db(site)
    with cloud.store._lock:
        total = db.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        distinct = db.execute("SELECT COUNT(*) FROM (SELECT DISTINCT stream, ts FROM readings)").fetchone()[0]
    return total, distinct


async def _impair(case: str, proxy: FaultProxy) -> None:
    """Apply the case's impairment for as long as the case runs (cancelled at the end)."""
    if case == "latency":
        proxy.latency, proxy.jitter = 0.1, 0.05
    elif case == "bandwidth":
        proxy.bandwidth = 100_000
    elif case == "resets":
        proxy.reset_every = 1.0
    elif case == "stalls":
        while True:
            await asyncio.sleep(1.0)
            await proxy.stall(2.0)
    elif case == "black_hole":
        proxy.black_hole = True
        proxy.reset_all()
        await asyncio.sleep(3.0)
        proxy.black_hole = False
        proxy.reset_all()  # the connections that went into the hole are dropped by the far side
    await asyncio.Event().wait()


async def run_case(case: str, broker: Mosquitto, cloud: CloudServer, folder: Path, readings: int) -> dict[str, float]:
    site = f"bench-{case.replace('_', '-')}"
    proxy = FaultProxy("127.0.0.1", broker.port, seed=1)
    await proxy.start()
    config = SyncConfig.model_validate({
        # the uplink as a site has it (keepalive 30 s): with a 2 s keepalive, a 100 kB/s cap livelocks
        # (a full in-flight window takes longer than the keepalive; see RESULTS.md)
        "uplink": {"url": proxy.url("mqtt"), "inflight": 16},
        "policy": [{"topics": "dev*/#", "mode": "raw", "priority": "low"}],
        "compression": "zstd", "durability": "process", "report_interval": 600,
    })
    bus = Bus()
    service = SyncService(config, site_id=site, bus=bus, clock=WallClock(), metrics=Metrics(), store_dir=folder / site)
    proxy.black_hole = True  # down while the backlog builds up
    await service.start()
    rng = np.random.default_rng(0)
    per_batch = 500
    for start in range(0, readings // 2, per_batch):
        ts = np.arange(start, start + per_batch, dtype=float)
        for device in ("dev1", "dev2"):
            await bus.publish(Batch.of(f"{device}/temp", ts, 20 + rng.normal(0, 0.5, per_batch).round(2)))
    assert not service.transport.connected
    proxy.black_hole = False
    proxy.reset_all()  # the link comes back: the attempt stuck in the hole fails and paho reconnects
    began = time.monotonic()
    impairment = asyncio.create_task(_impair(case, proxy))
    while cloud_counts(cloud, site)[0] < readings:
        if time.monotonic() - began > 600:
            raise RuntimeError(f"{case}: {cloud_counts(cloud, site)[0]} of {readings} readings after 600 s")
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - began
    impairment.cancel()
    proxy.clear()
    await asyncio.sleep(0.3)
    total, distinct = cloud_counts(cloud, site)
    sent_bytes = service.bytes_sent
    await service.stop()
    await proxy.stop()
    return {"seconds": elapsed, "readings_per_s": readings / elapsed, "envelope_kB_per_s": sent_bytes / elapsed / 1000,
            "stored": total, "duplicates": total - distinct, "resets": proxy.stats.resets}


async def main(readings: int, cases: list[str]) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="edgeplane-impaired-") as tmp:
        folder = Path(tmp)
        broker = Mosquitto(folder / "broker", persistence=True)
        broker.start()
        cloud = CloudServer(broker.url, folder / "cloud")
        cloud.start()
        try:
            # first use of the cloud end, the codec and the broker's session pays one-time costs
            await run_case("warm_up", broker, cloud, folder, min(readings, 20_000))
            return {case: await run_case(case, broker, cloud, folder, readings) for case in cases}
        finally:
            cloud.stop()
            broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--readings", type=int, default=600_000)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    args = parser.parse_args()
    results = asyncio.run(main(args.readings, args.cases.split(",")))
    base = results.get("unimpaired", {}).get("readings_per_s")
    print(f"{'case':<12} {'seconds':>8} {'readings/s':>11} {'envelope kB/s':>14} {'vs unimpaired':>14} "
          f"{'stored':>8} {'dups':>5} {'resets':>6}")
    for case, r in results.items():
        ratio = f"{r['readings_per_s'] / base:.2f}x" if base else "-"
        print(f"{case:<12} {r['seconds']:8.2f} {r['readings_per_s']:11,.0f} {r['envelope_kB_per_s']:14.1f} {ratio:>14} "
              f"{r['stored']:8d} {r['duplicates']:5d} {r['resets']:6d}")
    bad = [c for c, r in results.items() if r["stored"] != args.readings or r["duplicates"]]
    if args.json:
        print(json.dumps({f"{case}_{key}": value for case, r in results.items() for key, value in r.items()}
                         | {"readings": args.readings}))
    sys.exit(1 if bad else 0)
