"""Liveness and readiness over HTTP for the cloud end's processes, and a client that waits for them.

``edgeplane cloud serve --http-port P`` and ``edgeplane cloud ingest ... --health-port P`` serve:

* ``GET /healthz``: 200 while the process runs (a liveness probe);
* ``GET /readyz``: 200 when every check passes, else 503; the body is JSON naming each check and,
  for a failing one, why (``{"ready": false, "checks": {"broker": "not connected to mqtt://...",
  "store": "ok"}}``). The embedded end checks its broker subscription and its SQLite store; an
  ingest worker its NATS connection, its consumer and PostgreSQL.

Kubernetes points its probes at them; scripts and tests wait with ``edgeplane cloud ready --url
http://HOST:P/readyz --wait 60`` (:func:`wait_ready`) instead of sleeping.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from edgeplane.errors import EdgeplaneError

__all__ = ["Check", "HealthServer", "NotReady", "wait_ready"]

log = logging.getLogger(__name__)

Check = Callable[[], "str | None"]  # None when healthy, else why not (one line, says what to look at)


class NotReady(EdgeplaneError, TimeoutError):
    """The probed process did not report ready in time; the message carries its last answer."""


class HealthServer:
    """``/healthz`` and ``/readyz`` on ``host:port`` (port 0: any free port, see :attr:`port`), in a thread."""

    def __init__(self, checks: dict[str, Check], port: int, host: str = "127.0.0.1"):
        self.checks = checks
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path == "/healthz":
                    self._reply(200, {"alive": True})
                elif self.path == "/readyz":
                    results = server.results()
                    ready = all(v == "ok" for v in results.values())
                    self._reply(200 if ready else 503, {"ready": ready, "checks": results})
                else:
                    self._reply(404, {"error": f"no {self.path}: use /healthz or /readyz"})

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not worth a line
                pass

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="edgeplane-cloud-health", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/readyz"

    def results(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                problem = check()
            except Exception as e:  # noqa: BLE001 - a probe that raises is a failing check, not a dead server
                problem = f"{type(e).__name__}: {e}"
            out[name] = "ok" if problem is None else problem
        return out

    def start(self) -> "HealthServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def wait_ready(url: str, timeout: float, interval: float = 0.2) -> dict[str, Any]:
    """GET ``url`` until it answers 200; its JSON body. Raises :class:`NotReady` with the last answer."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5.0) as response:  # a check may take its own timeout (2 s)
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:  # 503: up, not ready; the body says which check fails
            try:
                body = json.loads(e.read() or b"{}")
                failing = {k: v for k, v in (body.get("checks") or {}).items() if v != "ok"}
                last = f"HTTP {e.code}: " + "; ".join(f"{k}: {v}" for k, v in failing.items()) if failing else f"HTTP {e.code}"
            except ValueError:
                last = f"HTTP {e.code}"
        except (OSError, ValueError) as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            raise NotReady(f"{url} not ready within {timeout:g} s: {last}")
        time.sleep(interval)
