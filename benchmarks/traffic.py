"""Benchmark: SUMO steps/s and decision latency, raw libsumo against the whole edgeplane path.

raw:   libsumo stepping single-intersection and reading the same lane values the connector reads;
host:  the same simulation through the sumo connector, the bus, the traffic-signal solution (RL via
       the shared inference service, lockstep) and the guarded command path.

multi: one traffic-signal solution per signal of a multi-signal net (default cologne8) in one host,
       max-pressure behind the shield (no policy is shipped for those signals): decision p99 per
       intersection and the host process's CPU per intersection per simulated second, which says
       how many intersections one core can carry in real time.

    python benchmarks/traffic.py [--seconds 1200] [--multi cologne8 --multi-seconds 600] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path



def raw(seconds: int) -> float:
    from edgeplane_traffic.layout import layout_from_net
    from edgeplane_traffic.nets import resolve
    from edgeplane_traffic.sumo_runtime import sumo_binary, traci_module

    spec = resolve("single-intersection")
    layout = layout_from_net(spec.net)
    lanes = [*layout.lanes, *layout.out_lanes]
    sumo = traci_module(prefer_libsumo=True)
    sumo.start([sumo_binary(), "-n", str(spec.net), "-r", str(spec.route), "--no-step-log", "--no-warnings"])
    started = time.perf_counter()
    for _ in range(seconds):
        sumo.simulationStep()
        for lane in lanes:
            sumo.lane.getLastStepVehicleNumber(lane), sumo.lane.getLastStepHaltingNumber(lane)
            sumo.lane.getLastStepLength(lane), sumo.lane.getLastStepOccupancy(lane)
            sumo.lane.getLastStepMeanSpeed(lane), sumo.lane.getWaitingTime(lane)
    elapsed = time.perf_counter() - started
    sumo.close()
    return seconds / elapsed


async def host(seconds: int) -> tuple[float, float, float]:
    import edgeplane_traffic.plugin as plugin
    from edgeplane.testing import run_host

    with tempfile.TemporaryDirectory() as tmp:
        site = {
            "site": {"id": "bench"}, "clock": {"mode": "simulated"},
            "inference": {"providers": ["cpu"], "models": str(Path(tmp) / "models"), "preload": ["traffic-single-intersection"]},
            "devices": {"sumo": {"connector": "sumo", "net": "single-intersection", "seconds": seconds, "lockstep": ["signal/ack"]}},
            "solutions": {"signal": {"type": "traffic-signal", "device": "sumo", "net": "single-intersection", "controller": "rl",
                                     "deadline": 1.0}},
        }
        async with run_host(site, plugins=[plugin], store_dir=Path(tmp) / "store") as h:
            device = h.device("sumo")
            started = time.perf_counter()
            while device.health.state.value != "finished":
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            p50, p99 = h.solution("signal").latency_percentiles_ms()
    return seconds / elapsed, p50, p99


async def multi(net: str, seconds: int) -> dict[str, float]:
    import resource

    import edgeplane_traffic.plugin as plugin
    from edgeplane.testing import run_host
    from edgeplane_traffic.layout import layout_from_net, tls_ids
    from edgeplane_traffic.nets import resolve

    spec = resolve(net)
    ids = []
    for tls in tls_ids(spec.net):
        try:
            layout_from_net(spec.net, tls)
            ids.append(tls)
        except ValueError:
            continue
    names = {tls: f"sig{k}" for k, tls in enumerate(ids)}
    with tempfile.TemporaryDirectory() as tmp:
        site = {
            "site": {"id": "bench-multi"}, "clock": {"mode": "simulated"},
            "devices": {"sumo": {"connector": "sumo", "net": net, "seconds": seconds, "tls": ids,
                                 "lockstep": [f"{n}/ack" for n in names.values()]}},
            "solutions": {n: {"type": "traffic-signal", "device": "sumo", "net": net, "tls": tls, "controller": "max-pressure"}
                          for tls, n in names.items()},
        }
        async with run_host(site, plugins=[plugin], store_dir=Path(tmp) / "store") as h:
            device = h.device("sumo")
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            while device.health.state.value != "finished":
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            p99s = [h.solution(n).latency_percentiles_ms()[1] for n in names.values()]
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    per_signal = cpu / len(ids) / seconds  # CPU s per intersection per simulated s (SUMO included)
    return {"signals": len(ids), "steps_per_s": round(seconds / elapsed, 1), "decision_p99_ms_max": round(max(p99s), 3),
            "decision_p99_ms_median": round(sorted(p99s)[len(p99s) // 2], 3),
            "cpu_ms_per_signal_per_sim_s": round(per_signal * 1000, 3),
            "intersections_per_core_real_time": int(1.0 / per_signal) if per_signal > 0 else 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=1200)
    parser.add_argument("--multi", default=None, help="also run a multi-signal net, one solution per signal (e.g. cologne8)")
    parser.add_argument("--multi-seconds", type=int, default=600)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    extra: dict[str, float] = {}
    if args.multi:
        extra = asyncio.run(multi(args.multi, args.multi_seconds))
        for name, value in extra.items():
            print(f"{args.multi + ': ' + name:<52}{value:>10}")
    raw_rate = raw(args.seconds)
    host_rate, p50, p99 = asyncio.run(host(args.seconds))
    rows = [("raw libsumo, steps/s", f"{raw_rate:,.0f}"), ("through the host, steps/s", f"{host_rate:,.0f}"),
            ("host / raw", f"{host_rate / raw_rate:.2f}"), ("decision p50 (ms, RL via inference + guarded write)", f"{p50:.3f}"),
            ("decision p99 (ms)", f"{p99:.3f}")]
    for name, value in rows:
        print(f"{name:<52}{value:>10}")
    if args.json:
        print(json.dumps({"raw_steps_per_s": round(raw_rate), "host_steps_per_s": round(host_rate),
                          "ratio_vs_raw": round(host_rate / raw_rate, 3), "decision_p50_ms": round(p50, 3),
                          "decision_p99_ms": round(p99, 3), **{f"multi_{k}": v for k, v in extra.items()}}))


if __name__ == "__main__":
    main()
