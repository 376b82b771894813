"""Modbus connector throughput and read coalescing, against a raw pymodbus loop in the same run.

1. Registers per second: a dense map (float32 points over N registers) polled back to back by the
   connector inside a host, every point decoded and published on the bus, against a raw
   pymodbus loop that reads the same blocks and decodes nothing. The server (pymodbus) runs in
   its own process, as a device would. The consumer on the bus takes multi-point batches
   (``multipoint=True``, as the sync layer does); the dense map is also run with a consumer that
   takes one single-point batch per point (the single-point layer, as solutions do).
2. Requests per poll for a scattered 500-point map, with and without coalescing.

    python benchmarks/modbus.py [--seconds 6] [--rounds 3] [--registers 500] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import time

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


async def raw_loop(port: int, blocks: list[tuple[int, int]], seconds: float) -> tuple[int, int]:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0)
    await client.connect()
    registers = requests = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for start, count in blocks:
            response = await client.read_holding_registers(start, count=count, device_id=1)
            registers += len(response.registers)
            requests += 1
    client.close()
    return registers, requests


async def connector_loop(port: int, points: dict, seconds: float,
                         multipoint: bool = True) -> tuple[int, int, int, list[tuple[int, int]]]:
    from edgeplane.testing import run_host
    from edgeplane_modbus import plugin

    async with run_host(site(port, points, poll=0), plugins=[plugin], store_dir=None, http_port=None) as host:
        dev = host.device("d")
        blocks = [(b.start, b.count) for b in dev.blocks]
        # a consumer: every reading is queued for it
        sub = host.bus.subscribe("d/#", maxsize=10_000_000, multipoint=multipoint)
        await asyncio.sleep(0.5)  # warm up
        polls0, points0 = dev._polls, host.bus.published_points
        began = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - began
        polls, published = dev._polls - polls0, host.bus.published_points - points0
        sub.close()
    registers = polls * sum(c for _, c in blocks)
    return int(registers / elapsed * seconds), polls * len(blocks), published, blocks


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


async def alternate(port: int, points: dict, args: argparse.Namespace, multipoint: bool = True) -> tuple:
    """Connector and raw loop in alternating rounds, so that load from elsewhere on the machine
    falls on both sides alike; totals over ``args.seconds`` per side."""
    per_round = args.seconds / args.rounds
    c_regs = c_reqs = c_points = r_regs = r_reqs = 0
    blocks: list[tuple[int, int]] = []
    for _ in range(args.rounds):
        regs, reqs, published, blocks = await connector_loop(port, points, per_round, multipoint)
        c_regs, c_reqs, c_points = c_regs + regs, c_reqs + reqs, c_points + published
        regs, reqs = await raw_loop(port, blocks, per_round)
        r_regs, r_reqs = r_regs + regs, r_reqs + reqs
    return c_regs, c_reqs, c_points, blocks, r_regs, r_reqs


async def main(args: argparse.Namespace) -> dict:
    import tempfile, os

    os.environ.setdefault("EDGEPLANE_DATA_DIR", tempfile.mkdtemp(prefix="edgeplane-bench-"))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_port(port)
        points = {f"f{a}": {"address": a, "type": "float32"} for a in range(0, args.registers, 2)}
        c_regs, c_reqs, c_points, blocks, r_regs, r_reqs = await alternate(port, points, args)
        p_regs, _, _, _, pr_regs, _ = await alternate(port, points, args, multipoint=False)
        # a typical device map: one float32 every 10 registers over the same span
        sparse = {f"s{a}": {"address": a, "type": "float32"} for a in range(0, args.registers, 10)}
        sc_regs, _, sc_points, sparse_blocks, sr_regs, _ = await alternate(port, sparse, args)
        coalesced = await scattered_requests(port, 500, True)
        single = await scattered_requests(port, 500, False)
    finally:
        server.terminate()
        server.wait(10)
    s = args.seconds
    return {
        "map_registers": args.registers, "map_points": len(points), "read_blocks": len(blocks),
        "connector_registers_per_s": round(c_regs / s), "raw_registers_per_s": round(r_regs / s),
        "ratio_vs_raw": round(c_regs / r_regs, 3) if r_regs else None,
        "connector_points_per_s": round(c_points / s),
        "single_point_consumer_ratio_vs_raw": round(p_regs / pr_regs, 3) if pr_regs else None, "connector_requests_per_s": round(c_reqs / s),
        "raw_requests_per_s": round(r_reqs / s),
        "sparse_map_points": len(sparse), "sparse_connector_registers_per_s": round(sc_regs / s),
        "sparse_raw_registers_per_s": round(sr_regs / s),
        "sparse_ratio_vs_raw": round(sc_regs / sr_regs, 3) if sr_regs else None,
        "scattered_points": 500, "scattered_requests_coalesced": coalesced, "scattered_requests_uncoalesced": single,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured time per side of each comparison")
    parser.add_argument("--rounds", type=int, default=3, help="alternating connector/raw rounds the time is split into")
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
        ("ratio connector / raw (target >= 0.9)", f"{result['ratio_vs_raw']}"),
        ("connector points/s published", f"{result['connector_points_per_s']:,}"),
        ("ratio with a single-point consumer instead", f"{result['single_point_consumer_ratio_vs_raw']}"),
        ("sparse map", f"{result['sparse_map_points']} float32 points over {result['map_registers']} registers"),
        ("sparse: connector registers/s", f"{result['sparse_connector_registers_per_s']:,}"),
        ("sparse: raw pymodbus registers/s", f"{result['sparse_raw_registers_per_s']:,}"),
        ("sparse: ratio connector / raw", f"{result['sparse_ratio_vs_raw']}"),
        ("requests for 500 scattered points, coalesced", f"{result['scattered_requests_coalesced']}"),
        ("requests for 500 scattered points, one per point", f"{result['scattered_requests_uncoalesced']}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.json:
        print(json.dumps(result))
