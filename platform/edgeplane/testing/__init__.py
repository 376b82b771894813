"""The test kit: what a plugin's tests (and the repository's own) use to run real parts on loopback.

Installed with edgeplane and registered with pytest as the plugin ``edgeplane``, so a plugin's
tests can use its fixtures without any import::

    async def test_my_connector(edgeplane_host, fake_clock):
        site = {
            "site": {"id": "t"},
            "devices": {"d1": {"connector": "mine", "points": {"p": {}}}},
        }
        async with edgeplane_host(site, plugins=[my_plugin], clock=fake_clock) as host:
            sub = host.bus.subscribe("d1/#")
            batch = await wait_for_batch(sub)

Fixtures (:mod:`edgeplane.testing.fixtures`):

* ``edgeplane_host(site, plugins=(), clock=None, entry_points=False)``: an async context
  manager that validates ``site`` (a dict or a path), starts a host in-process with the built-in
  plugin, the given plugin objects (and installed ones if ``entry_points=True``) and its store in
  the test's temporary folder, and stops it after;
* ``fake_clock``: a :class:`~edgeplane.clock.SimulatedClock` the test moves with ``advance``;
* ``edgeplane_site(site, plugins=())``: validate a site dict and return the
  :class:`~edgeplane.config.Site` (or raise :class:`~edgeplane.errors.SiteError`);
* ``mqtt_broker(**options)``: a real Mosquitto on a free loopback port, plain or TLS, stopped
  after the test (see :class:`Mosquitto`);
* ``root_logging_restored`` (automatic): the root logger's handlers and level are put back after
  every test, since ``edgeplane run`` replaces them.

Helpers, by module:

* :mod:`~edgeplane.testing.ports`: :func:`free_port`, a loopback port nothing listens on, for a
  server a test starts (the one helper for this: import it rather than writing another);
* :mod:`~edgeplane.testing.host`: :func:`run_host`, :func:`make_site`, :func:`wait_for`,
  :func:`wait_for_batch`;
* :mod:`~edgeplane.testing.mosquitto`: :class:`Mosquitto` (plain, TLS, mutual TLS, users, ACL,
  CRL, persistence, restart on the same port), :func:`make_certificates`, :func:`broker_outage`;
* :mod:`~edgeplane.testing.parts`: :func:`start_each`, the body of a factory fixture that starts
  several servers or simulators and stops them all after the test;
* :mod:`~edgeplane.testing.transport`: :class:`MemoryTransport`, the sync layer's in-memory
  twin of a broker (acknowledges, refuses, holds, drops the link, delivers downlink messages);
* :class:`~edgeplane.netfaults.FaultProxy`: a TCP proxy that puts latency, jitter, a bandwidth
  cap, stalls, resets or a black hole between a host and its broker or device;
* the in-memory connector (``connector: memory``) is always available; get the running object
  with ``host.device(name)`` and drive it with ``await dev.set(point, value)``.

The protocol plugins ship their own servers and fixtures in ``edgeplane_<protocol>.testing``
(a SunSpec inverter on Modbus TCP, an OPC UA machine, an MQTT publisher). Those are opt-in: a
test folder's conftest.py imports the fixtures it uses::

    from edgeplane_modbus.testing import sunspec_inverter  # noqa: F401 - a fixture

Async tests need an asyncio test runner (pytest-asyncio, installed with ``edgeplane[testing]``).
"""

from __future__ import annotations

from edgeplane.netfaults import FaultProxy
from edgeplane.testing.fixtures import edgeplane_host, edgeplane_site, fake_clock, mqtt_broker, root_logging_restored
from edgeplane.testing.host import make_site, run_host, wait_for, wait_for_batch
from edgeplane.testing.mosquitto import Mosquitto, MosquittoError, TlsFiles, broker_outage, make_certificates
from edgeplane.testing.parts import Startable, start_each
from edgeplane.testing.ports import free_port
from edgeplane.testing.transport import MemoryTransport, Message, memory_transport_plugin

__all__ = [
    "FaultProxy",
    "MemoryTransport",
    "Message",
    "Mosquitto",
    "MosquittoError",
    "Startable",
    "TlsFiles",
    "broker_outage",
    "edgeplane_host",
    "edgeplane_site",
    "fake_clock",
    "free_port",
    "make_certificates",
    "make_site",
    "memory_transport_plugin",
    "mqtt_broker",
    "root_logging_restored",
    "run_host",
    "start_each",
    "wait_for",
    "wait_for_batch",
]
