"""Fixtures: a Mosquitto broker per test (plain, or TLS with generated certificates) and a publisher."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from edgeplane_mqtt.testing import Mosquitto, Publisher, TlsFiles, make_certificates


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path) as b:
        yield b


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def publisher(broker: Mosquitto) -> Iterator[Publisher]:
    pub = Publisher(broker)
    yield pub
    pub.close()
