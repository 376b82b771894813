"""The edgeplane-traffic plugin: the ``sumo`` connector, the ``traffic-signal`` solution,
the ``traffic`` command group and the shipped policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from edgeplane import ReferenceSite, hookimpl


@hookimpl
def edgeplane_register_commands(register: Callable[..., Any]) -> None:
    from edgeplane_traffic.cli import traffic

    register(traffic)


@hookimpl
def edgeplane_register_models(register: Callable[..., Any]) -> None:
    register(Path(__file__).parent / "models")


@hookimpl
def edgeplane_register_connectors(register: Callable[..., Any]) -> None:
    from edgeplane_traffic.connector import SumoConnector

    register("sumo", SumoConnector)


@hookimpl
def edgeplane_register_solutions(register: Callable[..., Any]) -> None:
    from edgeplane_traffic.solution import TrafficSignalSolution

    register("traffic-signal", TrafficSignalSolution)


@hookimpl
def edgeplane_register_console_panels(register: Callable[..., Any]) -> None:
    from edgeplane_traffic.console_panel import PANELS

    for panel in PANELS:
        register(panel)


@hookimpl
def edgeplane_register_reference_sites(register: Callable[..., Any]) -> None:
    register(ReferenceSite("intersection", Path(__file__).parent / "reference_sites" / "intersection.yaml",
                           "a SUMO intersection under the shipped RL policy, with a fixed-time twin beside it"))
    register(ReferenceSite("intersection-ntcip", Path(__file__).parent / "reference_sites" / "intersection-ntcip.yaml",
                           "the same intersection reached only through NTCIP 1202 over SNMP, behind a simulated cabinet"))
