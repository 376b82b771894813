"""Host start: time from `edgeplane run` (default site) to /readyz answering 200, and its RSS.

Baseline in the same run: a bare `python -c pass` start, which no Python program beats.

    python benchmarks/host.py [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import psutil

from edgeplane.testing import free_port


def one_run(data_dir: str) -> tuple[float, float]:
    port = free_port()
    env = {**os.environ, "EDGEPLANE_DATA_DIR": data_dir}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "edgeplane.cli", "run", "--http-port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"edgeplane run exited early: {proc.stderr.read().decode()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.005)
        ready = time.perf_counter() - start
        time.sleep(1.0)  # let it run a second of the replay before reading its memory
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    return ready, rss


def bare_python() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        one_run(data_dir)  # warm the file cache (bytecode, wheels) like a node that has run before
        runs = [one_run(data_dir) for _ in range(args.runs)]
    bare = statistics.median(bare_python() for _ in range(args.runs))
    ready = [r for r, _ in runs]
    rss = [m for _, m in runs]
    result = {
        "ready_s_median": statistics.median(ready),
        "ready_s_max": max(ready),
        "rss_mb_median": statistics.median(rss),
        "rss_mb_max": max(rss),
        "bare_python_start_s": bare,
        "runs": args.runs,
    }
    print(f"{'figure':<34} {'value':>10}  target")
    print(f"{'edgeplane run -> /readyz 200 (s)':<34} {result['ready_s_median']:>10.3f}  < 1 s  (max {result['ready_s_max']:.3f})")
    print(f"{'RSS of the running host (MB)':<34} {result['rss_mb_median']:>10.1f}  < 80 MB (max {result['rss_mb_max']:.1f})")
    print(f"{'bare python -c pass (s)':<34} {bare:>10.3f}  baseline")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
