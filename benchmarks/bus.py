"""Bus throughput: 1,000-point batches to 3 subscribers, single readings, overflow under a slow subscriber.

Baseline in the same run: the same messages through plain asyncio.Queue objects (one per
subscriber), which is what a hand-rolled fan-out would use.

    python benchmarks/bus.py [--seconds 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np

from edgeplane.bus import Batch, Bus, Overflow


async def consume(sub, count):
    for _ in range(count):
        await sub.get()


async def fan_out_bus(batches: list[Batch], subscribers: int) -> float:
    bus = Bus()
    subs = [bus.subscribe("inv*/#", name=f"s{i}", maxsize=1000) for i in range(subscribers)]
    consumers = [asyncio.create_task(consume(s, len(batches))) for s in subs]
    start = time.perf_counter()
    for batch in batches:
        await bus.publish(batch)
    await asyncio.gather(*consumers)
    return time.perf_counter() - start


async def fan_out_queue(batches: list[Batch], subscribers: int) -> float:
    queues = [asyncio.Queue(maxsize=1000) for _ in range(subscribers)]

    async def drain(q):
        for _ in range(len(batches)):
            await q.get()

    consumers = [asyncio.create_task(drain(q)) for q in queues]
    start = time.perf_counter()
    for batch in batches:
        for q in queues:
            await q.put(batch)
    await asyncio.gather(*consumers)
    return time.perf_counter() - start


async def single_readings(n: int) -> tuple[float, float]:
    """Readings/s when each reading is its own batch: prebuilt, and built with Batch.of."""
    bus = Bus()
    sub = bus.subscribe("inv1/ac_power", maxsize=1000)
    prebuilt = [Batch("inv1/ac_power", np.array([float(i)]), np.array([1.0])) for i in range(n)]
    consumer = asyncio.create_task(consume(sub, n))
    start = time.perf_counter()
    for batch in prebuilt:
        await bus.publish(batch)
    await consumer
    publish_only = n / (time.perf_counter() - start)
    consumer = asyncio.create_task(consume(sub, n))
    start = time.perf_counter()
    for i in range(n):
        await bus.publish(Batch.of("inv1/ac_power", float(i), 1.0))
    await consumer
    with_build = n / (time.perf_counter() - start)
    return publish_only, with_build


async def slow_subscriber(n: int, overflow: Overflow) -> dict:
    bus = Bus()
    slow = bus.subscribe("#", name="slow", maxsize=100, overflow=overflow)
    received = 0

    async def consumer():
        nonlocal received
        while True:
            await slow.get()
            received += 1
            await asyncio.sleep(0.0001 if received % 10 == 0 else 0)  # ten times slower than the source

    task = asyncio.create_task(consumer())
    start = time.perf_counter()
    for i in range(n):
        await bus.publish(Batch.of("inv1/p", float(i), 1.0))
        if i % 10 == 0:
            await asyncio.sleep(0)  # a real source waits on I/O now and then
    elapsed = time.perf_counter() - start
    await asyncio.sleep(0.05)
    task.cancel()
    return {"published": n, "delivered": received + slow.depth, "dropped": slow.dropped, "seconds": elapsed}


async def main_async(seconds: float) -> dict:
    batch_points = 1000
    n_batches = max(200, int(seconds * 20_000))
    ts = np.arange(batch_points, dtype=np.float64)
    batches = [Batch(f"inv{i % 10}/ac_power", ts, np.random.rand(batch_points)) for i in range(n_batches)]
    await fan_out_bus(batches[:200], 3)  # warm up the route cache and the allocator
    bus_s = min([await fan_out_bus(batches, 3) for _ in range(3)])
    queue_s = min([await fan_out_queue(batches, 3) for _ in range(3)])
    single_n = max(20_000, int(seconds * 200_000))
    publish_only, with_build = max([await single_readings(single_n) for _ in range(3)])
    drop = await slow_subscriber(20_000, Overflow.DROP_OLDEST)
    block = await slow_subscriber(20_000, Overflow.BLOCK)
    points = n_batches * batch_points
    return {
        "batch_points_per_s": points / bus_s,  # points delivered into the bus, each to 3 subscribers
        "batch_points_per_s_asyncio_queue": points / queue_s,
        "ratio_vs_asyncio_queue": queue_s / bus_s,
        "single_readings_per_s": publish_only,
        "single_readings_per_s_with_batch_of": with_build,
        "drop_oldest_published": drop["published"],
        "drop_oldest_delivered": drop["delivered"],
        "drop_oldest_dropped": drop["dropped"],
        "block_published": block["published"],
        "block_delivered": block["delivered"],
        "block_dropped": block["dropped"],
        "block_publisher_s": block["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="rough length of each measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    r = asyncio.run(main_async(args.seconds))
    rows = [
        ("1,000-point batches, 3 subscribers: points/s", f"{r['batch_points_per_s']:,.0f}", ">= 10,000,000"),
        ("  same through asyncio.Queue fan-out: points/s", f"{r['batch_points_per_s_asyncio_queue']:,.0f}", ""),
        ("  bus / asyncio.Queue", f"{r['ratio_vs_asyncio_queue']:.2f}x", ""),
        ("single readings (prebuilt batches): readings/s", f"{r['single_readings_per_s']:,.0f}", ">= 200,000"),
        ("single readings built with Batch.of: readings/s", f"{r['single_readings_per_s_with_batch_of']:,.0f}", ""),
        ("slow subscriber, drop_oldest: published/delivered/dropped",
         f"{r['drop_oldest_published']}/{r['drop_oldest_delivered']}/{r['drop_oldest_dropped']}", "delivered+dropped = published"),
        ("slow subscriber, block: published/delivered/dropped",
         f"{r['block_published']}/{r['block_delivered']}/{r['block_dropped']}", "dropped = 0"),
    ]
    width = max(len(a) for a, _, _ in rows)
    print(f"{'figure':<{width}}  {'value':>22}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>22}  {target}")
    if args.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
