"""Fixtures for the solar tests."""

from __future__ import annotations

import pytest

from edgeplane_solar.simulator import TmyWeather


@pytest.fixture(scope="session")
def tmy() -> TmyWeather:
    return TmyWeather()


@pytest.fixture
def mosquitto(mqtt_broker) -> str:
    """A Mosquitto broker on a free loopback port (edgeplane.testing's); its mqtt:// URL."""
    return mqtt_broker().url
