"""``edgeplane solar fit|train|backtest`` on the real data in shared/data/pv: system 50, serf_west, nrel_RSF_II."""

from __future__ import annotations

import json

from click.testing import CliRunner

from edgeplane_solar import plantfile, reference
from edgeplane_solar.cli import solar


def _figures(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_backtest_of_the_shipped_model_prints_the_table_and_json(tmp_path):
    assert reference.default_power().exists(), f"the PV data is expected at {reference.shared_data()}"
    png = tmp_path / "bt.png"
    result = CliRunner().invoke(solar, ["backtest", "--horizons", "15min,1h,4h", "--start", "2012-06-01",
                                        "--end", "2012-06-22", "--plot", str(png), "--json"])
    figures = _figures(result)
    assert set(figures) == {"15min", "1h", "4h"}
    for f in figures.values():
        assert {"nrmse", "nmae", "skill_persistence", "skill_smart_persistence"} <= set(f)
        assert 0 < f["nmae"] < f["nrmse"] < 0.5 and f["n"] > 1000
    # the learned model beats plain persistence from 1 h on
    assert figures["1h"]["skill_persistence"] > 0 and figures["4h"]["skill_persistence"] > 0
    assert "skill/smart" in result.output and png.stat().st_size > 10_000


def test_other_plants_from_their_plant_files_over_their_files_span():
    """serf_west (off-grid :01/:16 stamps, a POA sensor) and nrel_RSF_II (a kW column): no window given."""
    data = reference.shared_data()
    for plant, name in (("serf_west", "serf_west_15min.csv"), ("nrel_RSF_II", "nrel_RSF_II.csv")):
        result = CliRunner().invoke(solar, ["backtest", "--plant", str(reference.plants() / f"{plant}.yaml"),
                                            "--power", str(data / name), "--weather", str(data / name),
                                            "--horizons", "15min,1h", "--json"])
        figures = _figures(result)
        assert "2022-01-02" in result.output  # the window is the files' span, not 2012
        assert all(f["n"] > 100 and 0 < f["nmae"] < 0.5 for f in figures.values()), (plant, figures)


def test_backtest_by_plant_options_and_late_weather():
    common = ["backtest", "--start", "2012-06-01", "--end", "2012-06-15", "--horizons", "1h", "--json"]
    on_time = _figures(CliRunner().invoke(solar, common))
    late = _figures(CliRunner().invoke(solar, [*common, "--weather-delay", "1h"]))
    assert on_time["1h"]["n"] == late["1h"]["n"] and on_time["1h"]["nrmse"] != late["1h"]["nrmse"]
    # a plant described on the command line: a wrong orientation makes the clear-sky baseline worse
    turned = _figures(CliRunner().invoke(solar, [*common, "--tilt", "20", "--azimuth", "250"]))
    assert turned["1h"]["nrmse_smart_persistence"] > on_time["1h"]["nrmse_smart_persistence"]


def test_fit_writes_a_plant_file_that_backtest_reads(tmp_path):
    out = tmp_path / "plant.yaml"
    result = CliRunner().invoke(solar, [
        "fit", "--power", str(reference.default_power()), "--power-time", "America/Denver,end,15min",
        "--lat", "39.7406", "--lon", "-105.1775", "--alt", "1730", "--start", "2011-05-01", "--end", "2011-10-01",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    described = plantfile.load(out)
    inv = next(iter(described.plant.inverters.values()))
    # the committed fit (all of 2011) says tilt 59, azimuth 159; five months land close
    assert abs(inv.azimuth - 159) <= 10 and abs(inv.tilt - 59) <= 10, inv
    assert described.data.power.time == "America/Denver,end,15min" and "2011-05-01" in described.fit["command"]
    assert "warning" not in result.output
    # read with the wrong clock (the file's claimed fixed offset), the fit says so: against a known orientation,
    # and across a clock change (a free fit over one season absorbs the hour into the azimuth)
    for span, orientation in ((["2011-05-01", "2011-10-01"], ["--tilt", "59", "--azimuth", "159"]),
                              (["2011-09-15", "2011-12-31"], [])):
        wrong = CliRunner().invoke(solar, [
            "fit", "--power", str(reference.default_power()), "--power-time", "UTC-07:00,end,15min", "--lat", "39.7406",
            "--lon", "-105.1775", "--alt", "1730", "--timezone", "America/Denver", "--start", span[0], "--end", span[1],
            *orientation, "--out", str(tmp_path / "wrong.yaml")])
        assert wrong.exit_code == 0 and "warning" in wrong.output and "--power-time" in wrong.output, wrong.output
    figures = _figures(CliRunner().invoke(solar, ["backtest", "--plant", str(out), "--start", "2012-06-01",
                                                  "--end", "2012-06-08", "--horizons", "1h", "--json"]))
    assert figures["1h"]["n"] > 300


def test_train_smoke_writes_a_loadable_model(tmp_path):
    out = tmp_path / "models"
    result = CliRunner().invoke(solar, ["train", "--start", "2011-06-01", "--end", "2011-06-15", "--epochs", "1",
                                        "--hidden", "8", "--out", str(out), "--version", "7"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "solar-forecast" / "7" / "manifest.json").read_text())
    prov = manifest["provenance"]
    assert prov["plant"]["location"]["lat"] == 39.7406 and prov["plant_file"]["data"]["power"]["time"]
    import onnx

    assert onnx.load(str(out / "solar-forecast" / "7" / "model.onnx")).ir_version == 9
    figures = _figures(CliRunner().invoke(solar, ["backtest", "--model", str(out), "--start", "2012-06-01",
                                                  "--end", "2012-06-08", "--horizons", "1h,day-ahead", "--json"]))
    assert set(figures) == {"1h", "day-ahead"}
    assert figures["day-ahead"]["n"] > 200 and 0 < figures["day-ahead"]["nmae"] < 0.5


def test_bad_input_gets_a_clear_error(tmp_path):
    result = CliRunner().invoke(solar, ["backtest", "--horizons", "20min"])
    assert result.exit_code == 2 and "multiples of 15min" in result.output
    result = CliRunner().invoke(solar, ["backtest", "--power", str(tmp_path / "nope.parquet"), "--capacity", "1000"])
    assert result.exit_code == 2 and "nope.parquet: no such file" in result.output
    bad = tmp_path / "w.csv"
    bad.write_text("time,temp\n2012-01-01T00:00Z,3\n")
    result = CliRunner().invoke(solar, ["backtest", "--weather", str(bad)])
    assert result.exit_code == 2 and "w.csv: no column 'ghi'; columns are temp" in result.output
    result = CliRunner().invoke(solar, ["backtest", "--plant", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "none.yaml: no such plant file" in result.output


def test_the_solar_group_is_an_edgeplane_command():
    from edgeplane.cli import main

    result = CliRunner().invoke(main, ["solar", "--help"])
    assert result.exit_code == 0, result.output
    assert "backtest" in result.output and "train" in result.output and "fit" in result.output
