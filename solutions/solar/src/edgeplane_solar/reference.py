"""The reference forecasting site: PVDAQ system 50 (NREL, Golden CO) and where its data lives.

Its orientation is not published with the data; tilt 50 and azimuth 185 are the best fit of
the clear-sky power shape to the 2011 measurements on clear PSM3 intervals (the coefficient of
variation of P / POA_clear over a 5-degree grid), and the DC size reproduces the median ratio.
Only 2011 was used for that fit, as for training.
"""

from __future__ import annotations

from pathlib import Path

from edgeplane_solar.plant import PlantConfig

SYSTEM_50 = PlantConfig.model_validate({
    "location": {"lat": 39.7406, "lon": -105.1775, "alt": 1730, "timezone": "America/Denver"},
    "inverters": {"system50": {"ac_kw": 3.2, "dc_kw": 3.0, "tilt": 50, "azimuth": 185, "dc_losses": 0.08,
                               "inverter_efficiency": 0.96}},
})

TRAIN = ("2011-01-01", "2012-01-01")
TEST = ("2012-01-01", "2013-01-01")
MODEL_VERSION = "1"


def shared_data() -> Path:
    """``../shared/data/pv`` next to the repository (where CI keeps it)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data" / "pv"
        if candidate.is_dir():
            return candidate
    return here.parents[5] / "shared" / "data" / "pv"


def default_power() -> Path:
    return shared_data() / "system_50_ac_power_2011_2012.parquet"


def default_weather() -> Path:
    return shared_data() / "system_50_psm3_2011_2012.parquet"


def shipped_models() -> Path:
    return Path(__file__).parent / "models"
