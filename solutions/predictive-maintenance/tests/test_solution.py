"""The pdm solution inside a host fed by the memory bus: config errors, bad samples, health, alerts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from edgeplane import Batch, Event, Quality, SiteError
from edgeplane.testing import wait_for

from edgeplane_pdm.features import CWRU_DRIVE_END, fault_frequencies, synthetic_bearing_signal
from edgeplane_pdm.solution import health_index

FS, SHAFT = 12_000.0, 1797 / 60


def site(**solution) -> dict:
    machine = {"vibration": "sensor/vib", "temperature": "sensor/temp", "sample_rate": FS, "shaft_rpm": 1797,
               "bearing": CWRU_DRIVE_END.model_dump()}
    base = {"type": "pdm", "window": 4096, "commissioning": 5, "alert": {"persist": 2}, "machines": {"m1": machine}}
    base.update(solution)
    return {"site": {"id": "pdm-unit"}, "solutions": {"pdm": base}, "inference": {"providers": ["cpu"], "models": "models"}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"alert": {"high": 3, "clear": 5}}, "clear < high"),
        ({"machines": {}}, "machines"),
        ({"window": 100}, "window"),
    ],
)
def test_bad_solution_config_names_the_path(edgeplane_site, plugins, change, message):
    with pytest.raises(SiteError) as info:
        edgeplane_site(site(**change), plugins=plugins)
    assert "pdm" in str(info.value) and message in str(info.value)


def test_envelope_band_above_nyquist_is_refused(edgeplane_site, plugins):
    s = site()
    s["solutions"]["pdm"]["machines"]["m1"]["envelope_band"] = [1000, 7000]
    with pytest.raises(SiteError, match="Nyquist"):
        edgeplane_site(s, plugins=plugins)


def test_health_index_shape():
    assert health_index(0.5, 6) == 100
    assert health_index(1.0, 6) == 100
    assert 55 < health_index(6.0, 6) < 65
    assert health_index(20, 6) < health_index(12, 6) < health_index(6, 6)


async def test_commissioning_then_fault_then_alert_with_bpfo_evidence(edgeplane_host, plugins):
    bpfo = fault_frequencies(CWRU_DRIVE_END, SHAFT)["bpfo"]
    async with edgeplane_host(site(), plugins=plugins) as host:
        solution = host.solution("pdm")
        alerts = host.bus.subscribe("alerts/#", name="test")
        t0 = 1_700_000_000.0
        for i in range(8):  # healthy: commissioning (5 windows) and 3 more
            x = synthetic_bearing_signal(FS, 4096 / FS, SHAFT, None, seed=i)
            await host.bus.publish(Batch.of("sensor/temp", t0 + i, 40.0 + 0.01 * i))
            await host.bus.publish(Batch.of("sensor/vib", t0 + i + np.arange(4096) / FS, x))
            await wait_for(lambda n=i + 1: solution.machines["m1"].windows == n, timeout=30)
        status = solution.status()["m1"]
        assert status["commissioned"] and status["alert"] is None and status["health"] > 80
        for i in range(8, 12):  # an outer race defect appears
            x = synthetic_bearing_signal(FS, 4096 / FS, SHAFT, bpfo, impact=2.0, seed=i)
            await host.bus.publish(Batch.of("sensor/vib", t0 + i + np.arange(4096) / FS, x))
            await wait_for(lambda n=i + 1: solution.machines["m1"].windows == n, timeout=30)

        async def alert() -> Event:
            while True:
                m = await alerts.get()
                if isinstance(m, Event) and m.kind == "alert":
                    return m

        event = await asyncio.wait_for(alert(), 30)
        assert event.data["evidence"]["fault_frequency"]["name"] == "BPFO"
        assert event.data["evidence"]["temperature"]["degC"] == pytest.approx(40.07)
        assert solution.status()["m1"]["health"] < 60


async def test_bad_samples_restart_the_window_and_are_counted(edgeplane_host, plugins):
    async with edgeplane_host(site(), plugins=plugins) as host:
        solution = host.solution("pdm")
        x = synthetic_bearing_signal(FS, 4096 / FS, SHAFT, None)
        quality = np.zeros(4096, dtype=np.uint8)
        quality[100] = Quality.BAD
        await host.bus.publish(Batch("sensor/vib", 1.0 + np.arange(4096) / FS, x, quality))
        await wait_for(lambda: host.metrics.value("edgeplane_dropped_total", part="pdm", reason="bad_vibration_sample") == 4096,
                       timeout=10)
        assert solution.machines["m1"].windows == 0
        # half a window, then the rest: windows may arrive in pieces
        await host.bus.publish(Batch.of("sensor/vib", 2.0 + np.arange(2048) / FS, x[:2048]))
        await host.bus.publish(Batch.of("sensor/vib", 3.0 + np.arange(2048) / FS, x[2048:]))
        await wait_for(lambda: solution.machines["m1"].windows == 1, timeout=30)


def rul_site() -> dict:
    from edgeplane_pdm.rul import SENSORS

    return {"site": {"id": "pdm-rul"}, "inference": {"providers": ["cpu"], "models": "models"},
            "solutions": {"pdm": {"type": "pdm", "rul": {"warning": 40, "critical": 15, "assets": {
                "e1": {"cycle": "eng1/cycle", "sensors": {f"s{i}": f"eng1/s{i}" for i in SENSORS}}}}}}}


def test_rul_asset_needs_every_sensor(edgeplane_site, plugins):
    s = rul_site()
    del s["solutions"]["pdm"]["rul"]["assets"]["e1"]["sensors"]["s7"]
    with pytest.raises(SiteError, match=r"missing \['s7'\]"):
        edgeplane_site(s, plugins=plugins)
    with pytest.raises(SiteError, match="nothing to watch"):
        edgeplane_site({"site": {"id": "x"}, "solutions": {"pdm": {"type": "pdm"}}}, plugins=plugins)


async def test_rul_of_a_replayed_engine_falls_and_alerts_before_failure(edgeplane_host, plugins):
    from edgeplane_pdm.datasets import load_cmapss, shared_data
    from edgeplane_pdm.rul import SENSORS

    data = load_cmapss(shared_data("cmapss", "train_FD001.txt"))
    engine = data[data[:, 0] == 3]  # 179 cycles to failure
    async with edgeplane_host(rul_site(), plugins=plugins) as host:
        solution = host.solution("pdm")
        alerts = host.bus.subscribe("alerts/#", name="test")
        predictions = host.bus.subscribe("pdm/e1/rul", name="test-rul")
        for n, row in enumerate(engine, 1):
            ts = 1_700_000_000.0 + row[1] * 60
            await host.bus.publish_many([Batch.of(f"eng1/s{i}", ts, row[4 + i]) for i in SENSORS])
            await host.bus.publish(Batch.of("eng1/cycle", ts, row[1]))
            if n % 20 == 0:  # stay within the solution's queue (it drops the oldest when full)
                await wait_for(lambda n=n: solution.rul_assets["e1"].cycles == n, timeout=60)
        await wait_for(lambda: solution.rul_assets["e1"].cycles == len(engine), timeout=60)
        first_prediction = await asyncio.wait_for(predictions.get(), 5)
        assert first_prediction.values[0] > 60  # early in life the model sees no wear
        final = solution.rul_assets["e1"].rul
        assert final is not None and final < 25  # the last cycle before failure
        events = []
        while True:
            try:
                events.append(await asyncio.wait_for(alerts.get(), 1))
            except asyncio.TimeoutError:
                break
        kinds = [e.kind for e in events if isinstance(e, Event)]
        assert kinds.count("rul_alert") == 1
        first = next(e for e in events if e.kind == "rul_alert")
        # raised while the engine still had cycles left: this is the point of a RUL model
        assert len(engine) - first.data["cycle"] >= 10
        assert first.data["rul_cycles"] < 40


async def test_the_commissioning_baseline_survives_a_restart(edgeplane_host, plugins):
    async with edgeplane_host(site(), plugins=plugins) as host:
        solution = host.solution("pdm")
        for i in range(5):  # exactly the commissioning windows
            x = synthetic_bearing_signal(FS, 4096 / FS, SHAFT, None, seed=i)
            await host.bus.publish(Batch.of("sensor/vib", 1_700_000_000.0 + i + np.arange(4096) / FS, x))
            await wait_for(lambda n=i + 1: solution.machines["m1"].windows == n, timeout=30)
        # the window is counted before its inference calls: wait for the whole analysis, not the count
        await wait_for(lambda: solution.status()["m1"]["commissioned"], timeout=30)
        center = solution.machines["m1"].baseline.center.copy()
        for _ in range(500):  # the baseline is written to the store just after commissioning
            if await host.store.get_state("pdm/pdm/m1/baseline") is not None:
                break
            await asyncio.sleep(0.01)
    # the same store (the fixture's folder): the new host starts commissioned, with the same baseline
    async with edgeplane_host(site(), plugins=plugins) as host:
        restored = host.solution("pdm")
        assert restored.status()["m1"]["commissioned"] and restored.machines["m1"].windows == 0
        assert np.allclose(restored.machines["m1"].baseline.center, center)


async def test_a_sensor_fault_raises_data_quality_never_degradation(edgeplane_host, plugins):
    async with edgeplane_host(site(), plugins=plugins) as host:
        solution = host.solution("pdm")
        alerts = host.bus.subscribe("alerts/#", name="test")
        t0 = 1_700_000_000.0
        for i in range(5):
            x = synthetic_bearing_signal(FS, 4096 / FS, SHAFT, None, seed=i)
            await host.bus.publish(Batch.of("sensor/vib", t0 + i + np.arange(4096) / FS, x))
        await wait_for(lambda: solution.status()["m1"]["commissioned"], timeout=30)
        # the cable comes loose (near zero), then the channel clips at full scale, then it is repaired
        faulty = [0.001 * synthetic_bearing_signal(FS, 4096 / FS, SHAFT, None, seed=10 + i) for i in range(3)]
        faulty += [np.clip(40 * synthetic_bearing_signal(FS, 4096 / FS, SHAFT, None, seed=20 + i), -1, 1) for i in range(3)]
        faulty += [synthetic_bearing_signal(FS, 4096 / FS, SHAFT, None, seed=30 + i) for i in range(3)]
        for i, x in enumerate(faulty):
            await host.bus.publish(Batch.of("sensor/vib", t0 + 10 + i + np.arange(4096) / FS, x))
        events = []
        while len(events) < 3:
            message = await asyncio.wait_for(alerts.get(), 30)
            if isinstance(message, Event):
                events.append(message)
        # alert.persist is 2: two windows of a new condition change it
        assert [(e.kind, e.data["reason"]) for e in events] == [
            ("data_quality", "near_zero"), ("data_quality", "saturated"), ("data_quality_clear", "saturated")]
        await wait_for(lambda: solution.machines["m1"].windows == 8, timeout=30)
        assert solution.machines["m1"].alert.raised == 0  # no degradation alert, and the faulty windows fed nothing
        assert solution.machines["m1"].windows == 5 + 3


async def test_break_in_windows_never_enter_the_baseline(edgeplane_host, plugins):
    async with edgeplane_host(site(commissioning=3, break_in=2), plugins=plugins) as host:
        solution = host.solution("pdm")
        t0 = 1_700_000_000.0
        # running in: twice the level; then three settled windows
        levels = [2.0, 2.0, 1.0, 1.0, 1.0]
        for i, level in enumerate(levels):
            x = level * synthetic_bearing_signal(FS, 4096 / FS, SHAFT, None, seed=40 + i)
            await host.bus.publish(Batch.of("sensor/vib", t0 + i + np.arange(4096) / FS, x))
            await wait_for(lambda n=i + 1: solution.machines["m1"].windows == n, timeout=30)
            if i < 4:
                assert not solution.status()["m1"]["commissioned"]
        await wait_for(lambda: solution.status()["m1"]["commissioned"], timeout=30)
        settled = np.log10(np.sqrt(np.mean(synthetic_bearing_signal(FS, 4096 / FS, SHAFT, None, seed=44) ** 2)))
        assert abs(float(solution.machines["m1"].baseline.center[0]) - settled) < 0.05  # log10 RMS of the settled level


def _rul_model_with_windows(models: Path, windows: list[int]) -> None:
    """The shipped pdm-rul model as version 99, its manifest naming other feature windows."""
    import json
    import shutil

    import edgeplane_pdm

    shipped = Path(edgeplane_pdm.__file__).parent / "models" / "pdm-rul" / "2"
    target = models / "pdm-rul" / "99"
    shutil.copytree(shipped, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest.update(version="99")
    manifest["provenance"]["windows"] = windows
    manifest.pop("signature", None)
    (target / "manifest.json").write_text(json.dumps(manifest))


async def test_rul_features_follow_the_served_models_manifest(edgeplane_host, plugins, tmp_path):
    _rul_model_with_windows(tmp_path / "models", [10, 30, 60])
    s = rul_site()
    s["inference"]["models"] = str(tmp_path / "models")
    async with edgeplane_host(s, plugins=plugins) as host:
        solution = host.solution("pdm")
        assert solution.rul_windows == (10, 30, 60)  # version 99, the newest, is served


async def test_rul_windows_that_contradict_the_models_manifest_are_refused(edgeplane_host, plugins):
    s = rul_site()
    s["solutions"]["pdm"]["rul"]["windows"] = [10, 20, 30]
    async with edgeplane_host(s, plugins=plugins) as host:
        # the host runs on; the solution does not, and its health says why and what to do
        await wait_for(lambda: "rul.windows" in str(host.health()["solution:pdm"].get("detail")), timeout=10)
        detail = host.health()["solution:pdm"]["detail"]
        assert "[10, 45, 90]" in detail and "fix: remove rul.windows" in detail
        assert not host.ready


async def test_one_multipoint_batch_feeds_each_of_its_points(edgeplane_host, plugins):
    # the host subscribes the solution multi-point: one batch of a connector's read (temperature,
    # vibration and a point it does not take) reaches on_batch once, and each point is handled
    from edgeplane.bus import PointTable

    async with edgeplane_host(site(), plugins=plugins) as host:
        solution = host.solution("pdm")
        assert host.parts["solution:pdm"].subscription.multipoint
        table = PointTable(["sensor/other", "sensor/temp", "sensor/vib"])
        x = synthetic_bearing_signal(FS, 4096 / FS, SHAFT, None)
        ids = np.repeat(np.array([0, 1, 2]), [1, 2, 4096])
        ts = np.concatenate([[1.0], [1.0, 2.0], 1.0 + np.arange(4096) / FS])
        values = np.concatenate([[7.0], [40.0, 41.0], x])
        await host.bus.publish(Batch.rows(table, ids, ts, values, Quality.GOOD))
        await wait_for(lambda: solution.machines["m1"].windows == 1, timeout=30)
        assert [v for _, v in solution.machines["m1"].temps][-2:] == [40.0, 41.0]
