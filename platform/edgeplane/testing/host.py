"""Run a host in-process for a test: validate a site, start and stop the host, wait for batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

from edgeplane.bus import Batch, Subscription
from edgeplane.clock import Clock
from edgeplane.config import Site, load_site, parse_site
from edgeplane.host import Host
from edgeplane.plugins import Plugins

__all__ = ["make_site", "run_host", "wait_for", "wait_for_batch"]


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
