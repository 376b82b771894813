"""The edgeplane plugin: solutions, the ``solar`` CLI group, shipped models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeplane import ReferenceSite, hookimpl


@hookimpl
def edgeplane_register_solutions(register: Any) -> None:
    from edgeplane_solar.diagnosis import DiagnosisSolution
    from edgeplane_solar.dispatch import DispatchSolution
    from edgeplane_solar.forecast import ForecastSolution

    register("solar.forecast", ForecastSolution)
    register("solar.diagnosis", DiagnosisSolution)
    register("solar.dispatch", DispatchSolution)


@hookimpl
def edgeplane_register_commands(register: Any) -> None:
    from edgeplane_solar.cli import solar

    register(solar)


@hookimpl
def edgeplane_register_models(register: Any) -> None:
    register(Path(__file__).parent / "models")


@hookimpl
def edgeplane_register_console_panels(register: Any) -> None:
    from edgeplane_solar.console_panel import PANELS

    for panel in PANELS:
        register(panel)


@hookimpl
def edgeplane_register_reference_sites(register: Any) -> None:
    register(ReferenceSite("solar", Path(__file__).parent / "reference_sites" / "solar-plant.yaml",
                           "three simulated SunSpec inverters and a weather station on real irradiance; PV forecast, "
                           "inverter diagnosis and plant dispatch"))
