"""How a connector retries a link it lost: one policy for every protocol.

Exponential backoff from ``initial`` to ``maximum`` (each wait less a little random jitter, so
many devices that lost the same network do not retry in lockstep). The cap is low on purpose: a
device that comes back after an outage of any length is tried again within ``maximum`` seconds
(5 s by default), which a few connection attempts per device and minute cost nothing for. After
a successful connection the backoff starts again at ``initial``, so a link that was up is probed
quickly when it drops.

A connector keeps its ``reconnect_initial`` / ``reconnect_max`` fields (site files name them) and
builds its policy from them with :meth:`ReconnectPolicy.of`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff", "ReconnectPolicy"]


@dataclass(frozen=True)
class ReconnectPolicy:
    """Waits between reconnect attempts: ``initial``, doubling (``factor``) up to ``maximum``."""

    initial: float = 0.5
    maximum: float = 5.0
    factor: float = 2.0
    jitter: float = 0.1  # each wait is shortened by up to this fraction, never lengthened

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"reconnect waits need 0 < initial ({self.initial:g} s) <= maximum ({self.maximum:g} s)")
        if self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError("reconnect backoff needs factor >= 1 and 0 <= jitter < 1")

    @classmethod
    def of(cls, initial: float, maximum: float) -> ReconnectPolicy:
        """The policy for a connector's ``reconnect_initial`` / ``reconnect_max`` settings."""
        return cls(initial=max(initial, 0.01), maximum=max(maximum, initial, 0.01))

    def backoff(self) -> Backoff:
        """A fresh backoff state that follows this policy."""
        return Backoff(self)


class Backoff:
    """The state of one link's retries: :meth:`next_delay` after a failure, :meth:`reset` on success."""

    def __init__(self, policy: ReconnectPolicy):
        self.policy = policy
        self._delay = policy.initial

    def next_delay(self) -> float:
        """How long to wait before the next attempt (and back off further for the one after)."""
        delay = self._delay
        self._delay = min(self._delay * self.policy.factor, self.policy.maximum)
        return delay * (1.0 - self.policy.jitter * random.random())

    def peek(self) -> float:
        """The wait the next failure will cause, without jitter (for messages)."""
        return self._delay

    def reset(self) -> None:
        """The link is up: the next loss starts from ``initial`` again."""
        self._delay = self.policy.initial
