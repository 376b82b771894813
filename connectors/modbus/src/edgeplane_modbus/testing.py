"""Real Modbus servers on the loopback, for this package's tests and for sites that use Modbus devices.

* :class:`PymodbusServer`: pymodbus's TCP server over a plain datastore, recording requests;
* :class:`SilentServer`: accepts connections and never answers (a hung device);
* :func:`device` / :func:`site`: site-file fragments for tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edgeplane_modbus import plugin

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
        self.server: ModbusTcpServer | None = None
        self.port = 0

    async def _action(self, fc, start, address, count, registers, values):
        from pymodbus.constants import ExcCodes

        self.store.requests.append((fc, address, count))
        if fc in (3, 6, 16) and any(a in self.store.fail_addresses for a in range(address, address + count)):
            return ExcCodes.DEVICE_FAILURE
        return None

    def _device(self, unit: int) -> SimDevice:
        s = self.store
        return SimDevice(unit, simdata=(
            [SimData(0, values=list(s.coils), datatype=DataType.BITS)],
            [SimData(0, values=list(s.discrete), datatype=DataType.BITS)],
            [SimData(0, values=list(s.holding), datatype=DataType.REGISTERS)],
            [SimData(0, values=list(s.inputs), datatype=DataType.REGISTERS)],
        ), action=self._action)

    async def start(self, port: int = 0, ignore_missing: bool = True) -> int:
        devices = [self._device(u) for u in self.units]
        self.server = ModbusTcpServer(devices, address=("127.0.0.1", port), ignore_missing_devices=ignore_missing)
        await self.server.serve_forever(background=True)
        self.port = self.server.transport.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None
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
