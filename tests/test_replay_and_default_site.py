"""The replay connector and the built-in default site, on a simulated clock and as a process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from edgeplane import Quality
from edgeplane.cli import default_site_path
from edgeplane.testing import wait_for, wait_for_batch


@pytest.fixture
def recording(tmp_path):
    path = tmp_path / "rec.csv"
    path.write_text(
        "# a comment line is skipped\n"
        "ts,power,temp\n"
        "2024-01-01T00:00:00Z,1.0,20\n"
        "2024-01-01T00:01:00Z,2.0,\n"
        "2024-01-01T00:02:00Z,3.0,22\n"
    )
    return path


def replay_site(path, **device):
    return {
        "site": {"id": "r"},
        "devices": {"rec": {"connector": "replay", "file": str(path), "speed": 0, "loop": False, "rebase": False,
                            "points": {"p": {"column": "power", "scale": 1000}, "temp": {}}, **device}},
    }


async def test_replay_publishes_rows_with_recorded_time_and_bad_quality_for_gaps(edgeplane_host, recording):
    site = replay_site(recording, rows_per_batch=10)
    async with edgeplane_host(site) as host:
        await wait_for(lambda: host.health()["device:rec"]["state"] == "finished")
        p_time, p_value, _ = host.bus.latest("rec/p")
        assert p_value == 3000.0 and p_time == 1704067320.0  # 00:02 UTC, scaled by 1000
    sub_site = replay_site(recording, rows_per_batch=10)
    async with edgeplane_host(sub_site) as host:
        pass  # runs again from a clean store without complaint


async def test_replay_drives_a_simulated_clock(edgeplane_host, recording, fake_clock):
    start = fake_clock.now()
    site = replay_site(recording, loop=True)
    site["devices"]["rec"]["rebase"] = True
    async with edgeplane_host(site, clock=fake_clock) as host:
        sub = host.bus.subscribe("rec/temp", maxsize=100)
        batches = [await wait_for_batch(sub) for _ in range(4)]
    stamps = [float(b.ts[0]) for b in batches]
    assert np.all(np.diff(stamps) == 60.0)  # one row a minute, and the loop goes on after 3 rows
    assert stamps[0] >= start and fake_clock.now() >= stamps[-1]
    qualities = [int(b.quality[0]) for b in batches]
    assert Quality.BAD in qualities  # the empty cell


async def test_replay_file_errors_are_clear(edgeplane_host, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,x\n1,2\n3,4\n")
    site = replay_site(bad)
    site["supervision"] = {"backoff_initial": 0.01}
    async with edgeplane_host(site) as host:
        await wait_for(lambda: host.health()["device:rec"]["restarts"] >= 1)
        detail = host.health()["device:rec"]["detail"]
        assert "no column 'power', 'temp', 'ts'" in detail or "no column" in detail


async def test_default_site_alarms_and_curtails_through_the_guard(edgeplane_host, fake_clock):
    async with edgeplane_host(default_site_path(), clock=fake_clock) as host:
        alerts = host.bus.subscribe("alerts/#", maxsize=100, overflow="drop_oldest")
        plant = host.device("plant")
        await wait_for(lambda: ("limit_pct", 80) in plant.writes, timeout=30)
        alarm = await alerts.get()
        assert alarm.kind == "alarm" and alarm.data["topic"] == "inv1/module_temp" and alarm.data["value"] > 60
        await wait_for(lambda: ("limit_pct", 100) in plant.writes, timeout=30)  # cleared in the evening
        for _ in range(500):  # the audit row is written just after the write itself
            audit = await host.store.audit()
            if len(audit) >= 2:
                break
            await asyncio.sleep(0.01)
        assert [r["value"] for r in audit[:2]] == [80, 100] and all(r["status"] == "ok" for r in audit[:2])


def test_edgeplane_run_serves_health_and_stops_on_sigterm(tmp_path):
    env = {**os.environ, "EDGEPLANE_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeplane.cli", "run", "--http-port", "0", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        port = None
        deadline = time.monotonic() + 30
        lines = []
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            message = json.loads(line)["message"]
            if "metrics and health on" in message:
                port = int(message.split(":")[2].split("/")[0])
        assert port, "".join(lines)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    assert json.load(r)["ready"] is True
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            assert b"edgeplane_bus_points_total" in r.read()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "site 'demo' stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
