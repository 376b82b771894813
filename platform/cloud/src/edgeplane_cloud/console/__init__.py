"""The fleet console: one page (sites, rollouts, events, a plot of any stream) and its JSON API.

Every asset ships in the wheel (``index.html`` here, no CDN): it works with no internet. The API:

    GET  /api/sites                 sites: labels, last seen, backlog, health, twin differences
    GET  /api/rollouts              rollouts: state, progress, failures, rollbacks
    GET  /api/events                fleet events and dead letters, newest first
    GET  /api/models                model versions in the fleet store
    GET  /api/streams?site=S        streams of a site
    GET  /api/series?site=S&stream=T  the latest readings of a stream, for the plot
    POST /api/rollouts              {"model": "NAME:VERSION", "selector": "...", "canary": 0.1, "batch_size": 100}
    POST /api/rollouts/<id>/rollback

POSTs take ``application/json`` only (a cross-site form cannot send it without a CORS
preflight, which this server never answers) and need ``--broker`` and ``--signing-key``. The
console has no login of its own: it listens on loopback by default; put it behind the
operator's authenticating proxy to expose it.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["ConsoleServer"]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


class ConsoleServer:
    """Serves the console on ``host:port`` (port 0: a free one) from a thread; ``start()``/``stop()``."""

    def __init__(self, dsn: str, *, host: str = "127.0.0.1", port: int = 8470, broker: str | None = None,
                 signing_key: str | Path | None = None, prefix: str = "edgeplane"):
        self.dsn = dsn
        self.broker = broker
        self.signing_key = signing_key
        self.prefix = prefix
        # one connection for the page's requests, used by one request at a time (psycopg
        # connections are not for concurrent use); each running rollout has its own
        self._fleet_obj: Any = None
        self._fleet_lock = threading.Lock()
        self._publisher: Any = None
        self._publish_lock = threading.Lock()
        self._rollouts: list[threading.Thread] = []
        self.page = resources.files(__package__).joinpath("index.html").read_bytes()
        console = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("console: " + fmt, *args)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                console._get(self)

            def do_POST(self) -> None:  # noqa: N802
                console._post(self)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        address = self.httpd.server_address
        self.host, self.port = str(address[0]), int(address[1])  # an AF_INET address: (host, port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="fleet-console", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        with self._fleet_lock:
            self._drop_fleet()
        for t in self._rollouts:
            t.join(5)
        if self._publisher is not None:
            self._publisher.close()

    # -- plumbing --------------------------------------------------------------------------------

    def _fleet(self) -> Any:
        from edgeplane_cloud.fleet import Fleet

        if self._fleet_obj is None or self._fleet_obj.conn.closed:
            self._fleet_obj = Fleet(self.dsn, signing_key=self.signing_key, publish=self._publish, prefix=self.prefix)
        return self._fleet_obj

    def _drop_fleet(self) -> None:
        if self._fleet_obj is not None:
            try:
                self._fleet_obj.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
            self._fleet_obj = None

    def _publish(self, messages: list[tuple[str, bytes, bool]]) -> None:
        from edgeplane_cloud.broker import MqttPublisher

        if self.broker is None:
            raise RuntimeError("the console was started without --broker: it can show, not send")
        with self._publish_lock:
            if self._publisher is None:
                self._publisher = MqttPublisher(self.broker, "edgeplane-fleet-console")
            self._publisher.publish_many(messages)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Cache-Control", "no-store")
        handler.send_header("X-Content-Type-Options", "nosniff")
        handler.send_header("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                                       "script-src 'self' 'unsafe-inline'; img-src 'self' data:")
        handler.end_headers()
        handler.wfile.write(body)

    def _json(self, handler: BaseHTTPRequestHandler, status: int, doc: Any) -> None:
        self._send(handler, status, json.dumps(doc, default=str).encode(), "application/json")

    # -- routes ----------------------------------------------------------------------------------

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        with self._fleet_lock:
            self._get_locked(handler)

    def _get_locked(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        args = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if url.path in ("/", "/index.html"):
                return self._send(handler, 200, self.page, "text/html; charset=utf-8")
            fleet = self._fleet()
            if url.path == "/api/sites":
                return self._json(handler, 200, fleet.sites(args.get("selector")))
            if url.path == "/api/rollouts":
                return self._json(handler, 200, fleet.rollouts())
            if url.path == "/api/events":
                return self._json(handler, 200, fleet.events(100))
            if url.path == "/api/models":
                rows = fleet.conn.execute("SELECT name, version, sha256, manifest ? 'signature' FROM artifacts "
                                          "ORDER BY name, version").fetchall()
                return self._json(handler, 200, [{"name": n, "version": v, "sha256": s, "signed": bool(sig)}
                                                 for n, v, s, sig in rows])
            if url.path == "/api/streams":
                return self._json(handler, 200, fleet.streams(args.get("site", "")))
            if url.path == "/api/series":
                return self._json(handler, 200, fleet.series(args.get("site", ""), args.get("stream", "")))
            return self._json(handler, 404, {"error": f"no such page {url.path}"})
        except Exception as e:  # noqa: BLE001 - one failing request must not take the console down
            log.exception("console: GET %s failed", url.path)
            self._drop_fleet()
            return self._json(handler, 500, {"error": f"{type(e).__name__}: {e}"})

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        with self._fleet_lock:
            self._post_locked(handler)

    def _post_locked(self, handler: BaseHTTPRequestHandler) -> None:
        from edgeplane_cloud.fleet import FleetError

        url = urlsplit(handler.path)
        if handler.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self._json(handler, 415, {"error": "send application/json"})
        length = int(handler.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._json(handler, 413, {"error": f"body over {MAX_BODY} bytes"})
        try:
            doc = json.loads(handler.rfile.read(length) or b"{}")
            if not isinstance(doc, dict):
                raise ValueError("send a JSON object")
        except ValueError as e:
            return self._json(handler, 400, {"error": f"not JSON: {e}"})
        if self.broker is None or self.signing_key is None:
            return self._json(handler, 409, {"error": "start the console with --broker and --signing-key to send changes"})
        try:
            fleet = self._fleet()
            parts = url.path.strip("/").split("/")
            if parts == ["api", "rollouts"]:
                return self._json(handler, 202, {"id": self._start_rollout(fleet, doc)})
            if len(parts) == 4 and parts[:2] == ["api", "rollouts"] and parts[3] == "rollback" and parts[2].isdigit():
                return self._json(handler, 200, {"rolled_back": fleet.rollback(int(parts[2]), "rolled back from the console")})
            return self._json(handler, 404, {"error": f"no such action {url.path}"})
        except (FleetError, ValueError, TypeError) as e:
            return self._json(handler, 400, {"error": str(e)})
        except Exception as e:  # noqa: BLE001
            log.exception("console: POST %s failed", url.path)
            self._drop_fleet()
            return self._json(handler, 500, {"error": f"{type(e).__name__}: {e}"})

    def _start_rollout(self, fleet: Any, doc: dict[str, Any]) -> int:
        from edgeplane_cloud.fleet import Fleet, FleetError

        model = str(doc.get("model", ""))
        name, sep, version = model.partition(":")
        if not sep or not name or not version:
            raise FleetError("model: give NAME:VERSION of a model in the fleet store")
        rid = fleet.start_rollout("model", {"name": name, "version": version}, str(doc.get("selector") or ""),
                                  canary=float(doc.get("canary", 0.05)), batch_size=int(doc.get("batch_size", 100)),
                                  gate_timeout=float(doc.get("gate_timeout", 120)))

        def run() -> None:
            own = Fleet(self.dsn, signing_key=self.signing_key, publish=self._publish, prefix=self.prefix)
            try:
                own.run_rollout(rid)
            except Exception:  # noqa: BLE001 - recorded as the rollout's error
                log.exception("console: rollout %s failed", rid)
                own.conn.execute("UPDATE rollouts SET state = 'failed', error = 'the console lost the rollout: see "
                                 "its log' WHERE id = %s AND state = 'running'", (rid,))
            finally:
                own.close()

        thread = threading.Thread(target=run, name=f"rollout-{rid}", daemon=True)
        self._rollouts.append(thread)
        thread.start()
        return rid
