"""Site-file fragments for a simulated plant (tests and the demo share them with configs/solar-plant.yaml)."""

from __future__ import annotations

from typing import Any

from edgeplane_solar.simulator import TMY_LOCATION

STATION_POINTS = {
    "poa": {"table": "holding", "address": 0, "type": "float32", "unit": "W/m2"},
    "ghi": {"table": "holding", "address": 2, "type": "float32", "unit": "W/m2"},
    "air_temp": {"table": "holding", "address": 4, "type": "float32", "unit": "degC"},
    "module_temp": {"table": "holding", "address": 6, "type": "float32", "unit": "degC"},
    "time": {"table": "holding", "address": 8, "type": "float64", "unit": "s"},
}


def plant_config(inverters: list[str], rating_w: float = 10_000.0, strings: int = 2, tilt: float = 25.0) -> dict[str, Any]:
    """The ``plant:`` section matching :class:`~edgeplane_solar.simulator.PlantSimulator`.

    The simulated inverter's DC array is 10 % larger than its AC rating, converts at 97 %, and
    has no temperature loss: the plant model is told exactly that.
    """
    return {
        "location": dict(TMY_LOCATION),
        "inverters": {name: {"ac_kw": rating_w / 1000, "dc_kw": rating_w * 1.1 / 1000, "strings": strings, "tilt": tilt,
                             "azimuth": 180, "gamma_pdc": 0.0, "dc_losses": 0.0, "inverter_efficiency": 0.97}
                      for name in inverters},
        "weather": {"poa": "met/poa", "ghi": "met/ghi", "module_temp": "met/module_temp", "time": "met/time"},
    }


def plant_site(ports: dict[str, int], *, poll: str = "500ms", site_id: str = "solar-test",
               expiry: str = "15min", interval: str = "500ms", forecast: bool = True) -> dict[str, Any]:
    """A whole site for a running PlantSimulator whose ports are ``ports`` (``station`` plus inverters)."""
    inverters = [name for name in ports if name != "station"]
    plant = plant_config(inverters)
    devices: dict[str, Any] = {
        "met": {"connector": "modbus", "url": f"tcp://127.0.0.1:{ports['station']}", "poll": poll, "timeout": "1s",
                "points": STATION_POINTS},
        "plant": {"connector": "memory", "points": {
            "limit_kw": {"type": "float64", "unit": "kW", "access": "rw"},
            "limit_pct": {"type": "float64", "unit": "%", "access": "rw"},
            "limit_expiry": {"type": "float64", "unit": "s", "access": "rw"},
            "pf_setpoint": {"type": "float64", "access": "rw"}}},
    }
    for name in inverters:
        devices[name] = {"connector": "modbus", "url": f"tcp://127.0.0.1:{ports[name]}", "poll": poll, "timeout": "1s",
                         "sunspec": {"models": [1, 103, 120, 123, 160]}}
    solutions: dict[str, Any] = {
        "diagnosis": {"type": "solar.diagnosis", "plant": plant, "stale_after": "5s"},
        "dispatch": {"type": "solar.dispatch", "plant": plant, "default_expiry": expiry, "interval": interval},
    }
    if forecast:
        solutions["forecast"] = {"type": "solar.forecast", "plant": plant}
    return {
        "site": {"id": site_id, "timezone": TMY_LOCATION["timezone"],
                 "location": {"lat": TMY_LOCATION["lat"], "lon": TMY_LOCATION["lon"], "alt": TMY_LOCATION["alt"]}},
        "devices": devices,
        "solutions": solutions,
        "limits": {"inv*/123.WMaxLimPct": {"min": 0, "max": 100}, "plant/limit_pct": {"min": 0, "max": 100},
                   "plant/limit_kw": {"min": 0}, "inv*/123.OutPFSet": {"min": -1, "max": 1}},
        "supervision": {"backoff_initial": 0.05, "backoff_max": 0.5},
    }
