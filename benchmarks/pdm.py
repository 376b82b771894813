"""Predictive maintenance at the edge: vibration channels at 12 kHz one core keeps up with.

For N channels of 12 kHz vibration (CWRU recordings from the demo's sample, each channel a
different slice and gain), every 4096-sample window (0.34 s of signal) goes through what the
``pdm`` solution does per window: the data-quality check, the anomaly features, the fault
classifier's features, then batched inference over the N channels (``pdm-faults`` and
``pdm-anomaly`` on ONNX Runtime, one thread). Everything runs on one pinned core.

Channels per core in real time = N x (window duration / time per round of N windows), from the
process's CPU time (what one core must give it; on a shared machine wall time also counts the
time other processes held the core) and, alongside, from wall time.
Baselines in the same run: a bare ``numpy.fft.rfft`` of each window (the least any spectral
monitor does), and the anomaly features alone (the classifier's features are the added cost).

    python benchmarks/pdm.py [--channels 200] [--rounds 5] [--json]
"""

from __future__ import annotations

import os

# one core means one thread everywhere: set before numpy, scipy and onnxruntime load their pools
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

FS = 12_000.0
WINDOW = 4096


def pin_one_core() -> int:
    """Pin this process to the last core it may run on; returns that core."""
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[-1]})
    return cores[-1]


def channels(n: int, seed: int = 0) -> list[np.ndarray]:
    """N windows of real vibration: slices of the demo's CWRU sample (normal and outer race faults)."""
    from edgeplane_pdm.sample import load

    sample = load()
    sources = [sample["normal"], sample["outer_race_007"], sample["outer_race_021"]]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = sources[i % 3]
        start = int(rng.integers(0, len(x) - WINDOW))
        out.append(x[start:start + WINDOW] * rng.uniform(0.5, 2.0))
    return out


def sessions() -> tuple[object, object]:
    import onnxruntime as ort

    from edgeplane_pdm.cli import ANOMALY, FAULTS, MODELS, _latest

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    made = []
    for name in (FAULTS, ANOMALY):
        path, _ = _latest(MODELS, name)
        made.append(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
    return made[0], made[1]


def run_round(windows: list[np.ndarray], faults_session: object, anomaly_session: object, center: np.ndarray,
              scale: np.ndarray, *, classify: bool = True) -> None:
    from edgeplane_pdm.features import CWRU_DRIVE_END, window_and_fault_features, window_features
    from edgeplane_pdm.quality import window_fault

    shaft_hz = 1797 / 60
    anomaly_rows, fault_rows = [], []
    for w in windows:
        if window_fault(w) is not None:
            continue
        if classify:  # as the solution does: both feature sets in one call, sharing the envelope
            feats, fault_vector = window_and_fault_features(w, FS, shaft_hz, CWRU_DRIVE_END)
            anomaly_rows.append(feats.vector())
            fault_rows.append(fault_vector)
        else:
            anomaly_rows.append(window_features(w, FS, shaft_hz, CWRU_DRIVE_END).vector())
    x = np.array(anomaly_rows, dtype=np.float32)
    n = len(x)
    anomaly_session.run(None, {"features": x, "center": np.repeat(center[None], n, 0), "scale": np.repeat(scale[None], n, 0)})
    if classify:
        faults_session.run(None, {"features": np.array(fault_rows, dtype=np.float32)})


def timed(fn, rounds: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per call."""
    fn()  # warm up: filter design caches, ONNX Runtime's first run
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.process_time() - cpu) / rounds, (time.perf_counter() - wall) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    core = pin_one_core()
    windows = channels(args.channels)
    faults_session, anomaly_session = sessions()
    from edgeplane_pdm.features import CWRU_DRIVE_END, window_features

    base = np.array([window_features(w, FS, 29.95, CWRU_DRIVE_END).vector() for w in windows[:30]])
    center, scale = np.median(base, axis=0).astype(np.float32), np.ones(base.shape[1], dtype=np.float32)
    window_s = WINDOW / FS

    rows = []
    for label, fn in (
        ("numpy rfft only (baseline)", lambda: [np.fft.rfft(w) for w in windows]),
        ("anomaly features + scoring", lambda: run_round(windows, faults_session, anomaly_session, center, scale, classify=False)),
        ("full pdm window (quality, both feature sets, both models)",
         lambda: run_round(windows, faults_session, anomaly_session, center, scale)),
    ):
        cpu, wall = timed(fn, args.rounds)
        rows.append((label, cpu, 1000 * cpu / args.channels, args.channels * window_s / cpu, args.channels * window_s / wall))

    print(f"{args.channels} channels at {FS / 1000:g} kHz, {WINDOW}-sample windows ({1000 * window_s:.0f} ms of signal), "
          f"core {core}, {args.rounds} rounds")
    header = ("stage", "CPU s per round", "CPU ms per channel-window", "channels per core (CPU time)", "(wall time)")
    widths = [max(len(header[0]), *(len(r[0]) for r in rows)), 15, 25, 28, 11]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for label, per_round, ms, cpc, cpc_wall in rows:
        print(f"{label.ljust(widths[0])}  {per_round:15.3f}  {ms:25.3f}  {cpc:28.0f}  {cpc_wall:11.0f}")
    print(f"load average while measured: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    full = rows[-1]
    print(f"target >= 200 channels per core: {'met' if full[3] >= 200 else 'MISSED'} ({full[3]:.0f})")
    if args.json:
        print(json.dumps({
            "channels": args.channels, "sample_rate_hz": FS, "window_samples": WINDOW,
            "full_cpu_ms_per_channel_window": round(full[2], 4), "full_channels_per_core": round(full[3], 1),
            "full_channels_per_core_wall": round(full[4], 1), "anomaly_only_channels_per_core": round(rows[1][3], 1),
            "rfft_only_channels_per_core": round(rows[0][3], 1), "target_channels_per_core": 200,
            "load_average_1min": round(os.getloadavg()[0], 2),
        }))


if __name__ == "__main__":
    main()
