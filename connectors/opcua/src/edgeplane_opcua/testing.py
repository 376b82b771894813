"""The OPC UA plugin's test kit: a simulated machine on a real OPC UA server, with faults.

The fixture ``opcua_machine`` is opt-in: a test folder's conftest.py imports it
(``from edgeplane_opcua.testing import opcua_machine  # noqa: F401``)::

    async def test_resubscribes_after_a_restart(edgeplane_host, opcua_machine):
        machine = await opcua_machine()                    # opc.tcp://127.0.0.1:<free port>/edgeplane/sim/
        ...                                                # points: {"temp": {"node": "ns=2;s=Machine.Temperature"}}
        await machine.restart(down_for=1.0)                # the server goes away and comes back
        machine.slow(0.5)                                  # values change every 0.5 s instead of 50 ms

The machine is :func:`edgeplane_opcua.simulator.build`'s (``Objects/Machine``: Temperature,
Speed, Setpoint, Vibration ...). A restart makes a new server on the same port: subscriptions
and sessions are lost, as after a real PLC reboot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from edgeplane.testing import free_port, start_each
from edgeplane_opcua.simulator import animate, build

__all__ = ["FaultyMachine", "opcua_machine"]


class FaultyMachine:
    """The simulated machine; ``restart`` and ``slow`` inject faults."""

    def __init__(self, period: float = 0.05, **options: Any):
        self.options = options
        self.period = period
        self.port = free_port()
        self.server: Any = None
        self.nodes: dict[str, Any] = {}
        self._animation: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/edgeplane/sim/"

    async def start(self) -> None:
        self.server, self.nodes = await build(self.port, **self.options)
        await self.server.start()
        self._animation = asyncio.get_running_loop().create_task(self._animate())

    async def _animate(self) -> None:
        await animate(self.server, self.nodes, self.period, self.options.get("window", 256))

    async def stop(self) -> None:
        if self._animation is not None:
            self._animation.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._animation
            self._animation = None
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def restart(self, down_for: float = 0.0) -> None:
        """Stop the server (sessions and subscriptions are lost), wait, start a new one on the same port."""
        await self.stop()
        await asyncio.sleep(down_for)
        await self.start()

    def slow(self, period: float) -> None:
        """Change values every ``period`` seconds from the next change on (a slow or stalling device)."""
        self.period = period
        if self._animation is not None:
            self._animation.cancel()
            self._animation = asyncio.get_running_loop().create_task(self._animate())


@pytest.fixture
async def opcua_machine() -> AsyncIterator[Callable[..., Awaitable[FaultyMachine]]]:
    """Factory: ``await opcua_machine(period=0.05, **build options)`` starts one; all stop after the test."""
    async with start_each(FaultyMachine) as factory:
        yield factory
