"""The Modbus plugin's test kit: real Modbus servers on the loopback, and their fixtures.

* :class:`PymodbusServer`: pymodbus's TCP server over a plain datastore, recording requests;
* :class:`SilentServer`: accepts connections and never answers (a hung device);
* :class:`FaultyInverter` and the fixture ``sunspec_inverter``: a SunSpec inverter that can be
  restarted and slowed;
* :func:`device` / :func:`site`: site-file fragments for tests.

Every server here runs on :class:`edgeplane_modbus.simulator.SimServer`. The fixture is opt-in:
a test folder's conftest.py imports it::

    from edgeplane_modbus.testing import sunspec_inverter  # noqa: F401 - a fixture

    async def test_recovers_after_a_restart(edgeplane_host, sunspec_inverter):
        inverter = await sunspec_inverter(irradiance=800)     # 127.0.0.1:<free port>
        site = {"site": {"id": "t"}, "devices": {"inv1": {"connector": "modbus", "url": inverter.url,
                                                          "poll": "100ms", "sunspec": {}}}}
        async with edgeplane_host(site) as host:             # with entry_points=True or plugins=[...]
            await inverter.restart(down_for=1.0)              # the device reboots
            inverter.slow(2.0)                                # every answer 2 s late (a slow device)
            inverter.slow(0)                                  # back to normal

Faults: :meth:`FaultyInverter.restart` (server gone for ``down_for`` seconds, same port),
:meth:`FaultyInverter.slow` (answers delayed), :meth:`FaultyInverter.stop` (gone for good), and
the simulator's own (``inverter.sim.trip()``, ``lose_string``, ``freeze``; see
:class:`edgeplane_modbus.simulator.SunSpecInverterSimulator`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from pymodbus.simulator import DataType, SimData

from edgeplane.testing import start_each
from edgeplane_modbus import plugin
from edgeplane_modbus.simulator import SimServer, SunSpecInverterSimulator

__all__ = ["FAST", "PLUGINS", "Datastore", "FaultyInverter", "PymodbusServer", "SilentServer", "device", "site",
           "sunspec_inverter"]

PLUGINS = [plugin]
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2}


@dataclass
class Datastore:
    """What a pymodbus test server holds, and the requests it saw (function code, address, count)."""

    holding: list[int]
    inputs: list[int]
    coils: list[bool]
    discrete: list[bool]
    requests: list[tuple[int, int, int]] = field(default_factory=list)
    fail_addresses: set[int] = field(default_factory=set)  # holding addresses that answer exception 4


class PymodbusServer:
    """pymodbus's TCP server over a datastore of 1000 registers/bits per table (unit ids given)."""

    def __init__(self, units: tuple[int, ...] = (1,), size: int = 1000):
        self.units = units
        self.store = Datastore([0] * size, [0] * size, [False] * size, [False] * size)
        self.server = SimServer(self._action)
        self.port = 0

    async def _action(self, fc, start, address, count, registers, values):
        from pymodbus.constants import ExcCodes

        self.store.requests.append((fc, address, count))
        if fc in (3, 6, 16) and any(a in self.store.fail_addresses for a in range(address, address + count)):
            return ExcCodes.DEVICE_FAILURE
        return None

    def _tables(self) -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
        s = self.store
        return (
            [SimData(0, values=list(s.coils), datatype=DataType.BITS)],
            [SimData(0, values=list(s.discrete), datatype=DataType.BITS)],
            [SimData(0, values=list(s.holding), datatype=DataType.REGISTERS)],
            [SimData(0, values=list(s.inputs), datatype=DataType.REGISTERS)],
        )

    async def start(self, port: int = 0, ignore_missing: bool = True) -> int:
        self.server.ignore_missing_devices = ignore_missing
        self.port = await self.server.start({u: self._tables() for u in self.units}, port=port)
        return self.port

    async def stop(self) -> None:
        if self.server.running:
            await self.server.stop()
            await asyncio.sleep(0.05)


class SilentServer:
    """Accepts TCP connections and never answers: a device that hangs."""

    def __init__(self) -> None:
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while await reader.read(1024):
                    pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


def device(port: int, points: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"connector": "modbus", "url": f"tcp://127.0.0.1:{port}", "poll": "50ms", "timeout": "500ms", "points": points,
            **extra}


def site(devices: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"site": {"id": "mb"}, "devices": devices, "supervision": FAST, **extra}


class FaultyInverter:
    """A :class:`SunSpecInverterSimulator` (``.sim``) whose server can be restarted and slowed."""

    def __init__(self, **options: Any):
        self.sim = SunSpecInverterSimulator(**options)
        self.port = 0

    @property
    def requests(self) -> int:
        """Requests served so far (across restarts)."""
        return self.sim.server.requests

    @property
    def delay(self) -> float:
        """Seconds every answer is late (see :meth:`slow`)."""
        return self.sim.server.delay

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> int:
        self.port = await self.sim.start(port=port or self.port)
        return self.port

    async def stop(self) -> None:
        await self.sim.stop()

    async def restart(self, down_for: float = 0.0) -> None:
        """Stop the server (open connections drop), wait ``down_for`` seconds, serve again on the same port."""
        await self.sim.stop()
        await asyncio.sleep(down_for)
        await self.start(self.port)

    def slow(self, delay: float) -> None:
        """Answer every request ``delay`` seconds late from now on (0: normal again)."""
        self.sim.server.delay = delay


@pytest.fixture
async def sunspec_inverter() -> AsyncIterator[Callable[..., Awaitable[FaultyInverter]]]:
    """Factory: ``await sunspec_inverter(**SunSpecInverterSimulator options)`` starts one; all stop after the test."""
    async with start_each(FaultyInverter) as factory:
        yield factory
