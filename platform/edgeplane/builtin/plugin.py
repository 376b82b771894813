"""Registers the built-in connectors and solution (see :mod:`edgeplane.builtin`)."""

from __future__ import annotations

from edgeplane.builtin.memory import MemoryConnector
from edgeplane.builtin.replay import ReplayConnector
from edgeplane.builtin.threshold import ThresholdSolution
from edgeplane.hookspecs import hookimpl


@hookimpl
def edgeplane_register_connectors(register):
    register("memory", MemoryConnector)
    register("replay", ReplayConnector)


@hookimpl
def edgeplane_register_solutions(register):
    register("threshold", ThresholdSolution)
