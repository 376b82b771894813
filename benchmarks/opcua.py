"""Data-change notifications per second: the OPC UA connector into the bus vs a raw asyncua handler.

One asyncua server (``edgeplane_opcua.simulator``) runs in a subprocess and changes 1,000
variables as fast as it can (every ``--period``). In this process, in turns on the same server:

* raw: an asyncua Client, one subscription over the 1,000 nodes, a handler that counts
  ``datachange_notification`` calls;
* connector: an edgeplane host with one ``opcua`` device of 1,000 subscribed points, and a bus
  subscriber that drains and counts the readings.

Both use the same publishing and sampling intervals. Printed per side: notifications/s and the
client CPU time per notification (which shows the connector's cost even when the server is
what limits the rate). ``--json`` adds one JSON object as the last line.

    python benchmarks/opcua.py [--items 1000] [--seconds 8] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from edgeplane.testing import free_port

REPO = Path(__file__).resolve().parents[1]


def start_server(items: int, period: float) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgeplane_opcua.simulator", "--port", str(port), "--items", str(items),
                             "--period", str(period), "--window", "16"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    ready = threading.Event()

    def drain() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("READY"):
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(60):
        proc.kill()
        raise SystemExit("the simulator did not start within 60 s")
    return proc, f"opc.tcp://127.0.0.1:{port}/edgeplane/sim/"


async def measure_raw(url: str, items: int, seconds: float, warmup: float, interval_ms: float) -> tuple[float, float]:
    from asyncua import Client

    class Counter:
        count = 0

        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            Counter.count += 1

    client = Client(url, timeout=30)
    await client.connect()
    try:
        sub = await client.create_subscription(interval_ms, Counter())
        nodes = [client.get_node(f"ns=2;s=Bench.{i}") for i in range(items)]
        for start in range(0, items, 500):
            await sub.subscribe_data_change(nodes[start:start + 500], sampling_interval=interval_ms / 2)
        await asyncio.sleep(warmup)
        n0, c0, t0 = Counter.count, time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        n1, c1, t1 = Counter.count, time.process_time(), time.perf_counter()
        await sub.delete()
    finally:
        await client.disconnect()
    return (n1 - n0) / (t1 - t0), (c1 - c0) / max(n1 - n0, 1)


async def measure_connector(url: str, items: int, seconds: float, warmup: float, interval_ms: float) -> tuple[float, float]:
    from edgeplane.testing import run_host
    from edgeplane_opcua import plugin

    points = {f"v{i}": {"node": f"ns=2;s=Bench.{i}"} for i in range(items)}
    site = {"site": {"id": "bench"}, "devices": {"bench": {
        "connector": "opcua", "url": url, "points": points, "timeout": 30,
        "publishing_interval": interval_ms / 1000, "sampling_interval": interval_ms / 2000}}}
    import tempfile

    with tempfile.TemporaryDirectory() as store:
        async with run_host(site, plugins=[plugin], store_dir=Path(store)) as host:
            sub = host.bus.subscribe("bench/#", maxsize=100_000)
            received = 0

            async def drain() -> None:
                nonlocal received
                async for batch in sub:
                    received += len(batch.ts)  # type: ignore[union-attr]

            consumer = asyncio.create_task(drain())
            await asyncio.sleep(warmup)
            n0, c0, t0 = received, time.process_time(), time.perf_counter()
            await asyncio.sleep(seconds)
            n1, c1, t1 = received, time.process_time(), time.perf_counter()
            consumer.cancel()
            health = host.health()["device:bench"]["state"]
    if health != "ok":
        print(f"warning: the device was {health} during the run", file=sys.stderr)
    return (n1 - n0) / (t1 - t0), (c1 - c0) / max(n1 - n0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured time per side and round")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--period", type=float, default=0.02, help="the server's change period (s)")
    parser.add_argument("--interval-ms", type=float, default=50.0, help="publishing interval (sampling: half)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    proc, url = start_server(args.items, args.period)
    raw: list[tuple[float, float]] = []
    connector: list[tuple[float, float]] = []
    try:
        for _ in range(args.rounds):
            raw.append(asyncio.run(measure_raw(url, args.items, args.seconds, args.warmup, args.interval_ms)))
            connector.append(asyncio.run(measure_connector(url, args.items, args.seconds, args.warmup, args.interval_ms)))
    finally:
        proc.terminate()
        proc.wait(10)
    raw_rate = statistics.median(r for r, _ in raw)
    con_rate = statistics.median(r for r, _ in connector)
    raw_cpu = statistics.median(c for _, c in raw) * 1e6
    con_cpu = statistics.median(c for _, c in connector) * 1e6
    ratio = con_rate / raw_rate if raw_rate else 0.0
    cpu_ratio = raw_cpu / con_cpu if con_cpu else 0.0
    print(f"OPC UA data changes, {args.items} monitored items, publishing {args.interval_ms:g} ms, "
          f"{args.rounds} rounds x {args.seconds:g} s (median)")
    print(f"{'side':<32}{'notifications/s':>16}{'client CPU us/notif':>22}")
    print(f"{'raw asyncua handler':<32}{raw_rate:>16,.0f}{raw_cpu:>22.1f}")
    print(f"{'connector -> bus':<32}{con_rate:>16,.0f}{con_cpu:>22.1f}")
    print(f"ratio connector/raw: {ratio:.2f} (target >= 0.8); CPU efficiency raw/connector: {cpu_ratio:.2f}")
    if args.json:
        print(json.dumps({
            "items": args.items,
            "raw_notifications_per_s": round(raw_rate, 1),
            "connector_notifications_per_s": round(con_rate, 1),
            "ratio_vs_raw": round(ratio, 3),
            "raw_cpu_us_per_notification": round(raw_cpu, 2),
            "connector_cpu_us_per_notification": round(con_cpu, 2),
            "cpu_efficiency_vs_raw": round(cpu_ratio, 3),
        }))


if __name__ == "__main__":
    main()
