"""A token bucket on the host's clock, so that simulated time in tests and replays applies too."""

from __future__ import annotations

from typing import Any

__all__ = ["RateLimiter"]


class RateLimiter:
    """At most ``rate`` acquisitions per second on average, ``burst`` at once."""

    def __init__(self, rate: float, clock: Any, burst: int = 1):
        if rate <= 0:
            raise ValueError("a rate limit must be positive")
        self.rate = rate
        self.clock = clock
        self.burst = burst
        self.tokens = float(burst)
        self.updated = clock.now()
        self.waited = 0.0  # seconds spent waiting, for the metrics

    async def acquire(self) -> None:
        while True:
            now = self.clock.now()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            wait = (1 - self.tokens) / self.rate
            self.waited += wait
            await self.clock.sleep(wait)

    def pause(self, seconds: float) -> None:
        """The server asked for a pause (Retry-After): no token until it is over."""
        self.tokens = min(self.tokens, 0.0) - seconds * self.rate
