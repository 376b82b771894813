"""Fixtures: real Modbus servers on the loopback (helpers live in edgeplane_modbus.testing)."""

from __future__ import annotations

import pytest

from edgeplane.testing import start_each

from edgeplane_modbus.testing import PymodbusServer


@pytest.fixture
async def pymodbus_server():
    """Factory: ``server = await pymodbus_server(setup)``; ``setup(store)`` fills the tables first."""
    def make(setup=None, units=(1,)) -> PymodbusServer:
        server = PymodbusServer(units)
        if setup is not None:
            setup(server.store)
        return server

    async with start_each(make) as factory:
        yield factory


