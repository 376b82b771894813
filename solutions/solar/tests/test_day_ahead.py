"""The learned day-ahead model: the shipped ONNX loads and gives ordered quantiles on real 2012 rows,
the backtest reports it with the same keys as the other horizons, and ``train --day-ahead`` works."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
from click.testing import CliRunner

from edgeplane_solar import day_ahead, forecasting, reference
from edgeplane_solar.cli import solar
from edgeplane_solar.plant import PlantModel


def _shipped():
    return day_ahead.DAY_AHEAD.resolve(reference.shipped_models())


def test_the_shipped_day_ahead_model_loads_and_its_quantiles_are_ordered():
    import onnx
    import onnxruntime as ort

    folder = _shipped()
    model_file = folder / "model.onnx"
    assert onnx.load(str(model_file)).ir_version == 9 and model_file.stat().st_size < 200_000
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["features"]
    prov = forecasting.read_provenance(folder)
    assert prov["train_period"] == ["2011-01-01", "2012-01-01"] and "--day-ahead" in prov["command"]
    power, _ = reference.load_system50(weather=False)
    data = day_ahead.prepare(power.values, reference.system50().plant, prov["capacity_w"], "2012-06-01", "2012-06-15")
    assert data.x.shape == (14 * day_ahead.DAY, day_ahead.N_FEATURES)
    q = session.run(["quantiles"], {"features": data.x})[0]
    assert q.shape == (len(data.x), 3) and np.isfinite(q).all()
    assert (q[:, 0] <= q[:, 1] + 1e-6).all() and (q[:, 1] <= q[:, 2] + 1e-6).all() and (q >= 0).all()
    # no power at night, some at noon
    night = data.x[:, day_ahead.CLEARSKY_COLUMN] == 0
    assert night.any() and (q[night] == 0).all() and q[:, 1].max() > 0.3


def test_the_shipped_day_ahead_model_stays_under_its_caps_for_any_input():
    """P50 <= cap_p50 x clear sky and P90 <= cap_p90 x clear sky hold in the graph itself: on real rows, on
    steady days far from the training year, and on rows with every input pushed far out of range."""
    import onnxruntime as ort

    folder = _shipped()
    prov = forecasting.read_provenance(folder)
    cap_p50, cap_p90 = prov["cap_p50"], prov["cap_p90"]
    assert cap_p50 in day_ahead.CAPS_P50 and cap_p90 in day_ahead.CAPS_P90 and cap_p50 <= 1.0
    power, _ = reference.load_system50(weather=False)
    real = day_ahead.prepare(power.values, reference.system50().plant, prov["capacity_w"], "2012-06-01", "2012-06-08").x
    steady = []
    for k in (0.3, 0.6, 0.9, 1.2):  # yesterday (and the day before) a constant share of clear sky
        times = pd.date_range("2012-12-19", periods=3 * day_ahead.DAY, freq="15min", tz="UTC")
        model = PlantModel(reference.system50().plant)
        cs = model.clearsky_ac(times) / prov["capacity_w"]
        elevation = 90 - model.solar_position(times)["zenith"].to_numpy()
        steady.append(day_ahead.build(times, k * cs, cs, elevation, -105.18).x)
    rng = np.random.default_rng(0)
    wild = real * rng.uniform(-3, 3, real.shape).astype(np.float32)
    wild[:, day_ahead.CLEARSKY_COLUMN] = real[:, day_ahead.CLEARSKY_COLUMN]  # the sun stays where it is
    x = np.concatenate([real, *steady, wild]).astype(np.float32)
    q = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        ["quantiles"], {"features": x})[0]
    cs = x[:, day_ahead.CLEARSKY_COLUMN]
    assert (q[:, 1] <= cap_p50 * cs + 1e-6).all() and (q[:, 2] <= cap_p90 * cs + 1e-6).all()
    assert (q >= 0).all() and (q[:, 0] <= q[:, 1] + 1e-6).all() and (q[:, 1] <= q[:, 2] + 1e-6).all()
    assert (q[:, 1] >= cap_p50 * cs - 1e-6).any(), "on some of these rows the cap is what holds the median down"


def test_no_future_power_in_the_day_ahead_features():
    timed, _ = reference.load_system50(weather=False)
    power, plant = timed.values, reference.system50().plant
    cap = 3143.0
    a = day_ahead.prepare(power, plant, cap, "2012-06-10", "2012-06-11")
    changed = power.copy()
    day = (changed.index >= "2012-06-10") & (changed.index < "2012-06-11 00:00")
    changed[day] = 0.0  # the target day's own power must not reach its features
    b = day_ahead.prepare(changed, plant, cap, "2012-06-10", "2012-06-11")
    assert np.array_equal(a.x, b.x) and not np.array_equal(np.nan_to_num(a.target), np.nan_to_num(b.target))


def test_backtest_reports_the_learned_day_ahead_model():
    result = CliRunner().invoke(solar, ["backtest", "--horizons", "1h,day-ahead", "--start", "2012-06-01",
                                        "--end", "2012-07-01", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    da = figures["day-ahead"]
    assert set(figures["1h"]) <= set(da)  # the same keys as the intraday horizons, coverage included
    assert {"coverage_p10_p90", "skill_persistence", "skill_smart_persistence", "nrmse_daily_index"} <= set(da)
    assert da["n"] > 800 and 0 < da["nmae"] < da["nrmse"] < 0.5 and 0.5 < da["coverage_p10_p90"] <= 1
    assert "solar-day-ahead" in result.output


def test_train_day_ahead_smoke_writes_a_loadable_model(tmp_path):
    out = tmp_path / "models"
    result = CliRunner().invoke(solar, ["train", "--day-ahead", "--start", "2011-06-01", "--end", "2011-06-20",
                                        "--epochs", "1", "--out", str(out), "--version", "3"])
    assert result.exit_code == 0, result.output
    folder = out / "solar-day-ahead" / "3"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["provenance"]["epochs"] == 1 and manifest["inputs"][0]["shape"][1] == day_ahead.N_FEATURES
    result = CliRunner().invoke(solar, ["backtest", "--day-ahead-model", str(out), "--horizons", "day-ahead",
                                        "--start", "2012-06-01", "--end", "2012-06-08", "--json"])
    assert result.exit_code == 0, result.output
    assert str(folder) in result.output
    assert set(json.loads(result.output.strip().splitlines()[-1])) == {"day-ahead"}


def test_day_ahead_selection_never_trains_on_validation_weeks(monkeypatch):
    power, _ = reference.load_system50(weather=False)
    described = reference.system50()
    data = day_ahead.prepare(power.values, described.plant, described.capacity_w, "2011-05-01", "2011-07-01")
    held = forecasting.validation_rows(data.times, reference.VALIDATION_WEEKS)
    assert held.any() and (~held).any()
    fitted = []
    real_fit = day_ahead.fit

    def recording_fit(d, **kw):
        fitted.append(d.times)
        return real_fit(d, **{**kw, "epochs": 1})

    monkeypatch.setattr(day_ahead, "fit", recording_fit)
    monkeypatch.setattr(day_ahead, "DAY_AHEAD", dataclasses.replace(day_ahead.DAY_AHEAD, candidates=((4, 1), (8, 2))))
    chosen, net, report = day_ahead.select_and_fit(data, log=lambda m: None)
    assert len(fitted) == 3  # two candidates on the training weeks, then the choice on the whole span
    for times in fitted[:2]:
        assert not forecasting.validation_rows(times, reference.VALIDATION_WEEKS).any()
    assert len(fitted[2]) == len(data.times)
    best = min(report, key=lambda r: r["val_nrmse"])
    assert (chosen["hidden"], chosen["epochs"]) == (best["hidden"], best["epochs"])
    # each quantile's cap is the one with the lowest validation pinball loss, and the model carries the chosen caps
    assert (chosen["cap_p50"], chosen["cap_p90"]) == (best["cap_p50"], best["cap_p90"])
    for r in report:
        for cap, losses in ((r["cap_p50"], r["caps"]["pinball_p50"]), (r["cap_p90"], r["caps"]["pinball_p90"])):
            assert losses[str(cap)] == min(losses.values())
    assert float(net.cap_p50) == np.float32(chosen["cap_p50"]) and float(net.cap_p90) == np.float32(chosen["cap_p90"])
    assert all(r["val_n"] > 0 and np.isfinite(r["val_nrmse"]) for r in report)

