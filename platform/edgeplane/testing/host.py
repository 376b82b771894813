"""The test kit for plugin authors, registered with pytest as the plugin ``edgeplane``.

Installed with edgeplane, so a plugin's tests can use these fixtures without any import::

    async def test_my_connector(edgeplane_host, fake_clock):
        site = {
            "site": {"id": "t"},
            "devices": {"d1": {"connector": "mine", "points": {"p": {}}}},
        }
        async with edgeplane_host(site, plugins=[my_plugin], clock=fake_clock) as host:
            sub = host.bus.subscribe("d1/#")
            batch = await wait_for_batch(sub)

* ``edgeplane_host(site, plugins=(), clock=None, entry_points=False)``: an async context
  manager that validates ``site`` (a dict or a path), starts a host in-process with the built-in
  plugin, the given plugin objects (and installed ones if ``entry_points=True``) and its store in
  the test's temporary folder, and stops it after;
* ``fake_clock``: a :class:`~edgeplane.clock.SimulatedClock` the test moves with ``advance``;
* ``edgeplane_site(site, plugins=())``: validate a site dict and return the
  :class:`~edgeplane.config.Site` (or raise :class:`~edgeplane.errors.SiteError`);
* the in-memory connector (``connector: memory``) is always available; get the running object
  with ``host.device(name)`` and drive it with ``await dev.set(point, value)``;
* :func:`free_port`: a loopback port nothing listens on, for a server a test starts (the one
  helper for this: import it rather than writing another);
* :class:`~edgeplane.netfaults.FaultProxy`: a TCP proxy that puts latency, jitter, a bandwidth
  cap, stalls, resets or a black hole between a host and its broker or device.

Async tests need an asyncio test runner (pytest-asyncio, installed with ``edgeplane[testing]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from edgeplane.bus import Batch, Subscription
from edgeplane.clock import Clock, SimulatedClock
from edgeplane.config import Site, load_site, parse_site
from edgeplane.host import Host
from edgeplane.netfaults import FaultProxy
from edgeplane.plugins import Plugins

__all__ = ["FaultProxy", "free_port", "make_site", "run_host", "wait_for", "wait_for_batch"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing uses right now (TCP, or UDP with ``socket.SOCK_DGRAM``).

    It is picked below the kernel's ephemeral range: a port that ``bind(0)`` hands out is one any
    outgoing connection on the machine may take as its source port next, so a server restarted on
    its old port (a broker in a fault test) could find it taken. Ports below the range are only
    ever taken by a listener that asks for them.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, kind) as s:  # a crowded machine: any free port will do
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def make_site(site: dict[str, Any] | str | Path | Site, plugins: Plugins, store_dir: Path | None = None) -> Site:
    """Validate a site given as a dict or a file; put its store in ``store_dir`` if given."""
    if isinstance(site, Site):
        return site
    if isinstance(site, (str, Path)):
        loaded = load_site(site, plugins.registry)
    else:
        site = dict(site)
        if store_dir is not None and "store" not in site:
            site["store"] = {"path": str(store_dir)}
        loaded = parse_site(site, plugins.registry, source="<test site>", base_dir=Path.cwd())
    if store_dir is not None and loaded.core.store.path is None:
        loaded.core.store.path = str(store_dir)
    return loaded


@contextlib.asynccontextmanager
async def run_host(
    site: dict[str, Any] | str | Path | Site,
    *,
    plugins: Iterable[Any] = (),
    clock: Clock | None = None,
    entry_points: bool = False,
    store_dir: Path | None = None,
    http_port: int | None = None,
    local_site: dict[str, Any] | None = None,
) -> AsyncIterator[Host]:
    """Start a host for ``site`` (a dict, a file or a validated Site) in this event loop; stop it on exit."""
    loaded_plugins = Plugins.load(entry_points=entry_points, extra=plugins)
    host = Host(make_site(site, loaded_plugins, store_dir), loaded_plugins, clock=clock, http_port=http_port,
                local_site=local_site)
    await host.start()
    try:
        yield host
    finally:
        await host.stop()


async def wait_for_batch(subscription: Subscription, timeout: float = 5.0) -> Batch:
    """The next batch on ``subscription`` (events are skipped); fails the test after ``timeout``."""
    async def next_batch() -> Batch:
        while True:
            message = await subscription.get()
            if isinstance(message, Batch):
                return message

    return await asyncio.wait_for(next_batch(), timeout)


async def wait_for(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.01) -> None:
    """Poll ``predicate()`` until it is true; raise TimeoutError after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


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

