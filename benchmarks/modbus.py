"""Modbus connector throughput and read coalescing, against a raw pymodbus loop in the same run.

1. Registers per second: a dense map (float32 points over N registers) polled back to back by the
   connector inside a host, every point decoded and published on the bus, against a raw
   pymodbus loop that reads the same blocks and decodes nothing. The server (pymodbus) runs in
   its own process, as a device would. Both sides run in one process in short alternating
   rounds; the ratio is the median of the rounds' ratios (its range is printed beside it).
   Wall-clock ratios swing with load from other processes on a small shared machine, so the
   CPU time this process spends per register is compared too (raw over connector: 1.0 means the
   connector costs no more CPU per register than a loop that decodes nothing). The
   consumer on the bus takes multi-point batches (``multipoint=True``, as the sync layer does);
   the dense map is also run with a consumer that takes one single-point batch per point (the
   single-point layer, as solutions do).
2. Requests per poll for a scattered 500-point map, with and without coalescing.

    python benchmarks/modbus.py [--seconds 6] [--rounds 12] [--registers 500] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time

from edgeplane.testing import free_port

SERVER = """
import asyncio, sys
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
async def main():
    dev = SimDevice(1, simdata=[SimData(0, values=[i % 65536 for i in range(20000)], datatype=DataType.REGISTERS)])
    server = ModbusTcpServer(dev, address=("127.0.0.1", int(sys.argv[1])))
    await server.serve_forever()
asyncio.run(main())
"""


async def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("benchmark server did not start")


def site(port: int, points: dict, **extra) -> dict:
    return {"site": {"id": "bench"}, "devices": {"d": {"connector": "modbus", "url": f"tcp://127.0.0.1:{port}",
                                                       "points": points, "timeout": "2s", **extra}}}


async def raw_loop(client, blocks: list[tuple[int, int]], seconds: float) -> tuple[int, int]:
    """The raw side: read the same blocks back to back, decode nothing."""
    registers = requests = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for start, count in blocks:
            response = await client.read_holding_registers(start, count=count, device_id=1)
            registers += len(response.registers)
            requests += 1
    return registers, requests


async def compare(port: int, points: dict, args: argparse.Namespace, multipoint: bool = True) -> dict:
    """Connector and raw loop in short alternating rounds inside one process.

    The connector runs inside a host (decoding, publishing on the bus, a consumer subscribed to
    every point); each of its rounds polls back to back with ``poll_once`` (what ``poll: 0``
    does, minus the scheduler's zero sleep). Between rounds the consumer's queue is emptied, as a
    consumer would, outside the timed part. Load from elsewhere on the machine comes and goes in
    seconds: adjacent short rounds see the same load, and the median of the per-round ratios
    sets a burst aside.
    """
    from pymodbus.client import AsyncModbusTcpClient

    from edgeplane.testing import run_host
    from edgeplane_modbus import plugin

    per_round = args.seconds / args.rounds
    totals = {"connector_registers": 0, "connector_requests": 0, "connector_points": 0, "raw_registers": 0,
              "raw_requests": 0, "connector_cpu_s": 0.0, "raw_cpu_s": 0.0}
    ratios, cpu_ratios = [], []
    async with run_host(site(port, points, poll="1h"), plugins=[plugin], store_dir=None, http_port=None) as host:
        dev = host.device("d")
        while dev._polls < 1:  # the host's own first poll
            await asyncio.sleep(0.01)
        blocks = [(b.start, b.count) for b in dev.blocks]
        per_poll = sum(c for _, c in blocks)
        try:
            sub = host.bus.subscribe("d/#", maxsize=10_000_000, multipoint=multipoint)
        except TypeError:  # a commit from before multi-point batches: the same script measures it
            sub = host.bus.subscribe("d/#", maxsize=10_000_000)
        client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0)
        await client.connect()
        await raw_loop(client, blocks, 0.2)  # warm up both sides
        for _ in range(3):
            await dev.poll_once()
        while sub.get_nowait() is not None:
            pass
        for _ in range(args.rounds):
            points0 = host.bus.published_points
            polls = 0
            cpu0, began = time.process_time(), time.perf_counter()
            end = began + per_round
            while time.perf_counter() < end:
                await dev.poll_once()
                polls += 1
            c_rate = polls * per_poll / (time.perf_counter() - began)
            c_cpu = time.process_time() - cpu0
            totals["connector_points"] += host.bus.published_points - points0
            while sub.get_nowait() is not None:
                pass
            cpu0, began = time.process_time(), time.perf_counter()
            regs, reqs = await raw_loop(client, blocks, per_round)
            r_rate = regs / (time.perf_counter() - began)
            r_cpu = time.process_time() - cpu0
            totals["connector_cpu_s"] += c_cpu
            totals["raw_cpu_s"] += r_cpu
            # CPU of this process per register, raw over connector: what load elsewhere barely moves
            cpu_ratios.append((r_cpu / regs) / (c_cpu / (polls * per_poll)) if regs and polls and c_cpu else float("nan"))
            totals["connector_registers"] += polls * per_poll
            totals["connector_requests"] += polls * len(blocks)
            totals["raw_registers"] += regs
            totals["raw_requests"] += reqs
            ratios.append(c_rate / r_rate)
        client.close()
        sub.close()
    ratios.sort()
    cpu_ratios = sorted(r for r in cpu_ratios if r == r)
    total_cpu_ratio = ((totals["raw_cpu_s"] / totals["raw_registers"]) / (totals["connector_cpu_s"] / totals["connector_registers"])
                       if totals["raw_registers"] and totals["connector_cpu_s"] else None)
    return {**totals, "blocks": blocks, "ratio": round(ratios[len(ratios) // 2], 3),
            "ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)],
            "cpu_ratio": round(total_cpu_ratio, 3) if total_cpu_ratio else None,
            "cpu_ratio_range": [round(cpu_ratios[0], 3), round(cpu_ratios[-1], 3)] if cpu_ratios else None}


async def scattered_requests(port: int, n_points: int, coalesce: bool) -> int:
    from edgeplane.testing import run_host
    from edgeplane_modbus import plugin

    rng = random.Random(7)
    types = ["uint16", "int16", "float32", "uint32", "float64"]
    addresses = sorted(rng.sample(range(0, 4000, 4), n_points))  # 500 of 1000 four-register slots
    points = {f"p{i}": {"address": a, "type": rng.choice(types)} for i, a in enumerate(addresses)}
    async with run_host(site(port, points, poll="1h", coalesce=coalesce), plugins=[plugin], store_dir=None,
                        http_port=None) as host:
        dev = host.device("d")
        while dev.requests < len(dev.blocks):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        return dev.requests


async def main(args: argparse.Namespace) -> dict:
    import tempfile, os

    os.environ.setdefault("EDGEPLANE_DATA_DIR", tempfile.mkdtemp(prefix="edgeplane-bench-"))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_port(port)
        points = {f"f{a}": {"address": a, "type": "float32"} for a in range(0, args.registers, 2)}
        dense = await compare(port, points, args)
        single_point = await compare(port, points, args, multipoint=False)
        # a typical device map: one float32 every 10 registers over the same span
        sparse_points = {f"s{a}": {"address": a, "type": "float32"} for a in range(0, args.registers, 10)}
        sparse = await compare(port, sparse_points, args)
        coalesced = await scattered_requests(port, 500, True)
        single = await scattered_requests(port, 500, False)
    finally:
        server.terminate()
        server.wait(10)
    s = args.seconds
    return {
        "map_registers": args.registers, "map_points": len(points), "read_blocks": len(dense["blocks"]),
        "rounds": args.rounds, "seconds_per_side": s,
        "connector_registers_per_s": round(dense["connector_registers"] / s),
        "raw_registers_per_s": round(dense["raw_registers"] / s),
        "ratio_vs_raw": dense["ratio"], "ratio_vs_raw_range": dense["ratio_range"],
        "cpu_ratio_vs_raw": dense["cpu_ratio"], "cpu_ratio_vs_raw_range": dense["cpu_ratio_range"],
        "connector_points_per_s": round(dense["connector_points"] / s),
        "connector_requests_per_s": round(dense["connector_requests"] / s),
        "raw_requests_per_s": round(dense["raw_requests"] / s),
        "single_point_consumer_ratio_vs_raw": single_point["ratio"],
        "single_point_consumer_ratio_vs_raw_range": single_point["ratio_range"],
        "single_point_consumer_cpu_ratio_vs_raw": single_point["cpu_ratio"],
        "sparse_map_points": len(sparse_points),
        "sparse_connector_registers_per_s": round(sparse["connector_registers"] / s),
        "sparse_raw_registers_per_s": round(sparse["raw_registers"] / s),
        "sparse_ratio_vs_raw": sparse["ratio"], "sparse_ratio_vs_raw_range": sparse["ratio_range"],
        "sparse_cpu_ratio_vs_raw": sparse["cpu_ratio"], "sparse_cpu_ratio_vs_raw_range": sparse["cpu_ratio_range"],
        "scattered_points": 500, "scattered_requests_coalesced": coalesced, "scattered_requests_uncoalesced": single,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured time per side of each comparison")
    parser.add_argument("--rounds", type=int, default=12, help="alternating connector/raw rounds the time is split into")
    parser.add_argument("--registers", type=int, default=500, help="size of the dense map, registers")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    import logging

    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    result = asyncio.run(main(args))
    rows = [
        ("dense map", f"{result['map_points']} float32 points, {result['map_registers']} registers, "
                      f"{result['read_blocks']} reads per poll"),
        ("connector registers/s (decoded, on the bus)", f"{result['connector_registers_per_s']:,}"),
        ("raw pymodbus loop registers/s (same blocks)", f"{result['raw_registers_per_s']:,}"),
        ("ratio connector / raw (target >= 0.9), median of rounds", f"{result['ratio_vs_raw']} "
                                                                  f"(rounds: {result['ratio_vs_raw_range']})"),
        ("CPU ratio: raw CPU/register over connector CPU/register", f"{result['cpu_ratio_vs_raw']} "
                                                                   f"(rounds: {result['cpu_ratio_vs_raw_range']})"),
        ("connector points/s published", f"{result['connector_points_per_s']:,}"),
        ("ratio with a single-point consumer instead", f"{result['single_point_consumer_ratio_vs_raw']} "
                                                       f"(rounds: {result['single_point_consumer_ratio_vs_raw_range']}); "
                                                       f"CPU ratio {result['single_point_consumer_cpu_ratio_vs_raw']}"),
        ("sparse map", f"{result['sparse_map_points']} float32 points over {result['map_registers']} registers"),
        ("sparse: connector registers/s", f"{result['sparse_connector_registers_per_s']:,}"),
        ("sparse: raw pymodbus registers/s", f"{result['sparse_raw_registers_per_s']:,}"),
        ("sparse: ratio connector / raw", f"{result['sparse_ratio_vs_raw']} (rounds: {result['sparse_ratio_vs_raw_range']})"),
        ("sparse: CPU ratio", f"{result['sparse_cpu_ratio_vs_raw']} (rounds: {result['sparse_cpu_ratio_vs_raw_range']})"),
        ("requests for 500 scattered points, coalesced", f"{result['scattered_requests_coalesced']}"),
        ("requests for 500 scattered points, one per point", f"{result['scattered_requests_uncoalesced']}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.json:
        print(json.dumps(result))
