"""The pytest fixtures of the test kit, registered with pytest as the plugin ``edgeplane``.

Every test in an environment with edgeplane installed can ask for them by name (the entry point
``pytest11: edgeplane = "edgeplane.testing"`` loads this module through the package). The
protocol plugins' own fixtures (``sunspec_inverter``, ``opcua_machine``, ``mqtt_publisher``) are
opt-in: a conftest.py imports them from ``edgeplane_<protocol>.testing``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeplane.clock import SimulatedClock
from edgeplane.config import Site
from edgeplane.host import Host
from edgeplane.plugins import Plugins
from edgeplane.testing.host import make_site, run_host
from edgeplane.testing.mosquitto import Mosquitto

__all__ = ["edgeplane_host", "edgeplane_site", "fake_clock", "mqtt_broker", "root_logging_restored"]


@pytest.fixture(autouse=True)
def root_logging_restored() -> Iterator[None]:
    """Put the root logger's handlers and level back after every test.

    ``edgeplane run`` and ``configure_logging`` replace the root handlers with one bound to the
    ``sys.stderr`` of that moment (a test's capture); left behind, it writes into later tests' output.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def fake_clock() -> SimulatedClock:
    """A simulated clock starting at 2023-11-14T22:13:20Z; move it with ``advance(seconds)``."""
    return SimulatedClock()


@pytest.fixture
def edgeplane_host(tmp_path: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[Host]]:
    """Factory: ``async with edgeplane_host(site, plugins=[...]) as host:`` (see module doc)."""
    def factory(site: dict[str, Any] | str | Path, **kwargs: Any) -> contextlib.AbstractAsyncContextManager[Host]:
        kwargs.setdefault("store_dir", tmp_path / "store")
        return run_host(site, **kwargs)

    return factory


@pytest.fixture
def edgeplane_site(tmp_path: Path) -> Callable[..., Site]:
    """Factory: ``edgeplane_site(site_dict, plugins=[...])`` returns the validated Site."""
    def factory(site: dict[str, Any] | str | Path, plugins: Iterable[Any] = (), entry_points: bool = False) -> Site:
        return make_site(site, Plugins.load(entry_points=entry_points, extra=plugins), tmp_path / "store")

    return factory


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Factory: ``mqtt_broker(**Mosquitto options)`` starts a broker; every one stops after the test.

    ``mqtt_broker()`` is plain MQTT on a free loopback port; ``mqtt_broker(tls=make_certificates(
    folder), require_certificate=True)`` is mutual TLS; ``persistence=True`` keeps sessions across
    :func:`~edgeplane.testing.broker_outage`; see :class:`~edgeplane.testing.Mosquitto`.
    """
    brokers: list[Mosquitto] = []

    def factory(**options: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / "brokers", **options)
        broker.start()
        brokers.append(broker)
        return broker

    yield factory
    for broker in brokers:
        broker.stop()
