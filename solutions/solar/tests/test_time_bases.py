"""One rule for time: declared time bases, UTC at the data layer's edge, proven on system 50's 2011-2012.

The alignment test: for every month of 2011-2012, and for the weeks either side of each clock
change, the daily centre (power-weighted mean time) of measured power is within 15 minutes of
that of the plant's modelled clear-sky power. The same data read as fixed UTC-7 (what the file's
offset claims) fails it by about an hour in daylight-saving time: the test can fail.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgeplane_solar import dataset, fitting, reference
from edgeplane_solar.timebase import TimeBase, TimeBaseError, to_known_at

CLOCK_CHANGES = ("2011-11-06", "2012-03-11", "2012-11-04")
SPAN = (pd.Timestamp("2011-01-01", tz="UTC"), pd.Timestamp("2013-01-01", tz="UTC"))


def _offsets(power_time: str) -> pd.DataFrame:
    described = reference.system50()
    power = dataset.load_power(reference.default_power(), described.data.power.column, TimeBase.parse(power_time))
    days = fitting.centroid_offsets(power, described.plant, *SPAN)
    # on a cloudy day the centre moves with the clouds, not the clock: only bright days count (above 115 % of
    # clear-sky energy is snow or a sensor fault)
    days = days[days.energy_ratio < 1.15].set_index("day")
    days["month"] = days.index.strftime("%Y-%m")
    return days


@pytest.fixture(scope="module")
def declared() -> pd.DataFrame:
    return _offsets(reference.system50().data.power.time)


def _weeks_around(days: pd.DataFrame, change: str) -> tuple[float, float]:
    at = pd.Timestamp(change, tz="UTC")
    # the five brightest days of the four weeks either side (fewer weeks leave only cloudy days some years)
    before = days[(days.index >= at - pd.Timedelta(weeks=4)) & (days.index < at)].nlargest(5, "energy_ratio")
    after = days[(days.index > at) & (days.index <= at + pd.Timedelta(weeks=4))].nlargest(5, "energy_ratio")
    assert before.energy_ratio.min() > 0.85 and after.energy_ratio.min() > 0.85, f"too few bright days around {change}"
    before, after = before.offset_min, after.offset_min
    return float(before.median()), float(after.median())


def test_power_and_clear_sky_line_up_in_every_month_of_2011_2012(declared):
    # each month's five brightest days
    brightest = declared.sort_values("energy_ratio").groupby("month").tail(5)
    months = brightest.groupby("month").agg(median=("offset_min", "median"), dimmest=("energy_ratio", "min"))
    assert (months["dimmest"] > 0.85).all(), months
    # power starts on 2011-04-15
    assert list(months.index) == [f"2011-{m:02d}" for m in range(4, 13)] + [f"2012-{m:02d}" for m in range(1, 13)]
    assert (months["median"].abs() <= 15).all(), months
    for change in CLOCK_CHANGES:
        before, after = _weeks_around(declared, change)
        assert abs(before) <= 15 and abs(after) <= 15, (change, before, after)
        assert abs(after - before) <= 15, (change, before, after)


def test_the_same_file_read_at_its_claimed_fixed_offset_jumps_at_each_clock_change():
    wrong = _offsets("UTC-07:00,end,15min")
    for change in CLOCK_CHANGES:
        before, after = _weeks_around(wrong, change)
        assert abs(after - before) > 40, (change, before, after)
    dst = wrong[(wrong.index >= "2012-04-01") & (wrong.index < "2012-10-01")].offset_min.median()
    assert dst > 40  # power read an hour early against the sky all summer


def test_time_base_declarations():
    assert TimeBase.parse("America/Denver,end,15min") == TimeBase("America/Denver", "end", pd.Timedelta("15min"))
    assert TimeBase.parse("UTC-07:00").label == "instant"
    with pytest.raises(TimeBaseError, match="unknown time zone 'Mars/Olympus'.*America/Denver"):
        TimeBase.parse("Mars/Olympus,end")
    with pytest.raises(TimeBaseError, match="instant, start or end"):
        TimeBase.parse("UTC,middle")


def test_wall_clock_with_daylight_saving_becomes_utc_known_at():
    wall = pd.Series(pd.to_datetime(["2012-07-01 12:00", "2012-12-01 12:00"]))
    utc, interval = to_known_at(wall, TimeBase.parse("America/Denver,instant"), where="f")
    assert list(utc) == [pd.Timestamp("2012-07-01 18:00", tz="UTC"), pd.Timestamp("2012-12-01 19:00", tz="UTC")]
    assert interval == pd.Timedelta(0)
    # a file's own offset is re-read in the declared zone (PVDAQ says UTC-07:00 on a clock that keeps DST)
    claimed = pd.Series(pd.to_datetime(["2012-07-01 12:00-07:00"]))
    assert to_known_at(claimed, TimeBase.parse("America/Denver"), where="f")[0][0] == pd.Timestamp("2012-07-01 18:00", tz="UTC")
    assert to_known_at(claimed, TimeBase(), where="f")[0][0] == pd.Timestamp("2012-07-01 19:00", tz="UTC")
    # an interval labelled at its start is known at its end
    starts = pd.Series(pd.to_datetime(["2012-07-01 00:00", "2012-07-01 00:15", "2012-07-01 00:30"]))
    known, interval = to_known_at(starts, TimeBase.parse("UTC,start"), where="f")
    assert interval == pd.Timedelta("15min") and known[0] == pd.Timestamp("2012-07-01 00:15", tz="UTC")
    # the repeated autumn hour, both copies present: inferred, no duplicates in UTC
    repeated = pd.Series(pd.to_datetime(["2012-11-04 00:30", "2012-11-04 01:00", "2012-11-04 01:30", "2012-11-04 01:00",
                                         "2012-11-04 01:30", "2012-11-04 02:00"]))
    utc, _ = to_known_at(repeated, TimeBase.parse("America/Denver"), where="f")
    assert utc.is_unique and (np.diff(utc.asi8) > 0).all()


def test_naive_times_without_a_declared_zone_are_refused(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("when,power\n2012-06-01 12:00,100\n2012-06-01 12:15,110\n")
    with pytest.raises(dataset.DataError, match=r"p\.csv: time column: timestamps carry no zone.*--power-time"):
        dataset.load_power(f)
    p = dataset.load_power(f, time=TimeBase.parse("UTC-07:00,end,15min"))
    assert p.values.index[0] == pd.Timestamp("2012-06-01 19:00", tz="UTC")
