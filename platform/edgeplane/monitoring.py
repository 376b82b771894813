"""``/metrics`` (Prometheus), ``/healthz`` and ``/readyz`` on one HTTP port.

* ``/healthz``: 200 while the host runs (body: each part's health); 503 otherwise.
* ``/readyz``: 200 once every part has started successfully at least once; 503 before, with
  the parts still waiting named.
* ``/console/``: the site console, when the site file has a ``console:`` section
  (:mod:`edgeplane.console`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from edgeplane.host import Host


async def start_monitoring(host: Host, bind: str, port: int) -> tuple[web.AppRunner, tuple[str, int]]:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=host.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        body = {"site": host.site.id, "state": host.state.value, "parts": host.health()}
        return web.json_response(body, status=200 if host.running else 503)

    async def readyz(_: web.Request) -> web.Response:
        waiting = [key for key, part in host.parts.items() if not part.up_once.is_set()]
        body = {"site": host.site.id, "ready": host.ready, "waiting": waiting}
        return web.json_response(body, status=200 if host.ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    # the site console (a site with a console: section) shares the port, and its TLS when set
    ssl_context = None
    if host.site.core.console is not None:
        from edgeplane.console.server import mount_console

        ssl_context = mount_console(app, host)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, bind, port, ssl_context=ssl_context)
    await site.start()
    address = runner.addresses[0]
    return runner, (address[0], address[1])
