"""Pace the uplink to the link it runs on, so a slow link carries data instead of stalling.

MQTT keeps a session alive with PINGREQ/PINGRESP: a client that hears nothing back within its
keepalive drops the connection. The ping travels behind whatever the client already queued, so
when the bytes in flight take longer than the keepalive to cross the link (a 256 kB envelope on a
3 kB/s cellular link takes over a minute), the session is dropped before the first envelope is
acknowledged, the envelope is sent again from its first byte, and the backlog never moves.

:class:`LinkPacer` measures the rate at which the broker acknowledges bytes while something is in
flight (a delivery-rate sample in the manner of TCP BBR: bytes acknowledged over the busy time
they took) and keeps

* the bytes in flight under what the link crosses in half a keepalive, and
* each envelope under what it crosses in a quarter of one,

starting from one small envelope until the first acknowledgement says how fast the link is. On a
LAN the first acknowledgement comes within milliseconds and the limits open to the configured
``inflight`` and ``max_envelope_bytes`` at once; they are never exceeded.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable

__all__ = ["LinkPacer"]

_START_WIRE_BYTES = 8_000  # the window before any acknowledgement: crosses 1 kB/s links within 8 s
_SMALLEST_ENVELOPE = 1_000  # bytes; below this the envelope header dominates
_RATIO_SMOOTHING = 0.3  # weight of a new envelope's wire/body ratio


class LinkPacer:
    """How much the sync service may take and have in flight on the link as measured so far.

    Body bytes are what the outbox counts (``Record.block``); wire bytes are what crosses the link
    (the compressed envelope). Their ratio is learned from the envelopes sent.

    Two limits, both in wire bytes, the smaller of which applies:

    * a congestion window in the manner of TCP slow start: it starts at 8 kB, grows by every
      acknowledged envelope (doubling each round trip) and halves each time the link drops (once
      per drop, however many envelopes it took along: so even a link too slow for the first
      envelope gets measured, and a LAN that flaps opens again within a few round trips);
    * the measured rate times half a keepalive (a quarter for one envelope). The rate is bytes
      acknowledged over the busy time they took, summed over the last two keepalives, so a burst
      of small envelopes a link buffer swallowed at once weighs as little as the bytes it carried.
    """

    def __init__(self, *, keepalive: float, max_envelope_bytes: int, clock: Callable[[], float] = time.monotonic):
        self.keepalive = keepalive
        self.max_envelope_bytes = max_envelope_bytes
        self._clock = clock
        self.window = float(_START_WIRE_BYTES)
        self.wire_per_body = 1.0
        self.in_flight = 0  # wire bytes sent and not yet acknowledged or lost
        self._samples: deque[tuple[int, float]] = deque()  # (wire bytes acknowledged, busy seconds they took)
        self._sample_bytes = 0
        self._sample_seconds = 0.0
        self._since = 0.0  # start of the current sample interval (busy time only)
        self._changed = asyncio.Event()

    @property
    def rate(self) -> float | None:
        """Bytes per second the broker acknowledged while the link was busy; None until measured."""
        if self._sample_seconds <= 0:
            return None
        return self._sample_bytes / self._sample_seconds

    # -- limits -----------------------------------------------------------------------------

    def envelope_body_limit(self) -> int:
        """The most body bytes the next envelope should carry."""
        wire = self.window
        rate = self.rate
        if rate is not None:
            wire = min(wire, rate * self.keepalive / 4)
        body = int(wire / max(self.wire_per_body, 0.01))
        return max(_SMALLEST_ENVELOPE, min(self.max_envelope_bytes, body))

    def window_bytes(self) -> float:
        """The most wire bytes in flight (one envelope is always allowed, however large)."""
        rate = self.rate
        return self.window if rate is None else min(self.window, rate * self.keepalive / 2)

    async def wait_for_room(self) -> None:
        """Return once another envelope may be sent."""
        while self.in_flight > 0 and self.in_flight >= self.window_bytes():
            self._changed.clear()
            await self._changed.wait()

    # -- events -----------------------------------------------------------------------------

    def sent(self, wire_bytes: int, body_bytes: int) -> None:
        if self.in_flight == 0:
            self._since = self._clock()  # the link was idle: idle time is not link time
        self.in_flight += wire_bytes
        if body_bytes > 0:
            ratio = wire_bytes / body_bytes
            self.wire_per_body += _RATIO_SMOOTHING * (ratio - self.wire_per_body)

    def acknowledged(self, wire_bytes: int) -> None:
        now = self._clock()
        self._sample(wire_bytes, max(now - self._since, 1e-6))
        self._since = now
        self.window += wire_bytes
        self._done(wire_bytes)

    def lost(self, wire_bytes: int) -> None:
        """The envelope was not acknowledged (the link dropped); it will be sent again."""
        self._done(wire_bytes)

    def dropped(self) -> None:
        """The link went down: what was in flight took too long, or the link failed."""
        self.window = max(float(_SMALLEST_ENVELOPE), self.window / 2)

    def _sample(self, wire_bytes: int, seconds: float) -> None:
        self._samples.append((wire_bytes, seconds))
        self._sample_bytes += wire_bytes
        self._sample_seconds += seconds
        while len(self._samples) > 1 and self._sample_seconds - self._samples[0][1] >= 2 * self.keepalive:
            old_bytes, old_seconds = self._samples.popleft()
            self._sample_bytes -= old_bytes
            self._sample_seconds -= old_seconds

    def _done(self, wire_bytes: int) -> None:
        self.in_flight = max(0, self.in_flight - wire_bytes)
        self._changed.set()
