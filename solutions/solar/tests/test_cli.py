"""``edgeplane solar train|backtest`` on the real PVDAQ system 50 data (shared/data/pv)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from edgeplane_solar import reference
from edgeplane_solar.cli import solar


def test_backtest_of_the_shipped_model_prints_the_table_and_json(tmp_path):
    assert reference.default_power().exists(), f"the PV data is expected at {reference.shared_data()}"
    png = tmp_path / "bt.png"
    result = CliRunner().invoke(solar, [
        "backtest", "--power", str(reference.default_power()), "--weather", str(reference.default_weather()),
        "--lat", "39.7406", "--lon", "-105.1775", "--horizons", "15min,1h,4h", "--start", "2012-06-01",
        "--end", "2012-06-22", "--plot", str(png), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert set(figures) == {"15min", "1h", "4h"}
    for label, f in figures.items():
        assert {"nrmse", "nmae", "skill_persistence", "skill_smart_persistence"} <= set(f)
        assert 0 < f["nmae"] < f["nrmse"] < 0.5
    # the learned model beats plain persistence at every horizon, and smart persistence at 1 h
    assert all(f["skill_persistence"] > 0 for f in figures.values())
    assert figures["1h"]["skill_smart_persistence"] > 0
    assert "skill/smart" in result.output and png.stat().st_size > 10_000


def test_train_smoke_writes_a_loadable_model(tmp_path):
    out = tmp_path / "models"
    result = CliRunner().invoke(solar, ["train", "--start", "2011-06-01", "--end", "2011-06-15", "--epochs", "1",
                                        "--out", str(out), "--version", "7"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "solar-forecast" / "7" / "manifest.json").read_text())
    assert manifest["provenance"]["plant"]["location"]["lat"] == 39.7406
    import onnx

    assert onnx.load(str(out / "solar-forecast" / "7" / "model.onnx")).ir_version == 9
    result = CliRunner().invoke(solar, ["backtest", "--model", str(out), "--start", "2012-06-01", "--end", "2012-06-08",
                                        "--horizons", "1h,day-ahead", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert set(figures) == {"1h", "day-ahead"}
    assert figures["day-ahead"]["n"] > 200 and 0 < figures["day-ahead"]["nmae"] < 0.5


def test_bad_input_gets_a_clear_error(tmp_path):
    result = CliRunner().invoke(solar, ["backtest", "--horizons", "20min"])
    assert result.exit_code == 2 and "multiples of 15min" in result.output
    result = CliRunner().invoke(solar, ["backtest", "--power", str(tmp_path / "nope.parquet")])
    assert result.exit_code == 1 and "nope.parquet: no such file" in result.output
    bad = tmp_path / "w.csv"
    bad.write_text("time,temp\n2012-01-01T00:00Z,3\n")
    result = CliRunner().invoke(solar, ["backtest", "--weather", str(bad)])
    assert result.exit_code == 1 and "needs a 'ghi' column" in result.output


def test_the_solar_group_is_an_edgeplane_command():
    from edgeplane.cli import main

    result = CliRunner().invoke(main, ["solar", "--help"])
    assert result.exit_code == 0, result.output
    assert "backtest" in result.output and "train" in result.output
