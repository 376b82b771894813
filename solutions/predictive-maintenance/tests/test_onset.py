"""Degradation onset on run-to-failure trends: the evaluator's counting, another file layout, data-quality faults."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeplane_pdm.cli import pdm
from edgeplane_pdm.datasets import load_ims, shared_data
from edgeplane_pdm.onset import detect_onset, evaluate_run
from edgeplane_pdm.quality import trend_faults, window_fault

IMS = shared_data("ims", "merged_dataset_BearingTest_2.csv")


def invoke(*args: str):
    return CliRunner().invoke(pdm, ["evaluate", "anomaly", *args])


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def synthetic_run(path: Path, seed: int = 3) -> Path:
    """A run shaped unlike IMS test 2: 8 columns (two accelerometers per bearing, "Bearing n Cm"),
    every 5 minutes with jitter for the first 20 h then every 10, a 10-hour break-in at a higher
    level, 330 h long; bearings 3 and 4 degrade from hour 230 and 260 and fail at the end, their
    neighbours pick up part of the shaft-borne vibration; and sensor faults on healthy bearings:
    a stuck channel, a missing stretch, a channel dropped to near zero, a saturated one."""
    rng = np.random.default_rng(seed)
    t, hours = 0.0, []
    while t < 330:
        hours.append(t)
        t += (5 + rng.uniform(-1, 1)) / 60 if t < 20 else 10 / 60
    h = np.array(hours)
    base = np.array([0.11, 0.09, 0.13, 0.10])
    own = np.zeros((len(h), 4))
    for b, onset in ((2, 230.0), (3, 260.0)):
        x = np.clip(h - onset, 0, None)
        own[:, b] = np.log1p(0.004 * x**1.5)  # slow at first, then accelerating towards failure
    shaft = 0.35 * own.max(axis=1)  # what the healthy neighbours feel of a failing bearing
    break_in = 0.35 * np.exp(-h / 4.0)
    columns, data = [], []
    for b in range(4):
        for c in range(2):
            columns.append(f"Bearing {b + 1} C{c + 1}")
            gain = 1.0 + 0.15 * c  # the second accelerometer sits differently, reads higher
            noise = rng.normal(0, 0.03, len(h))
            level = base[b] * gain * np.exp(own[:, b] + np.where(own[:, b] > 0, 0, shaft) + break_in + noise)
            data.append(level.astype(object))
    data = np.array(data).T
    stuck = (h > 150) & (h < 160)
    data[stuck, 2] = data[np.argmax(stuck), 2]  # Bearing 2 C1 frozen for 10 h
    data[(h > 180) & (h < 185), 0] = ""  # Bearing 1 C1 stops reporting for 5 h
    data[(h > 200) & (h < 204), 3] = 1e-4  # Bearing 2 C2's cable comes loose
    sat = (h > 120) & (h < 123)
    data[sat, 1] = 5.0  # Bearing 1 C2 clips at full scale
    t0 = datetime(2003, 10, 22, 12, 6, 24)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", *columns])
        for hour, row in zip(h, data):
            w.writerow([(t0 + timedelta(hours=float(hour))).strftime("%Y.%m.%d.%H.%M.%S"), *row])
    return path


def test_ims_test2_counts_every_healthy_bearing_alert_and_the_failed_bearing_lead():
    result = invoke("--data", str(IMS), "--failed", "Bearing 1", "--json")
    assert result.exit_code == 0, result.output
    out = last_json(result.output)
    rows = {r["bearing"]: r for r in out["bearings"]}
    assert set(rows) == {"Bearing 1", "Bearing 2", "Bearing 3", "Bearing 4"}
    assert rows["Bearing 1"]["failed"] and not rows["Bearing 2"]["failed"]
    # the top level is the failed bearing's, and false alerts sum every bearing's
    assert out["lead_time_hours"] == rows["Bearing 1"]["lead_time_hours"]
    assert out["false_alerts"] == sum(r["false_alerts"] for r in out["bearings"])
    assert out["lead_time_hours"] >= 24
    assert out["false_alerts"] == 0
    # the machine was stopped for the last two snapshots: read as sensor data quality, never as degradation
    assert all(d["reason"] == "near_zero" for r in out["bearings"] for d in r["data_quality_alerts"])


def test_second_layout_two_channels_per_bearing_irregular_sampling(tmp_path: Path):
    path = synthetic_run(tmp_path / "test1_like.csv")
    result = invoke("--data", str(path), "--failed", "Bearing 3,Bearing 4", "--json")
    assert result.exit_code == 0, result.output
    out = last_json(result.output)
    rows = {r["bearing"]: r for r in out["bearings"]}
    assert rows["Bearing 3"]["channels"] == ["Bearing 3 C1", "Bearing 3 C2"]
    assert out["failed"] == ["Bearing 3", "Bearing 4"]
    # one lead time per failed bearing; the top level is the smaller
    assert out["lead_time_hours"] == min(rows["Bearing 3"]["lead_time_hours"], rows["Bearing 4"]["lead_time_hours"])
    assert rows["Bearing 3"]["lead_time_hours"] > rows["Bearing 4"]["lead_time_hours"] >= 24
    assert out["false_alerts"] == 0
    assert rows["Bearing 1"]["alerts"] == rows["Bearing 2"]["alerts"] == 0
    reasons = {(d["channel"], d["reason"]) for r in out["bearings"] for d in r["data_quality_alerts"]}
    assert {("Bearing 2 C1", "stuck"), ("Bearing 1 C1", "missing"), ("Bearing 2 C2", "near_zero"),
            ("Bearing 1 C2", "saturated")} <= reasons
    assert all(d["kind"] == "data_quality" for r in out["bearings"] for d in r["data_quality_alerts"])


def test_false_alerts_count_healthy_bearings_anywhere_and_failed_ones_in_the_first_half(tmp_path: Path):
    run = load_ims(synthetic_run(tmp_path / "run.csv"))
    # call the degrading bearings healthy and a quiet one failed: their late alerts are all false
    out = evaluate_run(run, ["Bearing 1"])
    rows = {r["bearing"]: r for r in out["bearings"]}
    late = rows["Bearing 3"]["alerts"] + rows["Bearing 4"]["alerts"]
    assert late >= 2 and out["false_alerts"] == late
    assert out["lead_time_hours"] is None  # the "failed" bearing never alerted


def test_without_failed_alerts_per_bearing_and_no_lead_time(tmp_path: Path):
    result = invoke("--data", str(synthetic_run(tmp_path / "run.csv")), "--json")
    assert result.exit_code == 0, result.output
    out = last_json(result.output)
    assert out["lead_time_hours"] is None and out["false_alerts"] is None
    assert {r["bearing"]: r["alerts"] for r in out["bearings"]}["Bearing 3"] >= 1
    assert "lead_time_hours" not in out["bearings"][0]


def test_sensor_faults_never_raise_degradation(tmp_path: Path):
    # a healthy bearing whose one channel saturates for a day: data-quality alert, no degradation
    run = load_ims(synthetic_run(tmp_path / "run.csv"))
    run.values[(run.ts - run.ts[0]) / 3600 > 100, 0] = 9.0
    bearing1 = next(b for b in detect_onset(run) if b.bearing == "Bearing 1")
    assert bearing1.alerts == []
    assert any(d["channel"] == "Bearing 1 C1" and d["reason"] == "saturated" for d in bearing1.data_quality)


def test_trend_and_window_fault_rules():
    v = np.array([1.0, 1.1, np.nan, 0.9, 0.9, 0.9, 1.2, 0.05, 3.0, 3.0, 3.0])
    assert list(trend_faults(v, healthy_level=1.0)) == ["", "", "missing", "stuck", "stuck", "stuck", "", "near_zero",
                                                        "saturated", "saturated", "saturated"]
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 4096)
    assert window_fault(x, healthy_rms=1.0) is None
    assert window_fault(np.full(4096, 0.3)) == "stuck"
    assert window_fault(0.01 * x, healthy_rms=1.0) == "near_zero"
    assert window_fault(np.clip(x, -1.5, 1.5)) == "saturated"


@pytest.mark.parametrize("case", ["layout", "failed", "short", "time"])
def test_bad_input_is_a_clear_message_and_exit_2(tmp_path: Path, case: str):
    path = tmp_path / "bad.csv"
    if case == "layout":
        path.write_text("time,x,y\n2004-02-12 10:32:39,1,2\n2004-02-12 10:42:39,1,2\n")
        args, expect = ["--data", str(path)], "column 'x' does not name a bearing"
    elif case == "failed":
        args, expect = ["--data", str(IMS), "--failed", "Bearing 1,Bearing 9"], "'Bearing 9' matches no bearing"
    elif case == "short":
        path.write_text("".join([",Bearing 1\n"] + [f"2004-02-12 {h:02d}:00:00,0.1{h}\n" for h in range(10)]))
        args, expect = ["--data", str(path)], "shorter than the break-in"
    else:
        path.write_text(",Bearing 1\nyesterday,0.1\n2004-02-12 10:42:39,0.1\n")
        args, expect = ["--data", str(path)], "row 2: first column 'yesterday' is not a time"
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert expect in result.output
