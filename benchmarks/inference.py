"""Benchmark of the shared inference service against raw onnxruntime, in the same run.

For a small MLP and a 1-D CNN of realistic size (a 3-channel, 1024-sample vibration window):

* throughput with 64 concurrent callers: the service's dynamic batching against one
  ``session.run`` per request (each request sent to a thread pool of the service's size, as a
  service without batching would), and against a plain sequential loop of ``session.run``;
* added latency at batch 1: ``await service.infer`` against a raw ``session.run`` (p50/p99);
* rows/s through ``infer_many`` (callers scoring many windows at once) and through ``infer`` of
  whole blocks, against raw ``session.run`` on the same batch sizes;
* CPU seconds per 1,000 inferences (rows), service against raw, for each of those (the whole
  process's CPU time: event loop, worker and onnxruntime threads);
* realtime p99 while a bulk load runs, against the realtime p99 when idle, in ``--runs``
  separate runs (the target holds only if it holds in every one); beside it, the same ratio for
  the raw library (one thread running realtime ``session.run`` calls while another runs bulk
  batches on a second session with the service's thread counts), which is what this machine
  allows at that moment.

Every comparison is measured in alternating windows (raw, service, raw, service, ...), so that
load from other processes falls on both sides alike: on a shared machine the figures of two
back-to-back measurements move by 2-10x, their ratios within one window much less.

Prints a table; with ``--json`` the last line is one JSON object of the figures (plus the load
average when the run began and ended). Run:
``python benchmarks/inference.py [--seconds 1] [--runs 3] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import select
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgeplane.inference import InferenceConfig, InferenceService, ModelRegistry
from edgeplane.inference import testing as toy
from edgeplane.inference.runtime import onnxruntime, session_options
from edgeplane.metrics import Metrics

CALLERS = 64
BATCH_SIZES = (1, 8, 64, 256)
WINDOWS = 4  # alternations per comparison
PERIOD = 0.002  # the realtime caller sends one request every 2 ms
BULK_CALLERS, BULK_ROWS = 16, 32
PARTS = ("latency", "callers", "sizes", "realtime")
MODELS = ("mlp", "cnn1d")

Side = Callable[[float], Awaitable[int]]  # runs for about the given seconds, returns how many inferences it made


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def alternate(seconds: float, sides: dict[str, Side]) -> dict[str, dict[str, float]]:
    """Run each side for ``seconds / WINDOWS`` in turn, ``WINDOWS`` times; rate and CPU per side."""
    totals = {name: [0, 0.0, 0.0] for name in sides}
    for _ in range(WINDOWS):
        for name, side in sides.items():
            began, cpu = time.perf_counter(), time.process_time()
            done = await side(seconds / WINDOWS)
            totals[name][0] += done
            totals[name][1] += time.perf_counter() - began
            totals[name][2] += time.process_time() - cpu
    return {
        name: {"per_s": n / elapsed, "cpu_s_per_1000": 1000 * cpu / max(n, 1)} for name, (n, elapsed, cpu) in totals.items()
    }


async def closed_loop(callers: int, seconds: float, one_request: Callable[[int], Awaitable[Any]], per_call: int = 1) -> int:
    """``callers`` tasks each sending requests back to back for ``seconds``; returns inferences made."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def caller(i: int) -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await one_request(i)
            done += per_call

    await asyncio.gather(*(caller(i) for i in range(callers)))
    return done


def raw_loop(session: Any, feeds: dict[str, np.ndarray], rows: int) -> Side:
    async def side(seconds: float) -> int:
        done = 0
        stop_at = time.perf_counter() + seconds
        while time.perf_counter() < stop_at:
            session.run(None, feeds)
            done += rows
        return done

    return side


async def paced(seconds: float, one_request: Callable[[], Awaitable[Any]]) -> list[float]:
    """One caller sending a request every ``PERIOD`` seconds; returns each latency."""
    latencies = []
    stop_at = time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        began = time.perf_counter()
        await one_request()
        latencies.append(time.perf_counter() - began)
        await asyncio.sleep(max(0.0, PERIOD - (time.perf_counter() - began)))
    return latencies


def raw_paced(session: Any, feeds: dict[str, np.ndarray], seconds: float) -> list[float]:
    latencies = []
    stop_at = time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        began = time.perf_counter()
        session.run(None, feeds)
        latencies.append(time.perf_counter() - began)
        time.sleep(max(0.0, PERIOD - (time.perf_counter() - began)))
    return latencies


class GilProbe:
    """A thread that, every ``PERIOD``, leaves the interpreter for a system call that returns at once and times
    taking the GIL back: what a realtime worker pays after ``session.run`` (and the event loop after epoll)
    with no thread wake-up or run queue in it. Its p99 under bulk load against idle tells whether the GIL
    is what delays realtime requests."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gil-probe", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            select.select([], [], [], 0)  # drops the GIL around the call, takes it back after
            self.waits.append(time.perf_counter() - began)
            time.sleep(PERIOD)

    def __enter__(self) -> GilProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


async def realtime_under_bulk(service: InferenceService, name: str, one: np.ndarray, bulk_batch: np.ndarray,
                              seconds: float, gil: dict[str, list[float]] | None = None) -> tuple[list[float], list[float], float]:
    """Idle and loaded windows in turn: (idle latencies, loaded latencies, bulk rows/s while loaded).

    With ``gil``, a :class:`GilProbe` runs through each window and its waits are added under "idle" and "loaded".
    """
    idle: list[float] = []
    loaded: list[float] = []
    bulk_rows, bulk_seconds = 0, 0.0

    async def single() -> None:
        await service.infer(name, one, caller="realtime")

    for _ in range(WINDOWS):
        with GilProbe() as probe:
            idle += await paced(seconds / WINDOWS, single)
        if gil is not None:
            gil["idle"] += probe.waits
        stop = asyncio.Event()
        done = 0

        async def bulk_caller(i: int) -> None:
            nonlocal done
            while not stop.is_set():
                await service.infer(name, bulk_batch, priority="bulk", caller=f"bulk{i}")
                done += len(bulk_batch)

        tasks = [asyncio.create_task(bulk_caller(i)) for i in range(BULK_CALLERS)]
        await asyncio.sleep(0.1)  # bulk under way before the realtime caller measures
        began_rows, began = done, time.perf_counter()
        with GilProbe() as probe:
            loaded += await paced(seconds / WINDOWS, single)
        if gil is not None:
            gil["loaded"] += probe.waits
        bulk_rows += done - began_rows
        bulk_seconds += time.perf_counter() - began
        stop.set()
        await asyncio.gather(*tasks)
    return idle, loaded, bulk_rows / bulk_seconds


class RawBulk:
    """A thread looping ``session.run`` on bulk batches while it is started: the raw library's bulk load.

    ``start`` returns once the load is under way (after ``warm`` seconds); ``stop`` ends the thread and joins it.
    """

    def __init__(self, bulk_session: Any, bulk_batch: np.ndarray, warm: float = 0.1):
        self._session, self._feeds, self._warm = bulk_session, {"x": bulk_batch}, warm
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raw-bulk")

    def _run(self) -> None:
        while not self._stop.is_set():
            self._session.run(None, self._feeds)

    def start(self) -> None:
        self._thread.start()
        time.sleep(self._warm)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def raw_realtime_under_bulk(session: Any, bulk_session: Any, one: np.ndarray, bulk_batch: np.ndarray,
                            seconds: float) -> tuple[list[float], list[float]]:
    """The raw library's own version: one thread paced on ``session`` while another loops bulk batches."""
    idle: list[float] = []
    loaded: list[float] = []
    for _ in range(WINDOWS):
        idle += raw_paced(session, {"x": one}, seconds / WINDOWS)
        bulk = RawBulk(bulk_session, bulk_batch)
        bulk.start()
        loaded += raw_paced(session, {"x": one}, seconds / WINDOWS)
        bulk.stop()
    return idle, loaded


async def raw_handed_over_under_bulk(session: Any, bulk_session: Any, one: np.ndarray, bulk_batch: np.ndarray,
                                     seconds: float) -> tuple[list[float], list[float]]:
    """The raw library as an asyncio program without the service would call it: each realtime run handed to a
    thread with ``run_in_executor`` and awaited (two thread wake-ups per request, as in the service), while a
    thread loops bulk batches on the second session. The raw side above times ``session.run`` alone."""
    loop = asyncio.get_running_loop()
    idle: list[float] = []
    loaded: list[float] = []
    with ThreadPoolExecutor(1, thread_name_prefix="raw-realtime") as pool:
        async def single() -> None:
            await loop.run_in_executor(pool, session.run, None, {"x": one})

        for _ in range(WINDOWS):
            idle += await paced(seconds / WINDOWS, single)
            bulk = RawBulk(bulk_session, bulk_batch)
            await loop.run_in_executor(None, bulk.start)
            loaded += await paced(seconds / WINDOWS, single)
            await loop.run_in_executor(None, bulk.stop)
    return idle, loaded


async def bench_model(service: InferenceService, name: str, path: Path, sample: np.ndarray, seconds: float, runs: int,
                      parts: frozenset[str] = frozenset(PARTS)) -> dict[str, Any]:
    ort = onnxruntime()
    providers = service.providers
    # the raw side gets the realtime session's options (threads, spinning): the same kernel, without the service
    session = ort.InferenceSession(str(path), session_options(service.intra_op_threads, spinning=service.config.spin_wait),
                                   providers=providers)
    bulk_session = ort.InferenceSession(str(path), session_options(service.bulk_threads if service.separate_bulk else service.intra_op_threads),
                                        providers=providers)
    rows = [sample[i : i + 1] for i in range(len(sample))]
    out: dict[str, Any] = {}
    if "latency" in parts:
        await latency_part(service, name, session, rows, seconds, out)
    if "callers" in parts:
        await callers_part(service, name, session, rows, seconds, out)
    if "sizes" in parts:
        await sizes_part(service, name, session, sample, seconds, out)
    if "realtime" in parts:
        await realtime_part(service, name, session, bulk_session, rows, sample, seconds, runs, out)
    return out


async def latency_part(service: InferenceService, name: str, session: Any, rows: list[np.ndarray], seconds: float,
                       out: dict[str, Any]) -> None:
    # latency at batch 1, one caller back to back: raw session.run against await service.infer
    raw_lat: list[float] = []
    svc_lat: list[float] = []

    async def raw_single(window: float) -> int:
        stop_at = time.perf_counter() + window
        n = 0
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            session.run(None, {"x": rows[n % len(rows)]})
            raw_lat.append(time.perf_counter() - began)
            n += 1
        return n

    async def service_single(window: float) -> int:
        stop_at = time.perf_counter() + window
        n = 0
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            await service.infer(name, rows[n % len(rows)])
            svc_lat.append(time.perf_counter() - began)
            n += 1
        return n

    single = await alternate(seconds, {"raw": raw_single, "service": service_single})
    out["raw_sequential_per_s"] = single["raw"]["per_s"]
    out["raw_p50_ms"], out["raw_p99_ms"] = 1000 * pct(raw_lat, 50), 1000 * pct(raw_lat, 99)
    out["service_p50_ms"], out["service_p99_ms"] = 1000 * pct(svc_lat, 50), 1000 * pct(svc_lat, 99)
    out["added_p50_ms"] = out["service_p50_ms"] - out["raw_p50_ms"]
    out["added_p99_ms"] = out["service_p99_ms"] - out["raw_p99_ms"]
    out["cpu_s_per_1000_raw_sequential"] = single["raw"]["cpu_s_per_1000"]
    out["cpu_s_per_1000_service_single"] = single["service"]["cpu_s_per_1000"]


async def callers_part(service: InferenceService, name: str, session: Any, rows: list[np.ndarray], seconds: float,
                       out: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    # 64 concurrent callers at batch 1: one session.run per request (a pool of the service's size) against dynamic batching
    with ThreadPoolExecutor(service.workers) as pool:
        async def unbatched(i: int) -> None:
            await loop.run_in_executor(pool, session.run, None, {"x": rows[i % len(rows)]})

        async def batched(i: int) -> None:
            await service.infer(name, rows[i % len(rows)], caller=f"c{i}")

        await closed_loop(CALLERS, 0.2, batched)  # warm
        callers = await alternate(seconds, {
            "unbatched": lambda window: closed_loop(CALLERS, window, unbatched),
            "batched": lambda window: closed_loop(CALLERS, window, batched),
        })
    out["unbatched_64_per_s"] = callers["unbatched"]["per_s"]
    out["batched_64_per_s"] = callers["batched"]["per_s"]
    out["ratio_batched_vs_unbatched"] = out["batched_64_per_s"] / out["unbatched_64_per_s"]
    if "raw_sequential_per_s" in out:
        out["ratio_batched_vs_raw_sequential"] = out["batched_64_per_s"] / out["raw_sequential_per_s"]
    out["cpu_s_per_1000_unbatched_64"] = callers["unbatched"]["cpu_s_per_1000"]
    out["cpu_s_per_1000_batched_64"] = callers["batched"]["cpu_s_per_1000"]


async def sizes_part(service: InferenceService, name: str, session: Any, sample: np.ndarray, seconds: float,
                     out: dict[str, Any]) -> None:
    # rows/s at the same batch sizes: raw session.run on B rows, infer_many of B one-row requests, infer of one B-row block
    for size in BATCH_SIZES:
        block = np.concatenate([sample] * (size // len(sample) + 1))[:size]
        items = [block[i : i + 1] for i in range(size)]

        async def many(i: int, items: list[np.ndarray] = items) -> None:
            # realtime: the session with the raw side's threads (bulk runs on fewer, niced threads)
            await service.infer_many(name, items, priority="realtime", caller=f"m{i}")

        async def blocks(i: int, block: np.ndarray = block) -> None:
            await service.infer(name, block, caller=f"b{i}")

        await closed_loop(4, 0.1, many, size)  # warm
        sizes = await alternate(seconds * 1.5, {
            "raw": raw_loop(session, {"x": block}, size),
            "many": lambda window, many=many, size=size: closed_loop(4, window, many, size),
            "block": lambda window, blocks=blocks, size=size: closed_loop(4, window, blocks, size),
        })
        raw_rate = sizes["raw"]["per_s"]
        out[f"raw_rows_per_s_b{size}"] = raw_rate
        out[f"infer_many_rows_per_s_b{size}"] = sizes["many"]["per_s"]
        out[f"ratio_infer_many_vs_raw_b{size}"] = sizes["many"]["per_s"] / raw_rate
        out[f"infer_block_rows_per_s_b{size}"] = sizes["block"]["per_s"]
        out[f"ratio_infer_block_vs_raw_b{size}"] = sizes["block"]["per_s"] / raw_rate
        out[f"cpu_s_per_1000_raw_b{size}"] = sizes["raw"]["cpu_s_per_1000"]
        out[f"cpu_s_per_1000_infer_many_b{size}"] = sizes["many"]["cpu_s_per_1000"]
        out[f"cpu_s_per_1000_infer_block_b{size}"] = sizes["block"]["cpu_s_per_1000"]


async def realtime_part(service: InferenceService, name: str, session: Any, bulk_session: Any, rows: list[np.ndarray],
                        sample: np.ndarray, seconds: float, runs: int, out: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    # realtime p99 idle vs under a bulk load (16 bulk callers sending 32-row batches), several runs; raw beside it
    one = rows[0]
    bulk_batch = np.concatenate([sample] * (BULK_ROWS // len(sample) + 1))[:BULK_ROWS]
    ratios, raw_ratios, handed_ratios, bulk_rates, idle_p99, loaded_p99, loaded_p50 = [], [], [], [], [], [], []
    gil: dict[str, list[float]] = {"idle": [], "loaded": []}
    for _ in range(runs):
        idle, loaded, bulk_rate = await realtime_under_bulk(service, name, one, bulk_batch, seconds, gil)
        raw_idle, raw_loaded = await loop.run_in_executor(None, raw_realtime_under_bulk, session, bulk_session, one, bulk_batch, seconds)
        handed_idle, handed_loaded = await raw_handed_over_under_bulk(session, bulk_session, one, bulk_batch, seconds)
        ratios.append(pct(loaded, 99) / pct(idle, 99))
        raw_ratios.append(pct(raw_loaded, 99) / pct(raw_idle, 99))
        handed_ratios.append(pct(handed_loaded, 99) / pct(handed_idle, 99))
        bulk_rates.append(bulk_rate)
        idle_p99.append(1000 * pct(idle, 99))
        loaded_p99.append(1000 * pct(loaded, 99))
        loaded_p50.append(1000 * statistics.median(loaded))
    out["raw_handed_over_ratio_realtime_p99_bulk_vs_idle"] = statistics.median(handed_ratios)
    out["raw_handed_over_ratio_realtime_p99_bulk_vs_idle_worst"] = max(handed_ratios)
    out["gil_retake_idle_p99_us"] = 1e6 * pct(gil["idle"], 99)
    out["gil_retake_under_bulk_p99_us"] = 1e6 * pct(gil["loaded"], 99)
    out["realtime_idle_p99_ms"] = statistics.median(idle_p99)
    out["realtime_under_bulk_p99_ms"] = statistics.median(loaded_p99)
    out["realtime_under_bulk_p50_ms"] = statistics.median(loaded_p50)
    out["ratio_realtime_p99_bulk_vs_idle"] = statistics.median(ratios)
    out["ratio_realtime_p99_bulk_vs_idle_worst"] = max(ratios)
    out["ratio_realtime_p99_bulk_vs_idle_best"] = min(ratios)
    out["raw_ratio_realtime_p99_bulk_vs_idle"] = statistics.median(raw_ratios)
    out["raw_ratio_realtime_p99_bulk_vs_idle_worst"] = max(raw_ratios)
    out["bulk_rows_per_s_during"] = statistics.median(bulk_rates)


async def main_async(seconds: float, runs: int, parts: frozenset[str] = frozenset(PARTS), only: tuple[str, ...] = MODELS,
                     bulk_switch_interval: float | None = None) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="edgeplane-bench-"))
    registry = ModelRegistry(folder / "models")
    rng = np.random.default_rng(1)
    models = {
        "mlp": (toy.mlp(64, (256, 256), 16), rng.standard_normal((64, 64)).astype(np.float32)),
        "cnn1d": (toy.cnn1d(3, 1024, (32, 64, 64), (7, 5, 3), 8), rng.standard_normal((64, 3, 1024)).astype(np.float32)),
    }
    paths = {}
    for name, (proto, _) in models.items():
        paths[name] = toy.save(proto, folder / f"{name}.onnx")
        registry.add(paths[name], name, "1")
    overrides = {} if bulk_switch_interval is None else {"bulk_switch_interval": bulk_switch_interval}
    config = InferenceConfig(models=str(folder / "models"), preload=list(only), **overrides)
    service = InferenceService(config, Metrics(), base_dir=folder)
    load_start = os.getloadavg()[0]
    await service.start()
    try:
        results: dict[str, Any] = {
            "provider": service.providers[0], "intra_op_threads": service.intra_op_threads,
            "bulk_threads": service.bulk_threads if service.separate_bulk else 0, "workers": service.workers,
            "bulk_switch_interval_ms": 1000 * config.bulk_switch_interval,
        }
        for name in only:
            results[name] = await bench_model(service, name, paths[name], models[name][1], seconds, runs, parts)
    finally:
        await service.stop()
    results["load_average_1m_start"], results["load_average_1m_end"] = load_start, os.getloadavg()[0]
    return results


ROWS = [
    ("raw session.run, sequential (req/s)", "raw_sequential_per_s", "{:,.0f}"),
    ("one session.run per request, 64 callers (req/s)", "unbatched_64_per_s", "{:,.0f}"),
    ("dynamic batching, 64 callers (req/s)", "batched_64_per_s", "{:,.0f}"),
    ("  ratio batched / one run per request (target >= 5)", "ratio_batched_vs_unbatched", "{:.1f}x"),
    ("  ratio batched / raw sequential", "ratio_batched_vs_raw_sequential", "{:.1f}x"),
    ("  CPU s per 1,000: raw seq / one per request / batched", ("cpu_s_per_1000_raw_sequential", "cpu_s_per_1000_unbatched_64",
                                                               "cpu_s_per_1000_batched_64"), "{:.3f} / {:.3f} / {:.3f}"),
    ("raw session.run batch 1 p50 / p99 (ms)", ("raw_p50_ms", "raw_p99_ms"), "{:.3f} / {:.3f}"),
    ("service.infer batch 1 p50 / p99 (ms)", ("service_p50_ms", "service_p99_ms"), "{:.3f} / {:.3f}"),
    ("  added latency p50 / p99 (ms)", ("added_p50_ms", "added_p99_ms"), "{:.3f} / {:.3f}"),
    ("realtime p99 idle (ms, median of runs)", "realtime_idle_p99_ms", "{:.3f}"),
    ("realtime p99 under bulk load (ms, median of runs)", "realtime_under_bulk_p99_ms", "{:.3f}"),
    ("  ratio under bulk / idle, median (target <= 2)", "ratio_realtime_p99_bulk_vs_idle", "{:.2f}x"),
    ("  ratio, best / worst of the runs", ("ratio_realtime_p99_bulk_vs_idle_best", "ratio_realtime_p99_bulk_vs_idle_worst"), "{:.2f}x / {:.2f}x"),
    ("  raw library's own ratio, median / worst", ("raw_ratio_realtime_p99_bulk_vs_idle", "raw_ratio_realtime_p99_bulk_vs_idle_worst"),
     "{:.2f}x / {:.2f}x"),
    ("  raw handed to a thread and awaited, ratio median / worst", ("raw_handed_over_ratio_realtime_p99_bulk_vs_idle",
                                                                    "raw_handed_over_ratio_realtime_p99_bulk_vs_idle_worst"), "{:.2f}x / {:.2f}x"),
    ("bulk rows/s meanwhile", "bulk_rows_per_s_during", "{:,.0f}"),
    ("GIL retake after a system call, p99 idle / under bulk (us)", ("gil_retake_idle_p99_us", "gil_retake_under_bulk_p99_us"), "{:.0f} / {:.0f}"),
    *[row for b in BATCH_SIZES for row in (
        (f"raw session.run at batch {b} (rows/s)", f"raw_rows_per_s_b{b}", "{:,.0f}"),
        (f"infer_many of {b} requests, 4 callers (rows/s)", f"infer_many_rows_per_s_b{b}", "{:,.0f}"),
        ("  ratio infer_many / raw" + (" (target >= 0.5)" if b == 64 else ""), f"ratio_infer_many_vs_raw_b{b}", "{:.2f}"),
        (f"infer of one {b}-row block, 4 callers (rows/s)", f"infer_block_rows_per_s_b{b}", "{:,.0f}"),
        ("  ratio infer block / raw", f"ratio_infer_block_vs_raw_b{b}", "{:.2f}"),
        ("  CPU s per 1,000 rows: raw / infer_many / block", (f"cpu_s_per_1000_raw_b{b}", f"cpu_s_per_1000_infer_many_b{b}",
                                                            f"cpu_s_per_1000_infer_block_b{b}"), "{:.4f} / {:.4f} / {:.4f}"),
    )],
]


def table(results: dict[str, Any]) -> str:
    names = [k for k, v in results.items() if isinstance(v, dict)]
    width = max(len(r[0]) for r in ROWS) + 2
    bulk = f"{results['bulk_threads']} per bulk run (own session)" if results["bulk_threads"] else "bulk on the same session"
    lines = [f"inference on {results['provider']}, {results['intra_op_threads']} intra-op threads per realtime run, {bulk}, "
             f"{results['workers']} workers, GIL switch interval {results['bulk_switch_interval_ms']:g} ms while bulk runs; load average {results['load_average_1m_start']:.1f} -> {results['load_average_1m_end']:.1f}",
             "figure".ljust(width) + "".join(n.rjust(26) for n in names)]
    for label, key, fmt in ROWS:
        cells = []
        for n in names:
            keys = key if isinstance(key, tuple) else (key,)
            cells.append((fmt.format(*(results[n][k] for k in keys)) if all(k in results[n] for k in keys) else "-").rjust(26))
        lines.append(label.ljust(width) + "".join(cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each comparison (split into alternating windows)")
    parser.add_argument("--runs", type=int, default=3, help="separate realtime-under-bulk measurements")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"which measurements, comma-separated from {','.join(PARTS)} (default all)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"which models, comma-separated from {','.join(MODELS)} (default both)")
    parser.add_argument("--bulk-switch-interval", type=float, default=None,
                        help="inference.bulk_switch_interval in seconds for this run (default: the config's default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    parts, only = frozenset(args.parts.split(",")), tuple(args.models.split(","))
    if not parts <= set(PARTS) or not set(only) <= set(MODELS):
        parser.error(f"--parts takes {','.join(PARTS)} and --models takes {','.join(MODELS)}")
    results = asyncio.run(main_async(args.seconds, args.runs, parts, only, args.bulk_switch_interval))
    print(table(results))
    if args.json:
        flat: dict[str, Any] = {k: v for k, v in results.items() if not isinstance(v, dict)}
        for name, figures in results.items():
            if isinstance(figures, dict):
                flat.update({f"{name}_{k}": round(v, 5) for k, v in figures.items()})
        print(json.dumps(flat))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
