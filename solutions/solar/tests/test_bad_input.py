"""Bad input of the issue: gaps, duplicates, kW columns, unknown zones, no overlap, nothing to score.

Each gets a message naming the file and the column and saying the fix; the CLI exits 2; never a
silent NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from edgeplane_solar import dataset, reference
from edgeplane_solar.cli import solar
from edgeplane_solar.timebase import TimeBase

DENVER = TimeBase.parse("America/Denver,end,15min")


def _csv(path, times, columns: dict[str, np.ndarray]) -> str:
    frame = pd.DataFrame({"measured_on": [t.strftime("%Y-%m-%d %H:%M") for t in times], **columns})
    frame.to_csv(path, index=False)
    return str(path)


def _week(tmp_path, name="p.csv", column="ac_power_2", scale=1.0, start="2012-06-04"):
    """A week of system 50's power, as a plain CSV with local wall-clock times."""
    power, _ = reference.load_system50(weather=False)
    s = power.values[(power.values.index >= pd.Timestamp(start, tz="UTC"))]
    s = s[s.index < s.index[0] + pd.Timedelta(days=7)]
    local = s.index.tz_convert("America/Denver").tz_localize(None)
    return _csv(tmp_path / name, local, {column: s.to_numpy() * scale})


def _backtest(*args: str):
    """Backtest with system 50's plant file (whose data section names the power column ac_power_2)."""
    return CliRunner().invoke(solar, ["backtest", "--no-weather", "--plant", str(reference.system50_file()), *args])


def test_a_gap_is_reported_with_file_and_column_and_left_unscored(tmp_path):
    times = pd.date_range("2012-06-01", periods=20, freq="15min")
    keep = np.r_[0:8, 12:20]
    path = _csv(tmp_path / "gap.csv", times[keep], {"ac_power_2": np.full(len(keep), 100.0)})
    p = dataset.load_power(path, time=DENVER)
    assert any("gap.csv: column 'ac_power_2': 1 gaps (4 missing steps" in n for n in p.notes), p.notes
    result = _backtest("--power", path, "--power-time", "America/Denver,end,15min")
    assert "note: " in result.output and "1 gaps" in result.output


def test_duplicate_timestamps_are_refused(tmp_path):
    times = pd.DatetimeIndex(["2012-06-01 10:00", "2012-06-01 10:15", "2012-06-01 10:15"])
    path = _csv(tmp_path / "dup.csv", times, {"ac_power_2": np.array([1.0, 2.0, 3.0])})
    with pytest.raises(dataset.DataError, match=r"dup\.csv: column 'ac_power_2': duplicate timestamps .*remove the duplicates"):
        dataset.load_power(path, time=DENVER)
    result = _backtest("--power", path, "--power-time", "America/Denver,end,15min")
    assert result.exit_code == 2 and "duplicate timestamps" in result.output


def test_a_kw_column_is_refused_by_name_and_by_scale(tmp_path):
    by_name = _week(tmp_path, "kwname.csv", column="ac_power_kw", scale=0.001)
    result = CliRunner().invoke(solar, ["backtest", "--no-weather", "--capacity", "3143", "--power", by_name,
                                        "--power-time", "America/Denver,end,15min"])
    assert result.exit_code == 2
    assert "kwname.csv: column 'ac_power_kw' looks like kW" in result.output and "--power-unit kW" in result.output
    by_scale = _week(tmp_path, "kwvalues.csv", column="output", scale=0.001)
    result = _backtest("--power", by_scale, "--power-column", "output", "--power-time", "America/Denver,end,15min")
    assert result.exit_code == 2 and "kwvalues.csv: column 'output'" in result.output and "looks like kW" in result.output
    # declared, it scores
    result = _backtest("--power", by_name, "--power-column", "ac_power_kw", "--power-time", "America/Denver,end,15min",
                       "--power-unit", "kW", "--json")
    assert result.exit_code == 0, result.output


def test_an_unknown_zone_and_undeclared_naive_times_are_refused(tmp_path):
    path = _week(tmp_path)
    result = _backtest("--power", path, "--power-time", "Mountain,end")
    assert result.exit_code == 2 and "unknown time zone 'Mountain'" in result.output
    # no plant file, so no declared time base: the file's naive times are refused, not guessed
    result = CliRunner().invoke(solar, ["backtest", "--no-weather", "--capacity", "3143", "--power", path])
    assert result.exit_code == 2 and "p.csv: time column: timestamps carry no zone" in result.output


def test_power_and_weather_without_overlap_are_refused(tmp_path):
    path = _week(tmp_path, start="2012-06-04")
    weather = tmp_path / "w.csv"
    times = pd.date_range("2013-01-01", periods=10, freq="30min")
    _csv(weather, times, {"ghi": np.full(10, 500.0)})
    result = CliRunner().invoke(solar, ["backtest", "--plant", str(reference.system50_file()), "--power", path,
                                        "--power-time", "America/Denver,end,15min", "--weather", str(weather),
                                        "--weather-time", "UTC-07:00"])
    assert result.exit_code == 2 and "no overlap" in result.output and "w.csv" in result.output


def test_nothing_to_score_exits_2_with_the_reason(tmp_path):
    night = pd.date_range("2012-06-01 22:00", periods=24, freq="15min")  # local night: no daylight target
    path = _csv(tmp_path / "night.csv", night, {"ac_power_2": np.zeros(24)})
    result = _backtest("--power", path, "--power-time", "America/Denver,end,15min")
    assert result.exit_code == 2 and "nothing to score" in result.output and "nan" not in result.output.lower()
    result = _backtest("--power", _week(tmp_path), "--power-time", "America/Denver,end,15min", "--start", "2014-01-01",
                       "--end", "2014-02-01")
    assert result.exit_code == 2 and "misses the data" in result.output


def test_an_unnamed_text_time_column_is_found_by_parsing(tmp_path):
    """pandas 3 reads text as ``str``, not ``object``: the column is found by parsing, whatever its name."""
    path = tmp_path / "unnamed.csv"
    path.write_text(",power\n1/2/2022 10:00,5\n1/2/2022 10:15,6\n")
    p = dataset.load_power(path, time=TimeBase.parse("America/Denver"))
    assert p.values.index[0] == pd.Timestamp("2022-01-02 17:00", tz="UTC") and list(p.values) == [5.0, 6.0]
    path.write_text("a,b\nx,1\ny,2\n")
    with pytest.raises(dataset.DataError, match=r"unnamed\.csv: no column of timestamps found \(columns: a, b\)"):
        dataset.load_power(path)
