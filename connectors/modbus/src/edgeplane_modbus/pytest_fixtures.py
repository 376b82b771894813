"""pytest fixtures for plugin authors: a SunSpec inverter on Modbus TCP, with fault injection.

Registered with pytest through the entry point ``pytest11: edgeplane_modbus``, so any test in an
environment with edgeplane-modbus installed uses them by name::

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
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from edgeplane_modbus.simulator import SunSpecInverterSimulator

__all__ = ["FaultyInverter", "sunspec_inverter"]


class FaultyInverter:
    """A :class:`SunSpecInverterSimulator` (``.sim``) whose server can be restarted and slowed."""

    def __init__(self, **options: Any):
        self.sim = SunSpecInverterSimulator(**options)
        self.delay = 0.0
        self.requests = 0
        self.port = 0
        action = self.sim._action

        async def delayed(*args: Any) -> Any:
            # the simulator's server calls this for every request; a slow device answers late
            self.requests += 1
            if self.delay > 0:
                await asyncio.sleep(self.delay)
            return await action(*args)

        self.sim._action = delayed  # type: ignore[method-assign]

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
        self.delay = delay


@pytest.fixture
async def sunspec_inverter() -> AsyncIterator[Callable[..., Awaitable[FaultyInverter]]]:
    """Factory: ``await sunspec_inverter(**SunSpecInverterSimulator options)`` starts one; all stop after the test."""
    started: list[FaultyInverter] = []

    async def factory(**options: Any) -> FaultyInverter:
        inverter = FaultyInverter(**options)
        await inverter.start()
        started.append(inverter)
        return inverter

    yield factory
    for inverter in started:
        await inverter.stop()
