"""The entry point edgeplane loads: registers the connector and the ``edgeplane opcua`` commands."""

from __future__ import annotations

from edgeplane import hookimpl


@hookimpl
def edgeplane_register_connectors(register):
    from edgeplane_opcua.connector import OpcUaConnector

    register("opcua", OpcUaConnector)


@hookimpl
def edgeplane_register_commands(register):
    from edgeplane_opcua.cli import opcua

    register(opcua)


@hookimpl
def edgeplane_register_console_scanners(register):
    from edgeplane_opcua.commissioning import SCANNER

    register(SCANNER)
