"""The factory and intersection panels, drawn from real solutions in a host (the solar one is
covered in a browser by test_browser.py)."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np

from edgeplane import Batch
from edgeplane.testing import run_host, wait_for


async def _panels(host, user) -> list[dict]:
    base = f"http://127.0.0.1:{host.http_address[1]}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.post(base + "/console/api/login", json={"user": user[0], "password": user[1]}) as r:
            assert r.status == 200
        async with s.get(base + "/console/api/panels") as r:
            return (await r.json())["panels"]


def _widget(panel: dict, title: str) -> dict:
    return next(w for w in panel["widgets"] if w["title"].startswith(title))


async def test_the_factory_panel_shows_features_health_and_alerts(tmp_path, console_users, operator):
    import edgeplane_pdm.plugin
    from edgeplane_pdm.features import CWRU_DRIVE_END, fault_frequencies, synthetic_bearing_signal

    fs, shaft = 12_000.0, 1797 / 60
    machine = {"vibration": "sensor/vib", "sample_rate": fs, "shaft_rpm": 1797, "bearing": CWRU_DRIVE_END.model_dump()}
    site = {"site": {"id": "factory-console"}, "http": {"port": 0}, "console": {"users": console_users},
            "inference": {"providers": ["cpu"], "models": str(tmp_path / "models")},
            "solutions": {"line": {"type": "pdm", "window": 4096, "commissioning": 5, "alert": {"persist": 2},
                                   "machines": {"m1": machine}}}}
    bpfo = fault_frequencies(CWRU_DRIVE_END, shaft)["bpfo"]
    async with run_host(site, plugins=[edgeplane_pdm.plugin], store_dir=tmp_path / "store", http_port=0) as host:
        solution = host.solution("line")
        for i in range(12):  # five healthy windows commission the baseline, then an outer-race defect
            x = synthetic_bearing_signal(fs, 4096 / fs, shaft, bpfo if i >= 8 else None, impact=2.0, seed=i)
            await host.bus.publish(Batch.of("sensor/vib", 1_700_000_000.0 + i + np.arange(4096) / fs, x))
            await wait_for(lambda n=i + 1: solution.machines["m1"].windows == n, timeout=30)
        await wait_for(lambda: solution.status()["m1"]["alert"] is not None, timeout=30)
        await asyncio.sleep(1.2)  # the console samples the bus once a second
        (panel,) = await _panels(host, operator)
    assert panel["type"] == "pdm" and panel["error"] is None
    machines = _widget(panel, "Machines")
    row = dict(zip(machines["columns"], machines["rows"][0]))
    assert row["machine"] == "m1" and row["windows"] == 12 and row["alert"] in ("warning", "critical")
    assert row["RMS"] > 0 and row["strongest bearing tone"].startswith("BPFO")
    alerts = _widget(panel, "Recent alerts")["rows"]
    assert alerts and alerts[0][1] == "m1" and "BPFO" in alerts[0][5]
    assert _widget(panel, "Anomaly score")["series"][0]["points"]


async def test_the_intersection_panel_shows_phase_queues_and_the_shield(tmp_path, console_users, operator):
    import edgeplane_traffic.plugin
    from edgeplane_traffic.layout import point_name

    site = {"site": {"id": "intersection-console"}, "http": {"port": 0}, "console": {"users": console_users},
            "devices": {"tl": {"connector": "memory", "points": {}}},
            "solutions": {"signal": {"type": "traffic-signal", "device": "tl", "net": "cologne1", "controller": "fixed"}}}
    async with run_host(site, plugins=[edgeplane_traffic.plugin], store_dir=tmp_path / "store", http_port=0) as host:
        layout = host.solution("signal").layout
        key = point_name(layout.tls)
        lanes = layout.lanes
        await host.bus.publish_many([Batch.of(f"tl/lane.{point_name(lane)}.halting", 10.0, float(k))
                                     for k, lane in enumerate(lanes)])
        await host.bus.publish(Batch.of(f"tl/{key}.phase_time", 10.0, 3.0))
        await host.bus.publish(Batch.of(f"tl/{key}.phase", 10.0, 0.0))
        await asyncio.sleep(1.2)
        (panel,) = await _panels(host, operator)
    assert panel["type"] == "traffic-signal" and panel["error"] is None
    stats = _widget(panel, "Signal")["items"]
    assert stats["phase"] == 0 and stats["kind"] == "green" and stats["signal state"] == layout.green_states[0]
    assert stats["in phase s"] == 3.0 and isinstance(stats["shield interventions"], int)
    queues = _widget(panel, "Queues")["rows"]
    assert [r[0] for r in queues][0] == lanes[-1] and queues[0][1] == len(lanes) - 1  # busiest lane first
    assert _widget(panel, "Shield interventions by rule")["columns"] == ["rule", "count"]
