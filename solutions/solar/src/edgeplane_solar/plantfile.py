"""The plant description file: a plant, its capacity, how its data files are to be read, and where the numbers came from.

``edgeplane solar fit`` writes it; ``train`` and ``backtest`` read it (``--plant FILE``)::

    plant: {location: {lat: 39.7406, lon: -105.1775, alt: 1730, timezone: America/Denver},
            inverters: {system50: {ac_kw: 3.2, dc_kw: 3.1, tilt: 40, azimuth: 160, ...}}}
    capacity_w: 3143               # what forecasts are normalised by
    data:                          # how this plant's files are read (each overridable on the command line)
      power:   {column: ac_power_2, unit: W, time: "America/Denver,end,15min"}
      weather: {column: ghi, time: "UTC-07:00,instant"}
    fit: {command: ..., span: [2011-01-01, 2012-01-01], ...}   # provenance
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgeplane.errors import EdgeplaneError
from edgeplane_solar.plant import PlantConfig
from edgeplane_solar.timebase import TimeBase, TimeBaseError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputDescription(_Model):
    """How one data file is read: its column, unit and time base (``ZONE,LABEL[,INTERVAL]``)."""

    file: str | None = Field(None, description="default file, relative to the plant file")
    column: str | None = None
    unit: Literal["W", "kW"] | None = None
    time: str | None = Field(None, description="time base, e.g. 'America/Denver,end,15min' or 'UTC-07:00,instant'")

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                TimeBase.parse(value)
            except TimeBaseError as e:
                raise ValueError(str(e)) from None
        return value

    def time_base(self) -> TimeBase:
        return TimeBase.parse(self.time)


class DataDescription(_Model):
    power: InputDescription = Field(default_factory=InputDescription)
    weather: InputDescription = Field(default_factory=InputDescription)


class PlantFile(_Model):
    plant: PlantConfig
    capacity_w: float = Field(gt=0, description="W that forecasts are normalised by")
    data: DataDescription = Field(default_factory=DataDescription)
    fit: dict[str, Any] = Field(default_factory=dict, description="how the description was made")

    def resolve(self, relative: str | None, base: Path) -> Path | None:
        if relative is None:
            return None
        path = Path(relative)
        return path if path.is_absolute() else (base.parent / path).resolve()


class PlantFileError(EdgeplaneError, ValueError):
    """A plant file that cannot be used; the message names the file and the field."""


def load(path: str | Path) -> PlantFile:
    path = Path(path)
    if not path.exists():
        raise PlantFileError(f"{path}: no such plant file; write one with 'edgeplane solar fit'")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise PlantFileError(f"{path}: not YAML ({e})") from None
    if not isinstance(data, dict) or "plant" not in data:
        raise PlantFileError(f"{path}: a plant file needs 'plant:' and 'capacity_w:'; write one with 'edgeplane solar fit'")
    try:
        return PlantFile.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PlantFileError(f"{path}: {where}: {first['msg']}") from None


def save(plant_file: PlantFile, path: str | Path, header: str = "") -> Path:
    path = Path(path)
    body = yaml.safe_dump(plant_file.model_dump(mode="json", exclude_none=True), sort_keys=False, default_flow_style=None,
                          width=120)
    path.write_text((header + "\n" if header else "") + body)
    return path
