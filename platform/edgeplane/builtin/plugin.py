"""Registers what the core provides as a plugin: the built-in connectors and solution (see
:mod:`edgeplane.builtin`), the MQTT uplink transport, and the ``models``, ``cloud``, ``plugin`` and ``site`` commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeplane.builtin.memory import MemoryConnector
from edgeplane.builtin.replay import ReplayConnector
from edgeplane.builtin.threshold import ThresholdSolution
from edgeplane.hookspecs import hookimpl

if TYPE_CHECKING:
    from edgeplane.plugins import CommandRegistrar, ConnectorRegistrar, SolutionRegistrar, TransportRegistrar


@hookimpl
def edgeplane_register_connectors(register: ConnectorRegistrar) -> None:
    register("memory", MemoryConnector)
    register("replay", ReplayConnector)


@hookimpl
def edgeplane_register_solutions(register: SolutionRegistrar) -> None:
    register("threshold", ThresholdSolution)


@hookimpl
def edgeplane_register_transports(register: TransportRegistrar) -> None:
    from edgeplane.sync.transport import MqttTransport

    register("mqtt", MqttTransport)


@hookimpl
def edgeplane_register_commands(register: CommandRegistrar) -> None:
    from edgeplane.inference.cli import models
    from edgeplane.kit.plugin_cli import plugin_group
    from edgeplane.provisioning.site_cli import site_group

    register(models)
    register(plugin_group)
    register(site_group)
