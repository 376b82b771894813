"""Benchmark of the shared inference service against raw onnxruntime, in the same run.

For a small MLP and a 1-D CNN of realistic size (a 3-channel, 1024-sample vibration window):

* throughput with 64 concurrent callers: the service's dynamic batching against one
  ``session.run`` per request (each request sent to the same thread pool, as a service without
  batching would), and against a plain sequential loop of ``session.run``;
* added latency at batch 1: ``await service.infer`` against a raw ``session.run`` (p50/p99);
* realtime p99 while a bulk load runs, against the realtime p99 when idle, in ``--runs`` separate
  runs (the target holds only if it holds in every one);
* rows/s through ``infer_many`` (callers scoring many windows at once) against raw
  ``session.run`` on the same batch sizes, and CPU time per inference row for both.

Prints a table; with ``--json`` the last line is one JSON object of the figures.
Run: ``python benchmarks/inference.py [--seconds 2] [--runs 5] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def closed_loop(callers: int, seconds: float, one_request) -> tuple[int, float]:
    """``callers`` tasks each sending requests back to back for ``seconds``; returns (requests, elapsed)."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def caller(i: int) -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await one_request(i)
            done += 1

    began = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    return done, time.perf_counter() - began


async def paced_latencies(seconds: float, period: float, one_request) -> list[float]:
    """One caller sending a request every ``period`` seconds; returns each latency."""
    latencies = []
    stop_at = time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        began = time.perf_counter()
        await one_request()
        latencies.append(time.perf_counter() - began)
        await asyncio.sleep(max(0.0, period - (time.perf_counter() - began)))
    return latencies


async def bench_model(service: InferenceService, name: str, path: Path, sample: np.ndarray, seconds: float, runs: int) -> dict[str, Any]:
    ort = onnxruntime()
    session = ort.InferenceSession(str(path), session_options(service.intra_op_threads), providers=service.providers)
    rows = [sample[i : i + 1] for i in range(len(sample))]
    out: dict[str, Any] = {}
    loop = asyncio.get_running_loop()

    # raw sequential loop
    latencies = []
    stop_at = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < stop_at:
        began = time.perf_counter()
        session.run(None, {"x": rows[i % len(rows)]})
        latencies.append(time.perf_counter() - began)
        i += 1
    out["raw_sequential_per_s"] = len(latencies) / sum(latencies)
    out["raw_p50_ms"], out["raw_p99_ms"] = 1000 * pct(latencies, 50), 1000 * pct(latencies, 99)

    # one session.run per request, 64 concurrent callers, same thread pool size as the service
    with ThreadPoolExecutor(service.workers) as pool:
        async def unbatched(i: int) -> None:
            await loop.run_in_executor(pool, session.run, None, {"x": rows[i % len(rows)]})

        n, elapsed = await closed_loop(CALLERS, seconds, unbatched)
    out["unbatched_64_per_s"] = n / elapsed

    # dynamic batching, 64 concurrent callers
    async def batched(i: int) -> None:
        await service.infer(name, rows[i % len(rows)], caller=f"c{i}")

    await closed_loop(CALLERS, 0.3, batched)  # warm
    n, elapsed = await closed_loop(CALLERS, seconds, batched)
    out["batched_64_per_s"] = n / elapsed
    out["ratio_batched_vs_unbatched"] = out["batched_64_per_s"] / out["unbatched_64_per_s"]
    out["ratio_batched_vs_raw_sequential"] = out["batched_64_per_s"] / out["raw_sequential_per_s"]

    # added latency at batch 1: one caller, back to back
    async def single() -> None:
        await service.infer(name, rows[0])

    lat = await paced_latencies(seconds, 0.0, single)
    out["service_p50_ms"], out["service_p99_ms"] = 1000 * pct(lat, 50), 1000 * pct(lat, 99)
    out["added_p50_ms"] = out["service_p50_ms"] - out["raw_p50_ms"]
    out["added_p99_ms"] = out["service_p99_ms"] - out["raw_p99_ms"]

    # rows/s at the same batch sizes: raw session.run on B rows against infer_many of B one-row requests
    for size in BATCH_SIZES:
        block = np.concatenate([sample] * (size // len(sample) + 1))[:size]
        items = [block[i : i + 1] for i in range(size)]
        raw_rows, raw_elapsed, raw_cpu = 0, 0.0, time.process_time()
        stop_at = time.perf_counter() + seconds / 2
        began = time.perf_counter()
        while time.perf_counter() < stop_at:
            session.run(None, {"x": block})
            raw_rows += size
        raw_elapsed, raw_cpu = time.perf_counter() - began, time.process_time() - raw_cpu
        callers = 4

        # realtime: the session with the same threads as the raw one (bulk runs on fewer, niced threads)
        async def many(i: int) -> None:
            await service.infer_many(name, items, priority="realtime", caller=f"m{i}")

        await closed_loop(callers, 0.2, many)  # warm
        cpu = time.process_time()
        n, elapsed = await closed_loop(callers, seconds / 2, many)
        cpu = time.process_time() - cpu
        async def blocks(i: int) -> None:
            await service.infer(name, block, caller=f"b{i}")

        n_blocks, blocks_elapsed = await closed_loop(callers, seconds / 2, blocks)
        out[f"infer_block_rows_per_s_b{size}"] = n_blocks * size / blocks_elapsed
        out[f"ratio_infer_block_vs_raw_b{size}"] = out[f"infer_block_rows_per_s_b{size}"] / (raw_rows / raw_elapsed)
        out[f"raw_rows_per_s_b{size}"] = raw_rows / raw_elapsed
        out[f"infer_many_rows_per_s_b{size}"] = n * size / elapsed
        out[f"ratio_infer_many_vs_raw_b{size}"] = out[f"infer_many_rows_per_s_b{size}"] / out[f"raw_rows_per_s_b{size}"]
        out[f"raw_cpu_us_per_row_b{size}"] = 1e6 * raw_cpu / raw_rows
        out[f"infer_many_cpu_us_per_row_b{size}"] = 1e6 * cpu / (n * size)

    # realtime p99 idle vs under a bulk load (16 bulk callers sending 32-row batches), several runs
    period = 0.002
    bulk_batch = np.concatenate([sample] * (32 // len(sample) + 1))[:32]
    ratios, bulk_rates = [], []
    for _ in range(runs):
        idle = await paced_latencies(seconds, period, single)
        stop = asyncio.Event()
        bulk_done = 0

        async def bulk_caller(i: int) -> None:
            nonlocal bulk_done
            while not stop.is_set():
                await service.infer(name, bulk_batch, priority="bulk", caller=f"bulk{i}")
                bulk_done += 32

        bulk_tasks = [asyncio.create_task(bulk_caller(i)) for i in range(16)]
        await asyncio.sleep(0.2)
        began_rows, began = bulk_done, time.perf_counter()
        loaded = await paced_latencies(seconds, period, single)
        bulk_rates.append((bulk_done - began_rows) / (time.perf_counter() - began))
        stop.set()
        await asyncio.gather(*bulk_tasks)
        ratios.append(pct(loaded, 99) / pct(idle, 99))
    out["realtime_idle_p99_ms"] = 1000 * pct(idle, 99)
    out["realtime_under_bulk_p99_ms"] = 1000 * pct(loaded, 99)
    out["realtime_under_bulk_p50_ms"] = 1000 * statistics.median(loaded)
    out["ratio_realtime_p99_bulk_vs_idle"] = ratios[-1]
    out["ratio_realtime_p99_bulk_vs_idle_worst"] = max(ratios)
    out["ratio_realtime_p99_bulk_vs_idle_best"] = min(ratios)
    out["bulk_rows_per_s_during"] = statistics.median(bulk_rates)
    return out


async def main_async(seconds: float, runs: int) -> dict[str, Any]:
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
    config = InferenceConfig(models=str(folder / "models"), preload="all")
    service = InferenceService(config, Metrics(), base_dir=folder)
    await service.start()
    try:
        results = {"provider": service.providers[0], "intra_op_threads": service.intra_op_threads, "workers": service.workers}
        for name, (_, sample) in models.items():
            results[name] = await bench_model(service, name, paths[name], sample, seconds, runs)
    finally:
        await service.stop()
    return results


ROWS = [
    ("raw session.run, sequential (req/s)", "raw_sequential_per_s", "{:,.0f}"),
    ("one session.run per request, 64 callers (req/s)", "unbatched_64_per_s", "{:,.0f}"),
    ("dynamic batching, 64 callers (req/s)", "batched_64_per_s", "{:,.0f}"),
    ("  ratio batched / one run per request (target >= 5)", "ratio_batched_vs_unbatched", "{:.1f}x"),
    ("  ratio batched / raw sequential", "ratio_batched_vs_raw_sequential", "{:.1f}x"),
    ("raw session.run batch 1 p50 / p99 (ms)", ("raw_p50_ms", "raw_p99_ms"), "{:.3f} / {:.3f}"),
    ("service.infer batch 1 p50 / p99 (ms)", ("service_p50_ms", "service_p99_ms"), "{:.3f} / {:.3f}"),
    ("  added latency p50 / p99 (ms)", ("added_p50_ms", "added_p99_ms"), "{:.3f} / {:.3f}"),
    ("realtime p99 idle (ms)", "realtime_idle_p99_ms", "{:.3f}"),
    ("realtime p99 under bulk load (ms)", "realtime_under_bulk_p99_ms", "{:.3f}"),
    ("  ratio under bulk / idle, last run (target <= 2)", "ratio_realtime_p99_bulk_vs_idle", "{:.2f}x"),
    ("  ratio, best / worst of the runs", ("ratio_realtime_p99_bulk_vs_idle_best", "ratio_realtime_p99_bulk_vs_idle_worst"), "{:.2f}x / {:.2f}x"),
    ("bulk rows/s meanwhile", "bulk_rows_per_s_during", "{:,.0f}"),
    *[row for b in BATCH_SIZES for row in (
        (f"raw session.run at batch {b} (rows/s)", f"raw_rows_per_s_b{b}", "{:,.0f}"),
        (f"infer_many of {b} requests, 4 callers (rows/s)", f"infer_many_rows_per_s_b{b}", "{:,.0f}"),
        ("  ratio infer_many / raw" + (" (target >= 0.5)" if b == 64 else ""), f"ratio_infer_many_vs_raw_b{b}", "{:.2f}"),
        (f"infer of one {b}-row block, 4 callers (rows/s)", f"infer_block_rows_per_s_b{b}", "{:,.0f}"),
        ("  ratio infer block / raw", f"ratio_infer_block_vs_raw_b{b}", "{:.2f}"),
        ("  CPU per row raw / service (us)", (f"raw_cpu_us_per_row_b{b}", f"infer_many_cpu_us_per_row_b{b}"), "{:.2f} / {:.2f}"),
    )],
]


def table(results: dict[str, Any]) -> str:
    names = [k for k, v in results.items() if isinstance(v, dict)]
    width = max(len(r[0]) for r in ROWS) + 2
    lines = [f"inference on {results['provider']}, {results['intra_op_threads']} intra-op threads, {results['workers']} workers",
             "figure".ljust(width) + "".join(n.rjust(18) for n in names)]
    for label, key, fmt in ROWS:
        cells = []
        for n in names:
            values = [results[n][k] for k in key] if isinstance(key, tuple) else [results[n][key]]
            cells.append(fmt.format(*values).rjust(18))
        lines.append(label.ljust(width) + "".join(cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each measurement")
    parser.add_argument("--runs", type=int, default=5, help="separate realtime-under-bulk measurements")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = asyncio.run(main_async(args.seconds, args.runs))
    print(table(results))
    if args.json:
        flat = {"provider": results["provider"]}
        for name, figures in results.items():
            if isinstance(figures, dict):
                flat.update({f"{name}_{k}": round(v, 4) for k, v in figures.items()})
        print(json.dumps(flat))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
