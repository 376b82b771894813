"""pytest fixtures for plugin authors: a real Mosquitto broker on loopback, with outages.

Registered with pytest through the entry point ``pytest11: edgeplane_mqtt``::

    async def test_survives_a_broker_outage(edgeplane_host, mqtt_broker):
        broker = mqtt_broker()                          # mqtt://127.0.0.1:<free port>, started
        ...
        await broker_outage(broker, seconds=2)          # stopped, then started on the same port
        publisher = mqtt_publisher(broker)              # a paho client: publisher.send(topic, payload)

Needs Mosquitto (``apt-get install mosquitto``). Options are those of
:class:`edgeplane_mqtt.testing.Mosquitto` (``persistence=True`` keeps sessions across outages,
``tls=make_certificates(folder)``, ``users={...}``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from edgeplane_mqtt.testing import Mosquitto, Publisher

__all__ = ["broker_outage", "mqtt_broker", "mqtt_publisher"]


async def broker_outage(broker: Mosquitto, seconds: float) -> None:
    """Stop the broker for ``seconds`` (clients lose their connection), then start it on the same port."""
    await asyncio.to_thread(broker.stop)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(broker.start)


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Factory: ``mqtt_broker(**Mosquitto options)`` starts a broker; every one stops after the test."""
    brokers: list[Mosquitto] = []

    def factory(**options: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / "brokers", **options)
        broker.start()
        brokers.append(broker)
        return broker

    yield factory
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mqtt_publisher() -> Iterator[Callable[..., Publisher]]:
    """Factory: ``mqtt_publisher(broker, **tls)`` connects a publishing client; all close after the test."""
    publishers: list[Publisher] = []

    def factory(broker: Mosquitto, **tls: Any) -> Publisher:
        publisher = Publisher(broker, **tls)
        publishers.append(publisher)
        return publisher

    yield factory
    for publisher in publishers:
        publisher.close()
