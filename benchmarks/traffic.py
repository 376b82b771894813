"""Benchmark: SUMO steps/s and decision latency, raw libsumo against the whole edgeplane path.

raw:   libsumo stepping single-intersection and reading the same lane values the connector reads;
host:  the same simulation through the sumo connector, the bus, the traffic-signal solution (RL via
       the shared inference service, lockstep) and the guarded command path.

multi: one traffic-signal solution per signal of a multi-signal net (default cologne8) in one host,
       each with its shipped policy through the shared inference service (``traffic-<net>-<tls>``
       per signal, or the net's shared ``traffic-<net>``; max-pressure where none is shipped, or with
       ``--multi-controller max-pressure``): decision p50/p99 per intersection, the host process's CPU
       per intersection per simulated second (how many intersections one core carries in real
       time), and what part of the p99 is load: the load average during the run, the event loop's CPU
       per step, and what the process's threads waited for a core after waking (per step and per
       wake-up, from /proc schedstat), with the OS scheduling policy it ran under (run it under
       ``chrt -r 1`` to see the figures without that wait); ``--loop-probe-ms 5`` adds the event
       loop's own lag (a probe that sleeps 5 ms and measures how late it wakes; loop work itself).
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


def thread_sched() -> dict[str, tuple[int, int, int]]:
    """Per thread of this process (by name; the event loop is MainThread): CPU ns, ns runnable but
    waiting for a core, and times scheduled (Linux /proc schedstat); empty elsewhere."""
    import os
    import threading

    names = {str(t.native_id): t.name for t in threading.enumerate()}
    found: dict[str, tuple[int, int, int]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                cpu, wait, slices = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            continue
        found[f"{names.get(tid, 'other')}#{tid}"] = (cpu, wait, slices)
    return found


def sched_figures(before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]], steps: int) -> dict[str, float]:
    """What the process's threads paid per simulation step: the event loop's CPU, and every thread's
    wait for a core after waking (a thread handed work wakes; on a busy node it waits a time slice)."""
    if not after or steps <= 0:
        return {}
    loop = [0, 0, 0]
    total = [0, 0, 0]
    for key, (cpu, wait, slices) in after.items():
        base = before.get(key, (0, 0, 0))
        delta = (cpu - base[0], wait - base[1], slices - base[2])
        total = [a + b for a, b in zip(total, delta, strict=True)]
        if key.startswith("MainThread#"):
            loop = list(delta)
    return {"loop_cpu_ms_per_step": round(loop[0] / 1e6 / steps, 3),
            "runq_wait_ms_per_step": round(total[1] / 1e6 / steps, 3),
            "wakeups_per_step": round(total[2] / steps, 1),
            "runq_wait_per_wakeup_us": round(total[1] / 1e3 / max(total[2], 1), 1)}


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
                gc_freeze: bool = False, gc_gen0: int | None = None, probe_ms: float = 5.0) -> dict[str, float | str]:
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

        async def probe() -> None:  # how late the event loop wakes a short sleep: the part of a latency that is waiting
            while True:
                started = time.perf_counter()
                await asyncio.sleep(probe_ms / 1000)
                lags.append(time.perf_counter() - started - probe_ms / 1000)

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
            sched0 = thread_sched()
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            prober = asyncio.get_running_loop().create_task(probe()) if probe_ms > 0 else None
            while device.health.state.value != "finished":
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            if prober is not None:
                prober.cancel()
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            sched = sched_figures(sched0, thread_sched(), seconds)
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
            **({"loop_lag_p50_ms": round(float(np.percentile(lag, 50)), 3), "loop_lag_p99_ms": round(float(np.percentile(lag, 99)), 3)}
               if probe_ms > 0 else {}),
            **sched, "sched_policy": scheduling_policy(),
            "load_average": round((load0 + load1) / 2, 2)}


def scheduling_policy() -> str:
    """How the OS schedules this process (``other`` = the default time sharing; ``rr``/``fifo`` = real time)."""
    import os

    try:
        policy = os.sched_getscheduler(0)
    except (AttributeError, OSError):
        return "unknown"
    names = {getattr(os, "SCHED_OTHER", -1): "other", getattr(os, "SCHED_RR", -2): "rr", getattr(os, "SCHED_FIFO", -3): "fifo",
             getattr(os, "SCHED_BATCH", -4): "batch", getattr(os, "SCHED_IDLE", -5): "idle"}
    return names.get(policy, str(policy))


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
    parser.add_argument("--loop-probe-ms", type=float, default=0.0,
                        help="multi: measure the event loop's lag with a sleep of this many ms, over and over (0: off). "
                             "The probe is loop work itself: at 5 ms it woke the loop 200 times a simulated second in "
                             "real time and tripled the loop's CPU per step")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    extra: dict[str, float | str] = {}
    if args.multi:
        extra = asyncio.run(multi(args.multi, args.multi_seconds, args.multi_controller, args.multi_speed,
                                  args.gc_freeze, args.gc_gen0, args.loop_probe_ms))
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
