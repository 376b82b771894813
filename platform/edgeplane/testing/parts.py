"""Servers and simulators a test starts several of, each stopped after the test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ParamSpec, Protocol, TypeVar

__all__ = ["Startable", "start_each"]


class Startable(Protocol):
    """Anything with ``await start()`` and ``await stop()`` (a simulator, a server)."""

    async def start(self) -> object: ...

    async def stop(self) -> object: ...


P = ParamSpec("P")
S = TypeVar("S", bound=Startable)


@contextlib.asynccontextmanager
async def start_each(make: Callable[P, S]) -> AsyncIterator[Callable[P, Awaitable[S]]]:
    """A factory fixture's body: ``await factory(...)`` makes one with ``make(...)`` and starts it;
    leaving the block stops every one started, the last first, even when a stop fails::

        @pytest.fixture
        async def opcua_machine():
            async with start_each(FaultyMachine) as factory:
                yield factory
    """
    started: list[S] = []

    async def factory(*args: P.args, **kwargs: P.kwargs) -> S:
        part = make(*args, **kwargs)
        await part.start()
        started.append(part)
        return part

    async with contextlib.AsyncExitStack() as stack:
        try:
            yield factory
        finally:
            for part in started:
                stack.push_async_callback(part.stop)
