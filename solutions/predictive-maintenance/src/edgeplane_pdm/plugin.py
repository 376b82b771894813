"""The edgeplane hooks of edgeplane-pdm: the ``pdm`` solution, the ``edgeplane pdm`` commands, the shipped models."""

from __future__ import annotations

from pathlib import Path

from edgeplane import ReferenceSite, hookimpl


@hookimpl
def edgeplane_register_solutions(register):  # type: ignore[no-untyped-def]
    from edgeplane_pdm.solution import PdmSolution

    register("pdm", PdmSolution)


@hookimpl
def edgeplane_register_commands(register):  # type: ignore[no-untyped-def]
    from edgeplane_pdm.cli import pdm

    register(pdm)


@hookimpl
def edgeplane_register_models(register):  # type: ignore[no-untyped-def]
    register(Path(__file__).parent / "models")


@hookimpl
def edgeplane_register_console_panels(register):  # type: ignore[no-untyped-def]
    from edgeplane_pdm.console_panel import PANELS

    for panel in PANELS:
        register(panel)


@hookimpl
def edgeplane_register_reference_sites(register):  # type: ignore[no-untyped-def]
    register(ReferenceSite("factory", Path(__file__).parent / "reference_sites" / "factory.yaml",
                           "a simulated OPC UA line of three machines; bearing health, fault class, alerts"))
