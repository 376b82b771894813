"""Injectable time.

Connectors, solutions and the host never call ``time.time()`` or ``asyncio.sleep()`` for
domain time; they ask ``context.clock``. In the field that is :class:`WallClock`. In replays,
SUMO runs and tests it is a :class:`SimulatedClock` that a simulator, a replay or a test moves
forward, so that hours of plant time pass in milliseconds and results are deterministic.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """What every clock offers."""

    def now(self) -> float:
        """Seconds since the Unix epoch, as a float."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


class WallClock:
    """Real time: ``time.time()`` and ``asyncio.sleep()``."""

    simulated = False

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "WallClock()"


class SimulatedClock:
    """Time that moves only when told to.

    ``advance(dt)`` or ``set_time(t)`` moves it and wakes every sleeper whose deadline has
    passed, in deadline order. A driver (a replay connector, a SUMO step loop, a test) owns the
    clock's progress; everything else only reads it and sleeps on it.
    """

    simulated = True

    def __init__(self, start: float = 1_700_000_000.0):
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake the sleepers now due."""
        if seconds < 0:
            raise ValueError(f"a simulated clock cannot go backwards (advance({seconds}))")
        self.set_time(self._now + seconds)

    def set_time(self, timestamp: float) -> None:
        """Move time to ``timestamp`` (never backwards) and wake the sleepers now due."""
        if timestamp < self._now:
            raise ValueError(f"a simulated clock cannot go backwards ({timestamp} < {self._now})")
        self._now = float(timestamp)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @property
    def next_deadline(self) -> float | None:
        """When the earliest sleeper wakes, or None if nobody sleeps."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def __repr__(self) -> str:
        return f"SimulatedClock(now={self._now})"
