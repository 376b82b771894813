"""The one forecasting pipeline: the intraday and the day-ahead forecasters build, fit, export and run through
:mod:`edgeplane_solar.forecasting`, and the exported ONNX gives what the torch module gives."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from edgeplane_solar import dataset, day_ahead, evaluation, forecasting, plantfile, reference, training

START, END = "2011-06-01", "2011-06-15"


@pytest.fixture(scope="module")
def system50() -> tuple[dataset.Timed, dataset.Timed, plantfile.PlantFile]:
    power, weather = reference.load_system50()
    return power, weather, reference.system50()


def _shared_network(net: object) -> bool:
    cls = type(net)
    return cls.__module__ == forecasting.__name__ and cls.__qualname__ == "Forecaster.network.<locals>.QuantileNetwork"


def test_both_forecasters_fit_export_and_run_through_the_shared_pipeline(system50, tmp_path):
    power, weather, described = system50
    intraday_data = dataset.prepare(power, weather, described.plant, described.capacity_w, START, END)
    day_data = day_ahead.prepare(power.values, described.plant, described.capacity_w, START, END)
    cases = [(training.INTRADAY, training.fit(intraday_data, epochs=1, hidden=4, log=lambda m: None),
              intraday_data.frame.x),
             (day_ahead.DAY_AHEAD, day_ahead.fit(day_data, epochs=1, hidden=4, log=lambda m: None), day_data.x)]
    for spec, net, x in cases:
        assert _shared_network(net)
        if spec is day_ahead.DAY_AHEAD:
            day_ahead.set_caps(net, 0.9, 1.1)  # the caps travel into the graph
        folder = spec.save(net, tmp_path, "1", {"command": "test", "seed": 0})
        assert folder == tmp_path / spec.name / "1" and spec.resolve(tmp_path) == folder
        onnx_q = spec.run_onnx(folder / "model.onnx", x)
        torch_q = forecasting.predict(net, x)
        assert onnx_q.shape == (len(x), *spec.quantiles_shape)
        np.testing.assert_allclose(onnx_q, torch_q, atol=1e-5)
        assert (onnx_q[..., 0] <= onnx_q[..., 1] + 1e-6).all() and (onnx_q[..., 1] <= onnx_q[..., 2] + 1e-6).all()
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["inputs"][0]["shape"][1] == x.shape[1] and forecasting.read_provenance(folder)["seed"] == 0
    day_q = day_ahead.DAY_AHEAD.run_onnx(tmp_path / day_ahead.MODEL_NAME / "1" / "model.onnx", day_data.x)
    clearsky = day_data.x[:, day_ahead.CLEARSKY_COLUMN]
    assert (day_q[:, 1] <= 0.9 * clearsky + 1e-5).all() and (day_q[:, 2] <= 1.1 * clearsky + 1e-5).all()
    # a model of one kind fed the other's rows: the error says which command makes the right one
    with pytest.raises(ValueError, match="'edgeplane solar train --day-ahead'"):
        day_ahead.DAY_AHEAD.run_onnx(tmp_path / day_ahead.MODEL_NAME / "1" / "model.onnx", intraday_data.frame.x)
    # the same seed gives the same network, through either forecaster's fit
    again = day_ahead.fit(day_data, epochs=1, hidden=4, log=lambda m: None)
    day_ahead.set_caps(again, 0.9, 1.1)
    np.testing.assert_array_equal(forecasting.predict(again, day_data.x), forecasting.predict(cases[1][1], day_data.x))


def test_scores_share_one_definition_for_both_forecasters(system50):
    power, weather, described = system50
    day_data = day_ahead.prepare(power.values, described.plant, described.capacity_w, START, END)
    # without a model the baseline is the forecast: its skill against itself is 0, the others' follow from it
    baseline = day_ahead.score(day_data, None)
    assert baseline["nrmse"] == baseline["nrmse_daily_index"] and baseline["skill_daily_index"] == 0.0
    assert baseline["skill_persistence"] == pytest.approx(1 - baseline["nrmse"] / baseline["nrmse_persistence"])
    # a perfect median scores 0 error and skill 1 on the same rows as the baselines
    perfect = np.repeat(np.nan_to_num(day_data.target)[:, None], 3, axis=1)
    r = day_ahead.score(day_data, perfect)
    assert r["n"] == baseline["n"] > 0 and r["nrmse"] == 0.0 and r["skill_smart_persistence"] == 1.0
    assert r["coverage_p10_p90"] == 1.0
    # the intraday backtest's per-horizon scores are the same function on one horizon's column
    intraday_data = dataset.prepare(power, weather, described.plant, described.capacity_w, START, END)
    one_hour = evaluation.score(intraday_data, None, ["1h"])["1h"]
    y = intraday_data.targets[:, 3]
    rows = intraday_data.frame.valid & np.isfinite(y) & intraday_data.daylight[:, 3]
    direct = forecasting.point_scores(y, rows, {"persistence": intraday_data.frame.persistence[:, 3],
                                                "smart_persistence": intraday_data.frame.smart_persistence[:, 3]},
                                      None, fallback="smart_persistence")
    assert one_hour == direct and one_hour["skill_smart_persistence"] == 0.0
    assert forecasting.pinball(np.array([1.0, 2.0]), np.array([2.0, 2.0]), 0.9) == pytest.approx(0.05)


def test_validation_weeks_and_subsets_are_the_same_split_for_both(system50):
    power, _, described = system50
    day_data = day_ahead.prepare(power.values, described.plant, described.capacity_w, "2011-05-01", "2011-07-01")
    held = forecasting.validation_rows(day_data.times, reference.VALIDATION_WEEKS)
    assert held.any() and (~held).any()
    assert set(pd.DatetimeIndex(day_data.times[held]).isocalendar().week % 4) == {3}
    part = forecasting.subset(day_data, held)
    assert len(part.times) == held.sum() and part.x.shape == (held.sum(), day_ahead.N_FEATURES)
    np.testing.assert_array_equal(part.target, day_data.target[held])
    assert day_ahead.DAY_AHEAD.settings(8, None) == [(8, 15), (8, 30)]
    assert training.INTRADAY.settings(None, 99) == [(32, 99)]  # no candidate has it: the default size
