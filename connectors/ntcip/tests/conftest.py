"""Fixtures: an NTCIP controller simulator (a real SNMP agent) on a free loopback UDP port."""

from __future__ import annotations

import asyncio

import pytest

from edgeplane_ntcip.simulator import ControllerAgent, PhaseTiming, SignalControllerModel

from edgeplane_ntcip.testing import SIM_START as START, SIM_USER as USER


@pytest.fixture
async def controller():
    """Factory: ``agent = await controller(stages=..., tick=0.02)``; the model steps every ``tick`` wall seconds
    (None: the test steps it) with detector 1 calling phase 2."""
    agents: list[ControllerAgent] = []
    tasks: list[asyncio.Task] = []

    async def factory(stages=([1], [2], [3], [4]), tick: float | None = None, port: int = 0, timing=None, **kwargs) -> ControllerAgent:
        timing = timing or PhaseTiming(min_green=5, max_green=50, yellow=3, red_clear=2)
        model = SignalControllerModel(stages, timing, {1: [2], 2: [3]}, start_time=START, **kwargs)
        agent = ControllerAgent(model, port=port, community="rw-secret", users=[USER])
        await agent.start()
        agents.append(agent)
        if tick is not None:
            async def run() -> None:
                while True:
                    await asyncio.sleep(tick)
                    model.step({})
            tasks.append(asyncio.create_task(run()))
        return agent

    yield factory
    for task in tasks:
        task.cancel()
    for agent in agents:
        await agent.stop()
