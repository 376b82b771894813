"""Fixtures of edgeplane-pdm's tests (helpers live in edgeplane_pdm.testing)."""

from __future__ import annotations

import pytest


@pytest.fixture
def plugins():
    import edgeplane_opcua.plugin
    import edgeplane_pdm.plugin

    return [edgeplane_opcua.plugin, edgeplane_pdm.plugin]


@pytest.fixture
def mosquitto(mqtt_broker) -> str:
    """A Mosquitto broker on a free loopback port (edgeplane.testing's); its mqtt:// URL."""
    return mqtt_broker(max_queued_messages=100_000).url
