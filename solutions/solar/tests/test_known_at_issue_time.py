"""Only what is known at issue time: changing any value that becomes known after t leaves the forecast at t unchanged.

Power is a measured interval, known at its end; a weather value is known when it arrives (its
time plus the link's latency). The property is checked on the features and on the shipped
model's forecast, for power on the 15-min grid and off it (serf_west's :01/:16 stamps), and for
weather arriving on time or late.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeplane_solar import dataset, features, reference, training
from edgeplane_solar.dataset import Timed

PLANT = reference.system50().plant
CAPACITY = reference.system50().capacity_w
START = pd.Timestamp("2012-06-10 12:00", tz="UTC")
END = pd.Timestamp("2012-06-11 04:00", tz="UTC")
MODEL = training.INTRADAY.resolve(reference.shipped_models()) / "model.onnx"


def _series(rng: np.random.Generator, offset_min: int, interval: pd.Timedelta) -> tuple[Timed, Timed]:
    power_times = pd.date_range(START - pd.Timedelta(hours=3), END + pd.Timedelta(hours=5), freq="15min") \
        + pd.Timedelta(minutes=offset_min)
    power = pd.Series(rng.uniform(0, CAPACITY, len(power_times)), index=power_times)
    power[rng.random(len(power)) < 0.05] = np.nan  # gaps
    weather_times = pd.date_range(START - pd.Timedelta(hours=4), END + pd.Timedelta(hours=5), freq="30min")
    ghi = pd.Series(rng.uniform(0, 1100, len(weather_times)), index=weather_times, name="ghi")
    return Timed(power, interval, "power"), Timed(ghi, pd.Timedelta(0), "weather")


def _changed_after(series: Timed, t: pd.Timestamp, rng: np.random.Generator, latency: pd.Timedelta) -> Timed:
    values = series.values.copy()
    later = values.index + latency > t
    pick = later & (rng.random(len(values)) < 0.7)
    values[pick] = np.where(rng.random(pick.sum()) < 0.2, np.nan, rng.uniform(0, 5000, pick.sum()))
    return Timed(values, series.interval, series.source)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# row: any issue time of the 64-step frame but the last, so that later rows exist to see the change
@given(seed=st.integers(0, 2**32 - 1), row=st.integers(0, 62), off_grid=st.booleans(),
       latency=st.sampled_from(["0min", "20min", "1h"]))
def test_values_known_after_t_do_not_move_the_forecast_at_t(seed, row, off_grid, latency):
    rng = np.random.default_rng(seed)
    interval = pd.Timedelta(0) if off_grid else features.STEP
    power, weather = _series(rng, 1 if off_grid else 0, interval)
    delay = pd.Timedelta(latency)
    a = dataset.prepare(power, weather, PLANT, CAPACITY, START, END, weather_delay=delay)
    t = a.frame.times[row]
    b = dataset.prepare(_changed_after(power, t, rng, pd.Timedelta(0)), _changed_after(weather, t, rng, delay), PLANT,
                        CAPACITY, START, END, weather_delay=delay)
    assert np.array_equal(a.frame.x[row], b.frame.x[row])
    assert a.frame.valid[row] == b.frame.valid[row]
    qa, qb = training.INTRADAY.run_onnx(MODEL, a.frame.x[row:row + 1]), training.INTRADAY.run_onnx(MODEL, b.frame.x[row:row + 1])
    assert np.array_equal(qa, qb)
    # and the test can fail: the later rows did see the change (their features moved)
    later = slice(row + 1, None)
    assert not np.array_equal(a.frame.x[later], b.frame.x[later])


def test_a_late_weather_value_is_old_when_it_arrives():
    rng = np.random.default_rng(0)
    power, weather = _series(rng, 0, features.STEP)
    on_time = dataset.prepare(power, weather, PLANT, CAPACITY, START, END)
    late = dataset.prepare(power, weather, PLANT, CAPACITY, START, END, weather_delay=pd.Timedelta("1h"))
    age = features.WEATHER_AGE_COLUMN
    sun = on_time.frame.x[:, age] < features.MAX_WEATHER_AGE_H  # at night the index is unknown (age: the maximum)
    assert sun.sum() > 20
    assert on_time.frame.x[sun, age].max() <= 0.5 + 1e-6  # a 30-min station, on time
    assert late.frame.x[:, age].min() >= 1.0 - 1e-6  # nothing younger than an hour
