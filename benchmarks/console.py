"""Site console cost: 10 open pages at 1 update/s on the solar reference site (configs/solar-plant.yaml).

The site runs as it ships (``edgeplane run``, simulators, broker, cloud end, inference) on free
ports, with a console section and one operator. The CPU time of the host process alone (not its
simulator children) is measured over equal windows in phases, interleaved and repeated:

* ``idle``: the console mounted, no page open (its 1 Hz sampler runs);
* ``sse x10``: 10 logged-in pages as the browser holds them: one server-sent-event stream each
  (every changed value once a second) and the tab's JSON refreshed every 5 s (overview or panels);
* ``poll x10`` (the naive design, for comparison): 10 pages polling the full devices snapshot
  every second instead of one shared stream;
* ``no console`` (a second host start without a console section): what the sampler itself costs.

Cost of the pages = phase CPU - idle CPU, in % of one core. The issue's bound: < 5 %.

    python benchmarks/console.py [--seconds 15] [--rounds 2] [--pages 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from edgeplane.testing import free_port

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "benchmark-password"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def site_file(folder: Path, console: bool, password_hash: str) -> tuple[Path, int]:
    """configs/solar-plant.yaml on free ports and private folders (and a console section)."""
    text = (REPO / "configs" / "solar-plant.yaml").read_text()
    while True:
        station, broker, http, base = (free_port() for _ in range(4))
        if all(_port_free(base + i) for i in range(3)):
            break
    text = text.replace('"15021"', f'"{base}"').replace('"15020"', f'"{station}"')
    text = text.replace("tcp://127.0.0.1:15020", f"tcp://127.0.0.1:{station}")
    for i in range(3):
        text = text.replace(f"tcp://127.0.0.1:{15021 + i}", f"tcp://127.0.0.1:{base + i}")
    text = text.replace("18832", str(broker)).replace("port: 8712", f"port: {http}")
    text = text.replace("/tmp/edgeplane-solar-cloud", str(folder / "cloud")).replace("/tmp/edgeplane-solar-models", str(folder / "models"))
    live = "\n".join(line.split("#")[0] for line in text.splitlines())
    if re.search(r"1502[0-3]|18832|8712", live):
        raise SystemExit("configs/solar-plant.yaml changed shape: update benchmarks/console.py's port rewriting")
    text += f"\nstore: {{path: {folder / 'store'}}}\n"
    if console:
        text += "console:\n  users:\n    bench: {role: operator, password_hash: \"${env:BENCH_CONSOLE_HASH}\"}\n"
    path = folder / "solar-plant.yaml"
    path.write_text(text)
    return path, http


class RunningSite:
    def __init__(self, console: bool, password_hash: str):
        self.folder = Path(tempfile.mkdtemp(prefix="edgeplane-console-bench-"))
        self.path, self.port = site_file(self.folder, console, password_hash)
        env = dict(os.environ, BENCH_CONSOLE_HASH=password_hash)
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "edgeplane"), "run", str(self.path)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=open(self.folder / "host.log", "w"),
                                     start_new_session=True)
        self.process = psutil.Process(self.proc.pid)
        self.base = f"http://127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise SystemExit(f"the host exited: see {self.folder / 'host.log'}")
                try:
                    async with s.get(self.base + "/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.5)
        raise SystemExit(f"the site was not ready within {timeout} s: see {self.folder / 'host.log'}")

    def cpu(self) -> float:
        t = self.process.cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


async def page(base: str, mode: str, tab: str, stop: asyncio.Event, counts: dict[str, int], ready: list[int]) -> None:
    """One open console page: logged in, then SSE + a tab refresh every 5 s, or polling."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.post(base + "/console/api/login", json={"user": "bench", "password": PASSWORD}) as r:
            r.raise_for_status()
        async with s.get(base + "/console/api/devices") as r:
            await r.read()
        if mode == "sse":
            async def refresh() -> None:
                while not stop.is_set():
                    async with s.get(base + f"/console/api/{tab}") as r:
                        await r.read()
                    await asyncio.sleep(5)

            refresher = asyncio.create_task(refresh())
            async with s.get(base + "/console/api/stream") as r:
                ready.append(1)
                while not stop.is_set():
                    try:
                        line = await asyncio.wait_for(r.content.readline(), 1)
                    except asyncio.TimeoutError:
                        continue
                    if line.startswith(b"data: "):
                        counts["messages"] += 1
                        counts["bytes"] += len(line)
            refresher.cancel()
        else:
            ready.append(1)
            while not stop.is_set():
                async with s.get(base + "/console/api/devices") as r:
                    body = await r.read()
                counts["messages"] += 1
                counts["bytes"] += len(body)
                await asyncio.sleep(1)


async def phase(site: RunningSite, mode: str, pages: int, seconds: float) -> dict[str, float]:
    stop = asyncio.Event()
    counts = {"messages": 0, "bytes": 0}
    ready: list[int] = []
    tasks = [asyncio.create_task(page(site.base, mode, "overview" if i % 2 else "panels", stop, counts, ready))
             for i in range(pages if mode != "idle" else 0)]
    # logins (argon2, deliberately costly) and first loads are not the steady state: wait them out
    deadline = time.monotonic() + 60
    while len(ready) < len(tasks):
        if time.monotonic() > deadline or any(t.done() for t in tasks):
            raise SystemExit(f"pages did not open: {[t.exception() for t in tasks if t.done()]}")
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)
    counts.update(messages=0, bytes=0)
    before, start = site.cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    used, elapsed = site.cpu() - before, time.monotonic() - start
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"cpu_pct": 100 * used / elapsed, "updates_per_page_s": counts["messages"] / max(pages, 1) / elapsed,
            "kib_per_s": counts["bytes"] / 1024 / elapsed}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from edgeplane.console.auth import hash_password

    hashed = hash_password(PASSWORD)
    results: dict[str, list[dict[str, float]]] = {"idle": [], "sse": [], "poll": [], "no_console": []}
    site = RunningSite(True, hashed)
    try:
        await site.ready()
        await asyncio.sleep(5)  # past the start-up work (model warm-up, first forecasts)
        for _ in range(args.rounds):
            for mode in ("idle", "sse", "poll"):
                results[mode].append(await phase(site, mode, args.pages, args.seconds))
    finally:
        site.stop()
    if not args.skip_no_console:
        plain = RunningSite(False, hashed)
        try:
            await plain.ready()
            await asyncio.sleep(5)
            for _ in range(args.rounds):
                results["no_console"].append(await phase(plain, "idle", 0, args.seconds))
        finally:
            plain.stop()

    def mean(mode: str, key: str) -> float:
        return statistics.fmean(r[key] for r in results[mode]) if results[mode] else float("nan")

    idle = mean("idle", "cpu_pct")
    return {
        "pages": args.pages, "seconds_per_phase": args.seconds, "rounds": args.rounds,
        "host_cpu_no_console_pct": round(mean("no_console", "cpu_pct"), 2),
        "host_cpu_console_idle_pct": round(idle, 2),
        "host_cpu_sse_pages_pct": round(mean("sse", "cpu_pct"), 2),
        "host_cpu_poll_pages_pct": round(mean("poll", "cpu_pct"), 2),
        "sse_pages_cost_pct_of_core": round(mean("sse", "cpu_pct") - idle, 2),
        "poll_pages_cost_pct_of_core": round(mean("poll", "cpu_pct") - idle, 2),
        "sampler_cost_pct_of_core": round(idle - mean("no_console", "cpu_pct"), 2),
        "sse_updates_per_page_per_s": round(mean("sse", "updates_per_page_s"), 2),
        "sse_kib_per_s_all_pages": round(mean("sse", "kib_per_s"), 1),
        "poll_kib_per_s_all_pages": round(mean("poll", "kib_per_s"), 1),
        "cpu_samples_pct": {k: [round(r["cpu_pct"], 2) for r in v] for k, v in results.items()},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each measured phase")
    parser.add_argument("--rounds", type=int, default=2, help="times each phase is repeated (interleaved)")
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--skip-no-console", action="store_true", help="skip the second host start without a console")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.seconds <= 0 or args.rounds < 1 or args.pages < 1:
        parser.error("--seconds, --rounds and --pages must be positive")
    out = asyncio.run(main(args))
    print(f"site console on the solar reference site: {args.pages} pages, {args.rounds} x {args.seconds:g} s per phase")
    print(f"{'phase':<34} {'host CPU % of one core':>24}")
    rows = [("no console section", out["host_cpu_no_console_pct"]), ("console, no page open", out["host_cpu_console_idle_pct"]),
            (f"{args.pages} pages, SSE (as shipped)", out["host_cpu_sse_pages_pct"]),
            (f"{args.pages} pages polling /devices each 1 s", out["host_cpu_poll_pages_pct"])]
    for name, value in rows:
        print(f"{name:<34} {value:>24.2f}")
    print(f"cost of {args.pages} SSE pages: {out['sse_pages_cost_pct_of_core']:.2f} % of one core "
          f"(bound 5 %); polling instead: {out['poll_pages_cost_pct_of_core']:.2f} %; sampler: {out['sampler_cost_pct_of_core']:.2f} %")
    print(f"updates per page per s: {out['sse_updates_per_page_per_s']:.2f}; SSE traffic {out['sse_kib_per_s_all_pages']} KiB/s, "
          f"polling {out['poll_kib_per_s_all_pages']} KiB/s")
    if args.json:
        print(json.dumps(out))
