"""The hand-over of MQTT messages from paho's network thread to the event loop.

paho calls ``on_message`` on its own thread. :meth:`Inbox.put` appends to a deque (a few
hundred nanoseconds, never waits) and wakes the loop with ``call_soon_threadsafe`` only when
no wake-up is already pending, so a burst of 10,000 messages costs one wake-up and is taken
by the loop in large chunks. The deque is bounded: when the loop falls behind, the newest
messages are refused and counted (:attr:`Inbox.refused`), so neither side ever blocks.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

__all__ = ["Inbox"]


class Inbox:
    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int):
        self.maxsize = maxsize
        self.refused = 0  # written by the producer thread only
        self.accepted = 0
        self._loop = loop
        self._items: collections.deque[Any] = collections.deque()
        self._ready = asyncio.Event()
        self._wakeup_pending = False

    def put(self, item: Any) -> bool:
        """From any thread: queue ``item``; False (and counted) if the inbox is full."""
        if len(self._items) >= self.maxsize:
            self.refused += 1
            return False
        self._items.append(item)
        self.accepted += 1
        if not self._wakeup_pending:
            self._wakeup_pending = True
            try:
                self._loop.call_soon_threadsafe(self._ready.set)
            except RuntimeError:  # the loop closed while the network thread was still delivering
                pass
        return True

    async def wait(self) -> None:
        """On the loop: wait until there is something to take."""
        if not self._items:
            await self._ready.wait()
        self._ready.clear()
        # cleared before taking: a message queued from now on schedules a new wake-up
        self._wakeup_pending = False

    def take(self, limit: int) -> list[Any]:
        """On the loop: up to ``limit`` queued items, oldest first."""
        items = self._items
        n = min(limit, len(items))
        return [items.popleft() for _ in range(n)]

    def __len__(self) -> int:
        return len(self._items)
