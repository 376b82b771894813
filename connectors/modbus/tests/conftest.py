"""Fixtures: real Modbus servers on the loopback (helpers live in edgeplane_modbus.testing)."""

from __future__ import annotations

import pytest

from edgeplane_modbus.testing import PymodbusServer


@pytest.fixture
async def pymodbus_server():
    """Factory: ``server = await pymodbus_server(setup)``; ``setup(store)`` fills the tables first."""
    servers: list[PymodbusServer] = []

    async def factory(setup=None, units=(1,)) -> PymodbusServer:
        server = PymodbusServer(units)
        if setup is not None:
            setup(server.store)
        await server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.stop()


