"""Fixtures for the sync tests: a real Mosquitto broker per test (edgeplane.testing's), restartable on
the same port."""

from __future__ import annotations

import asyncio
import time

import pytest

from edgeplane.testing import Mosquitto

__all__ = ["Mosquitto", "broker", "wait_until"]

@pytest.fixture
def broker(mqtt_broker) -> Mosquitto:
    """Mosquitto with persistence (a restart keeps sessions and queued messages), saved every second."""
    return mqtt_broker(persistence=True, extra=["autosave_interval 1"])


async def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> None:
    """Poll ``predicate`` (sync) until true; fail with ``what`` after a generous timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
