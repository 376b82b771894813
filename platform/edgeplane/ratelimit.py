"""One token bucket for every rate limit: an API's requests per second, the sync backlog's readings per second.

Tokens flow in at ``rate`` per second up to ``burst``; taking more than there are leaves the
bucket in debt, repaid before the next token is free. Time comes from a clock (``now()`` and
``await sleep(s)``, :class:`edgeplane.clock.Clock`), so a simulated clock in a test or replay
moves the limit too; without one it is the monotonic clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["TokenBucket"]


class _Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class _Monotonic:
    """``time.monotonic`` and ``asyncio.sleep``: for limits that no simulated time should move."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class TokenBucket:
    """At most ``rate`` tokens per second on average, ``burst`` at once; it starts full."""

    def __init__(self, rate: float, burst: float = 1.0, clock: _Clock | None = None):
        if not rate > 0:
            raise ValueError(f"a rate limit must be positive (got {rate!r})")
        if not burst > 0:
            raise ValueError(f"a burst must be positive (got {burst!r})")
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock: _Clock = clock if clock is not None else _Monotonic()
        self._tokens = self.burst
        self._updated = self.clock.now()
        self.waited = 0.0  # seconds acquire() spent waiting, for the metrics

    def available(self) -> float:
        """The tokens there are now (negative while in debt)."""
        now = self.clock.now()
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._updated) * self.rate)
        self._updated = now
        return self._tokens

    def spend(self, tokens: float) -> None:
        """Take ``tokens`` whether or not they are there (what was sent is sent): a debt delays the next ones."""
        self.available()
        self._tokens -= tokens

    def try_take(self, tokens: float = 1.0) -> bool:
        """Take ``tokens`` if there are that many now."""
        if self.available() >= tokens:
            self._tokens -= tokens
            return True
        return False

    async def acquire(self, tokens: float = 1.0) -> None:
        """Wait (on the clock) until ``tokens`` are there, and take them."""
        while not self.try_take(tokens):
            wait = (tokens - self._tokens) / self.rate
            self.waited += wait
            await self.clock.sleep(wait)

    def pause(self, seconds: float) -> None:
        """No token for ``seconds`` from now (a server asked for a pause: Retry-After)."""
        self._tokens = min(self.available(), 0.0) - seconds * self.rate
