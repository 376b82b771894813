"""edgeplane hooks of edgeplane-modbus: the ``modbus`` connector and the ``edgeplane modbus`` commands."""

from __future__ import annotations

from edgeplane import hookimpl


@hookimpl
def edgeplane_register_connectors(register):
    from edgeplane_modbus.connector import ModbusConnector

    register("modbus", ModbusConnector)


@hookimpl
def edgeplane_register_commands(register):
    from edgeplane_modbus.cli import modbus

    register(modbus)


@hookimpl
def edgeplane_register_console_scanners(register):
    from edgeplane_modbus.commissioning import SCANNER

    register(SCANNER)
