"""Benchmark: SUMO steps/s and decision latency, raw libsumo against the whole edgeplane path.

raw:   libsumo stepping single-intersection and reading the same lane values the connector reads;
host:  the same simulation through the sumo connector, the bus, the traffic-signal solution (RL via
       the shared inference service, lockstep) and the guarded command path.

multi: one traffic-signal solution per signal of a multi-signal net (default cologne8) in one host,
       each with its shipped policy through the shared inference service (``traffic-<net>-<tls>``
       per signal, or the net's shared ``traffic-<net>``; max-pressure where none is shipped, or with
       ``--multi-controller max-pressure``): decision p50/p99 per intersection, the host process's CPU
       per intersection per simulated second (how many intersections one core carries in real
       time), and what part of the p99 is load: the load average during the run, and the event
       loop's own lag (a probe that sleeps 5 ms and measures how late it wakes) beside it.
       ``--multi-speed 1`` runs the simulation in real time, as a field node runs: the default (as
       fast as possible) keeps the host's one event loop saturated, so every decision queues behind
       the other signals' readings; that measures throughput, not a field node's latency.

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


def multi_policies(net: str, ids: list[str]) -> dict[str, str]:
    """The model name each signal's RL solution uses: its own (``traffic-<net>-<tls>``), else the net's shared one."""
    from edgeplane_traffic.models import PolicyFiles, model_name_for, shipped_policy

    shared = shipped_policy(net)
    found = {}
    for tls in ids:
        if shipped_policy(f"{net}-{tls}") is not None:
            found[tls] = model_name_for(f"{net}-{tls}")
        elif shared is not None and PolicyFiles(shared).metadata.get("shared"):
            found[tls] = model_name_for(net)
    return found if set(found) == set(ids) else {}


async def multi(net: str, seconds: int, controller: str = "auto", speed: float = 0.0,
                gc_freeze: bool = False, gc_gen0: int | None = None) -> dict[str, float | str]:
    import gc
    import os
    import resource

    import numpy as np

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
    models = multi_policies(net, ids) if controller in ("auto", "rl") else {}
    if controller == "rl" and not models:
        raise SystemExit(f"--multi-controller rl: no policy is shipped for every signal of {net}")
    kind = "rl" if models else "max-pressure"
    with tempfile.TemporaryDirectory() as tmp:
        site: dict = {
            "site": {"id": "bench-multi"}, "clock": {"mode": "simulated"},
            "devices": {"sumo": {"connector": "sumo", "net": net, "seconds": seconds, "tls": ids, "speed": speed,
                                 "lockstep": [f"{n}/ack" for n in names.values()]}},
            "solutions": {n: {"type": "traffic-signal", "device": "sumo", "net": net, "tls": tls, "controller": kind,
                              **({"model": models[tls], "deadline": 1.0} if models else {})}
                          for tls, n in names.items()},
        }
        if models:
            site["inference"] = {"providers": ["cpu"], "models": str(Path(tmp) / "models"), "preload": sorted(set(models.values()))}
        lags: list[float] = []

        async def probe() -> None:  # how late the event loop wakes a 5 ms sleep: the part of a latency that is waiting
            while True:
                started = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - started - 0.005)

        pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}  # collector pauses by generation, s
        gc_started = [0.0]

        def on_gc(phase: str, info: dict) -> None:
            if phase == "start":
                gc_started[0] = time.perf_counter()
            else:
                pauses[info["generation"]].append(time.perf_counter() - gc_started[0])

        thresholds = gc.get_threshold()
        async with run_host(site, plugins=[plugin], store_dir=Path(tmp) / "store") as h:
            if gc_freeze:  # start-up objects out of the collector's reach: a full collection no longer walks them
                gc.collect()
                gc.freeze()
            if gc_gen0:  # fewer young collections (each also ages survivors toward the costly full ones)
                gc.set_threshold(gc_gen0, *thresholds[1:])
            gc.callbacks.append(on_gc)
            device = h.device("sumo")
            load0 = os.getloadavg()[0]
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            prober = asyncio.get_running_loop().create_task(probe())
            while device.health.state.value != "finished":
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            prober.cancel()
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            load1 = os.getloadavg()[0]
            percentiles = [h.solution(n).latency_percentiles_ms() for n in names.values()]
            worst = max(max(h.solution(n).decision_latencies_s, default=0.0) for n in names.values())
            gc.callbacks.remove(on_gc)
            gc.set_threshold(*thresholds)
            if gc_freeze:
                gc.unfreeze()
            fallbacks = sum(sum(h.solution(n).controller.fallbacks.values()) for n in names.values())
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    per_signal = cpu / len(ids) / seconds  # CPU s per intersection per simulated s (SUMO included)
    p50s = sorted(p[0] for p in percentiles)
    p99s = sorted(p[1] for p in percentiles)
    lag = np.asarray(lags) * 1000 if lags else np.zeros(1)
    return {"controller": kind, "signals": len(ids), "speed": speed, "gc_freeze": gc_freeze, "steps_per_s": round(seconds / elapsed, 1),
            "decision_p50_ms_median": round(p50s[len(p50s) // 2], 3),
            "decision_p99_ms_max": round(p99s[-1], 3), "decision_p99_ms_median": round(p99s[len(p99s) // 2], 3),
            "decision_max_ms": round(worst * 1000, 3),
            "fallbacks": fallbacks, "gc_gen0_threshold": gc_gen0 or thresholds[0],
            **{f"gc_gen{g}_collections": len(p) for g, p in pauses.items()},
            **{f"gc_gen{g}_pause_max_ms": round(max(p, default=0.0) * 1000, 3) for g, p in pauses.items()},
            "gc_pause_total_ms": round(sum(sum(p) for p in pauses.values()) * 1000, 1),
            "cpu_ms_per_signal_per_sim_s": round(per_signal * 1000, 3),
            "intersections_per_core_real_time": int(1.0 / per_signal) if per_signal > 0 else 0,
            "process_cpu_share": round(cpu / elapsed, 2),
            "loop_lag_p50_ms": round(float(np.percentile(lag, 50)), 3), "loop_lag_p99_ms": round(float(np.percentile(lag, 99)), 3),
            "load_average": round((load0 + load1) / 2, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=1200)
    parser.add_argument("--multi", default=None, help="also run a multi-signal net, one solution per signal (e.g. cologne8)")
    parser.add_argument("--multi-seconds", type=int, default=600)
    parser.add_argument("--multi-controller", choices=["auto", "rl", "max-pressure"], default="auto",
                        help="auto: the shipped policies where every signal has one, else max-pressure")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="multi: gc.freeze() once the host has started (what the decision p99 is without full "
                             "collections walking every start-up object)")
    parser.add_argument("--gc-gen0", type=int, default=None,
                        help="multi: the collector's generation-0 threshold once the host has started (Python's default 700 or 2000)")
    parser.add_argument("--multi-speed", type=float, default=0.0,
                        help="simulated s per wall s (0: as fast as possible, so the host is never idle; 1: real time, as in the field)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    extra: dict[str, float | str] = {}
    if args.multi:
        extra = asyncio.run(multi(args.multi, args.multi_seconds, args.multi_controller, args.multi_speed,
                                  args.gc_freeze, args.gc_gen0))
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
