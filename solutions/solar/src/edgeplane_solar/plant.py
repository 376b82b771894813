"""The plant model: where the plant is, what its arrays and inverters are, which points carry what.

The same :class:`PlantConfig` is the ``plant:`` key of every solar solution in a site file
(write it once with a YAML anchor). :class:`PlantModel` turns it into physics through pvlib:

* :meth:`PlantModel.expected_ac` - the AC power an inverter should make at measured irradiance
  (plane-of-array or GHI) and temperature, PVWatts-level: transposition (Perez/Hay-Davies on
  GHI via Erbs), SAPM cell temperature, ``pvwatts_dc`` with the temperature coefficient, DC
  losses, a flat inverter efficiency and the AC cap (clipping);
* :meth:`PlantModel.clearsky_ac` - the same at Ineichen clear-sky irradiance, the reference of the
  clear-sky index that the forecasts work on.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["InverterConfig", "PlantConfig", "PlantModel", "PointMap", "WeatherPoints"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlantLocation(_Model):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    alt: float = 0.0
    timezone: str = "UTC"


class InverterConfig(_Model):
    """One inverter and the array behind it."""

    ac_kw: float = Field(gt=0, description="AC nameplate (the inverter's WRtg), kW")
    dc_kw: float = Field(gt=0, description="DC nameplate of the array at STC, kW")
    strings: int = Field(1, ge=1, description="PV strings (MPPT inputs, SunSpec model 160 modules)")
    tilt: float = Field(30.0, ge=0, le=90)
    azimuth: float = Field(180.0, ge=0, lt=360, description="degrees from north, 180 = south")
    tracking: Literal["fixed", "single_axis"] = "fixed"
    gamma_pdc: float = Field(-0.0037, description="power temperature coefficient, 1/K")
    dc_losses: float = Field(0.14, ge=0, lt=1, description="soiling, wiring, mismatch ... as a fraction")
    inverter_efficiency: float = Field(0.96, gt=0, le=1)


class PointMap(_Model):
    """Point names on each inverter device (SunSpec names by default)."""

    power: str = "103.W"
    dc_power: str = "103.DCW"
    status: str = "103.St"
    events: str = "103.Evt1"
    string_current: str = Field("160.module.{n}.DCA", description="per string; {n} is the string number from 1")
    limit_pct: str = "123.WMaxLimPct"
    limit_enable: str = "123.WMaxLim_Ena"


class WeatherPoints(_Model):
    """Topics of the weather station's points (give at least ``poa`` or ``ghi``)."""

    poa: str | None = Field(None, description="plane-of-array irradiance topic, W/m2, e.g. 'met/poa'")
    ghi: str | None = Field(None, description="global horizontal irradiance topic, W/m2")
    module_temp: str | None = Field(None, description="module temperature topic, degC")
    air_temp: str | None = Field(None, description="air temperature topic, degC")
    time: str | None = Field(None, description="topic carrying the plant's clock (epoch s), for simulated plants "
                                               "whose time runs faster than the host's")

    @model_validator(mode="after")
    def _some_irradiance(self) -> WeatherPoints:
        if self.poa is None and self.ghi is None:
            raise ValueError("weather needs an irradiance topic: set 'poa' (plane of array) or 'ghi'")
        return self


class PlantConfig(_Model):
    location: PlantLocation
    inverters: dict[str, InverterConfig] = Field(min_length=1, description="device name -> inverter and array")
    weather: WeatherPoints | None = None
    points: PointMap = Field(default_factory=PointMap)

    @property
    def ac_capacity_w(self) -> float:
        return sum(i.ac_kw for i in self.inverters.values()) * 1000.0

    @model_validator(mode="after")
    def _names(self) -> PlantConfig:
        if "{n}" not in self.points.string_current:
            raise ValueError("points.string_current must contain '{n}' (the string number), e.g. '160.module.{n}.DCA'")
        return self


class PlantModel:
    """pvlib physics for a :class:`PlantConfig`."""

    def __init__(self, config: PlantConfig):
        import pvlib

        self.config = config
        loc = config.location
        self.location = pvlib.location.Location(loc.lat, loc.lon, tz="UTC", altitude=loc.alt)

    def solar_position(self, times: pd.DatetimeIndex) -> pd.DataFrame:
        return self.location.get_solarposition(times)

    def _poa(self, inv: InverterConfig, ghi: np.ndarray, dni: np.ndarray, dhi: np.ndarray,
             solpos: pd.DataFrame) -> np.ndarray:
        import pvlib

        if inv.tracking == "single_axis":
            track = pvlib.tracking.singleaxis(solpos["apparent_zenith"], solpos["azimuth"], axis_azimuth=180,
                                              max_angle=60, backtrack=True)
            tilt = track["surface_tilt"].fillna(0).to_numpy()
            azimuth = track["surface_azimuth"].fillna(180).to_numpy()
        else:
            tilt, azimuth = inv.tilt, inv.azimuth
        poa = pvlib.irradiance.get_total_irradiance(tilt, azimuth, solpos["apparent_zenith"].to_numpy(),
                                                    solpos["azimuth"].to_numpy(), dni, ghi, dhi, model="isotropic")
        return np.nan_to_num(np.asarray(poa["poa_global"], dtype=float), nan=0.0).clip(min=0)

    def poa_from_ghi(self, name: str, times: pd.DatetimeIndex, ghi: np.ndarray) -> np.ndarray:
        """Plane-of-array irradiance of inverter ``name``'s array from measured GHI (Erbs split)."""
        import pvlib

        solpos = self.solar_position(times)
        ghi = np.asarray(ghi, dtype=float).clip(min=0)
        split = pvlib.irradiance.erbs(ghi, solpos["zenith"].to_numpy(), times)
        return self._poa(self.config.inverters[name], ghi, np.nan_to_num(np.asarray(split["dni"])),
                         np.nan_to_num(np.asarray(split["dhi"])), solpos)

    def ac_from_poa(self, name: str, poa: np.ndarray, temp_c: np.ndarray | float = 25.0,
                    temp_kind: Literal["module", "air", "cell"] = "cell") -> np.ndarray:
        """Expected AC power (W) of inverter ``name`` at plane-of-array irradiance ``poa`` (W/m2)."""
        import pvlib

        inv = self.config.inverters[name]
        poa = np.asarray(poa, dtype=float).clip(min=0)
        temp = np.broadcast_to(np.asarray(temp_c, dtype=float), poa.shape)
        if temp_kind == "module":
            cell = pvlib.temperature.sapm_cell_from_module(temp, poa, deltaT=3)
        elif temp_kind == "air":
            cell = pvlib.temperature.sapm_cell(poa, temp, 1.0, -3.56, -0.075, 3)
        else:
            cell = temp
        pdc = pvlib.pvsystem.pvwatts_dc(poa, cell, inv.dc_kw * 1000.0, inv.gamma_pdc) * (1 - inv.dc_losses)
        return np.minimum(np.asarray(pdc) * inv.inverter_efficiency, inv.ac_kw * 1000.0).clip(min=0)

    def expected_ac(self, name: str, times: pd.DatetimeIndex, irradiance: np.ndarray,
                    temp_c: np.ndarray | float = 25.0, temp_kind: Literal["module", "air", "cell"] = "module") -> np.ndarray:
        """Expected AC power (W) of inverter ``name`` from measured POA (or GHI, when the plant has only GHI) and temperature."""
        weather = self.config.weather
        ghi_only = weather is not None and weather.poa is None
        poa = self.poa_from_ghi(name, times, irradiance) if ghi_only else np.asarray(irradiance, dtype=float)
        return self.ac_from_poa(name, poa, temp_c, temp_kind)

    def clearsky_poa(self, times: pd.DatetimeIndex, name: str, solpos: pd.DataFrame | None = None) -> np.ndarray:
        """Clear-sky plane-of-array irradiance (W/m2) of inverter ``name``'s array."""
        solpos = self.solar_position(times) if solpos is None else solpos
        cs = self.location.get_clearsky(times, model="ineichen", solar_position=solpos)
        return self._poa(self.config.inverters[name], cs["ghi"].to_numpy(), cs["dni"].to_numpy(), cs["dhi"].to_numpy(),
                         solpos)

    def clearsky_ac(self, times: pd.DatetimeIndex, name: str | None = None) -> np.ndarray:
        """Clear-sky AC power (W) of one inverter, or of the whole plant when ``name`` is None."""
        solpos = self.solar_position(times)
        cs = self.location.get_clearsky(times, model="ineichen", solar_position=solpos)
        names = [name] if name else list(self.config.inverters)
        total = np.zeros(len(times))
        for n in names:
            poa = self._poa(self.config.inverters[n], cs["ghi"].to_numpy(), cs["dni"].to_numpy(), cs["dhi"].to_numpy(),
                            solpos)
            total += self.ac_from_poa(n, poa, 25.0, "cell")
        return total
