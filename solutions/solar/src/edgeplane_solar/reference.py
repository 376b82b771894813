"""The reference forecasting site: PVDAQ system 50 (NREL, Golden CO) and where its data lives.

Its description (orientation, size, how its files are read) is the plant file
``plants/system50.yaml``, written by ``edgeplane solar fit`` on 2011 only (the command is in the
file). Training uses 2011; model selection uses every fourth week of 2011 (:data:`VALIDATION_WEEKS`);
2012 is only ever reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeplane_solar import plantfile

TRAIN = ("2011-01-01", "2012-01-01")
TEST = ("2012-01-01", "2013-01-01")
MODEL_VERSION = "2"
#: ISO weeks of the training year held out for model selection: week % 4 == 3
VALIDATION_WEEKS = (4, 3)


def plants() -> Path:
    return Path(__file__).parent / "plants"


def system50_file() -> Path:
    return plants() / "system50.yaml"


def system50() -> plantfile.PlantFile:
    return plantfile.load(system50_file())


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


def load_system50(weather: bool = True) -> tuple[Any, Any]:
    """System 50's power and weather, read through the time bases its plant file declares."""
    from edgeplane_solar import dataset

    data = system50().data
    power = dataset.load_power(default_power(), data.power.column, data.power.time_base(), data.power.unit)
    met = dataset.load_weather(default_weather(), data.weather.time_base(), data.weather.column) if weather else None
    return power, met
