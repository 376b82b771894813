"""The console's routes on the host's HTTP port (see :func:`mount_console`).

Pages: ``/console/`` (one page, its scripts and styles from this package's ``static/``).
API under ``/console/api/``: ``login``, ``logout``, ``me``, ``overview``, ``devices``,
``history``, ``stream`` (server-sent events), ``write``, ``audit``, ``panels`` and
``commissioning/<connector>`` (a connector plugin's scanner: ``opcua``, ``modbus``) and
``commissioning/profile``. Everything but the page and ``login`` needs a session;
every POST but ``login`` needs the session's CSRF token in ``X-CSRF-Token``; ``write`` and
``commissioning/profile`` need the operator role.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edgeplane.components import PartKey
from edgeplane.console import commissioning
from edgeplane.console.auth import Authenticator, LoginThrottle, Session, SessionStore, same_token
from edgeplane.console.config import ConsoleConfig, is_loopback
from edgeplane.console.live import LiveData
from edgeplane.console.overview import devices, overview
from edgeplane.console.panels import json_safe, jsonable

if TYPE_CHECKING:
    from edgeplane.host import Host

log = logging.getLogger(__name__)

__all__ = ["CONSOLE", "Console", "mount_console"]

COOKIE = "edgeplane_console"
_MAX_BODY = 256 * 1024
_STATIC = {"console.js": "text/javascript", "console.css": "text/css", "index.html": "text/html"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, allow_nan=False, separators=(",", ":"))


def _json(value: Any, status: int = 200) -> web.Response:
    try:
        return web.json_response(value, status=status, dumps=_dumps)
    except ValueError:  # NaN somewhere in a solution's state or an event: JSON has none
        return web.json_response(json_safe(value), status=status, dumps=_dumps)


class Console:
    """The console of one host: sessions, live data, panels, and the request handlers."""

    def __init__(self, host: Host, config: ConsoleConfig):
        self.host = host
        self.config = config
        self.tls = config.tls is not None
        self.auth = Authenticator(config)
        self.sessions = SessionStore(config.session_ttl)
        self.throttle = LoginThrottle(config.max_failed_logins, config.lockout)
        self.live = LiveData(host, config.history_points)
        self.panels = host.plugins.console_panels()
        self.scanners = host.plugins.console_scanners()
        self._devices: tuple[object, list[dict[str, Any]]] = (None, [])  # (cache key, the device list)
        m = host.metrics
        self._m_logins = m.counter("edgeplane_console_logins_total", "Console logins by result", ["result"])
        self._m_refused = m.counter("edgeplane_console_refused_total", "Console requests refused, by reason", ["reason"])

    # -- plumbing ------------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.root)
        r.add_get("/console", self.root)
        r.add_get("/console/", self.page)
        r.add_get("/console/static/{name}", self.static)
        r.add_post("/console/api/login", self.login)
        r.add_post("/console/api/logout", self._guard(self.logout, post=True))
        r.add_get("/console/api/me", self._guard(self.me))
        r.add_get("/console/api/overview", self._guard(self.overview))
        r.add_get("/console/api/devices", self._guard(self.devices))
        r.add_get("/console/api/history", self._guard(self.history))
        r.add_get("/console/api/stream", self._guard(self.stream))
        r.add_post("/console/api/write", self._guard(self.write, post=True, operator=True))
        r.add_get("/console/api/audit", self._guard(self.audit))
        r.add_get("/console/api/panels", self._guard(self.panel_views))
        # profile before {connector}: aiohttp matches in the order routes are added
        r.add_post("/console/api/commissioning/profile", self._guard(self.save_profile, post=True, operator=True))
        r.add_post("/console/api/commissioning/{connector}", self._guard(self.scan_device, post=True))

    def _guard(self, handler: Callable[[web.Request, Session], Awaitable[web.StreamResponse]], *, post: bool = False,
               operator: bool = False) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            session = self.sessions.get(request.cookies.get(COOKIE))
            if session is None:
                self._m_refused.labels(reason="no_session").inc()
                return _error(401, "not logged in (or the session expired): log in again")
            if post and not same_token(request.headers.get("X-CSRF-Token"), session.csrf):
                self._m_refused.labels(reason="csrf").inc()
                return _error(403, "missing or wrong CSRF token: reload the page")
            if operator and not session.can_write:
                self._m_refused.labels(reason="role").inc()
                return _error(403, f"user {session.user!r} is a {session.role}: only an operator may do this")
            return await handler(request, session)

        return guarded

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if request.content_length is not None and request.content_length > _MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=_MAX_BODY, actual_size=request.content_length)
        raw = await request.content.read(_MAX_BODY + 1)
        if len(raw) > _MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=_MAX_BODY, actual_size=len(raw))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise web.HTTPBadRequest(text="the request body is not JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the request body must be a JSON object")
        return body

    # -- pages ---------------------------------------------------------------------------------

    async def root(self, _: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/console/")

    async def page(self, _: web.Request) -> web.StreamResponse:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _STATIC or name == "index.html":
            raise web.HTTPNotFound()
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        body = resources.files("edgeplane.console").joinpath("static", name).read_bytes()
        return web.Response(body=body, content_type=_STATIC[name], charset="utf-8", headers=_SECURITY_HEADERS)

    # -- sessions ------------------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin and origin != f"{request.scheme}://{request.host}":
            self._m_refused.labels(reason="origin").inc()
            return _error(403, f"login from another origin ({origin}) refused")
        body = await self._body(request)
        user, password = body.get("user"), body.get("password")
        if not isinstance(user, str) or not isinstance(password, str) or not user or len(user) > 64 or len(password) > 1024:
            return _error(400, "send {\"user\": ..., \"password\": ...}")
        address = request.remote or "?"
        keys = (f"user:{user}", f"addr:{address}")
        wait = self.throttle.locked(*keys)
        if wait > 0:
            self._m_logins.labels(result="locked").inc()
            return _error(429, f"too many failed logins: try again in {wait:.0f} s", retry_after_s=round(wait))
        role = await asyncio.get_running_loop().run_in_executor(None, self.auth.verify, user, password)
        if role is None:
            self.throttle.fail(*keys)
            self._m_logins.labels(result="failed").inc()
            log.warning("console: failed login for user %r from %s", user[:64], address)
            return _error(401, "wrong user name or password")
        self.throttle.succeed(*keys)
        self._m_logins.labels(result="ok").inc()
        session = self.sessions.create(user, role)
        log.info("console: %s (%s) logged in from %s", user, role, address)
        response = _json({"user": user, "role": role, "csrf": session.csrf})
        response.set_cookie(COOKIE, session.token, httponly=True, samesite="Strict", secure=self.tls, path="/console",
                            max_age=int(self.config.session_ttl))
        return response

    async def logout(self, request: web.Request, session: Session) -> web.StreamResponse:
        self.sessions.end(session.token)
        response = _json({"ok": True})
        response.del_cookie(COOKIE, path="/console")
        return response

    async def me(self, _: web.Request, session: Session) -> web.StreamResponse:
        return _json({"user": session.user, "role": session.role, "csrf": session.csrf, "site": self.host.site.id,
                      "timezone": self.host.site.core.site.timezone})

    # -- reading -------------------------------------------------------------------------------

    async def overview(self, _: web.Request, __: Session) -> web.StreamResponse:
        return _json(overview(self.host, self.live))

    async def devices(self, _: web.Request, __: Session) -> web.StreamResponse:
        # the point list changes only with a reload or a discovery: built once per such change
        # (matching every point against the site's limit patterns costs ~20 ms on the solar site)
        key = (id(self.host.site), tuple((k, id(p.obj), len(getattr(getattr(p.obj, "config", None), "points", ())))
                                         for k, p in self.host.parts.items() if k.kind == "device"))
        if self._devices[0] != key:
            self._devices = (key, devices(self.host))
        return _json({"devices": self._devices[1], "values": self.live.snapshot()})

    async def history(self, request: web.Request, _: Session) -> web.StreamResponse:
        topic = request.query.get("topic", "")
        return _json({"topic": topic, "points": self.live.history(topic)})

    async def stream(self, request: web.Request, session: Session) -> web.StreamResponse:
        queue = self.live.open_stream()
        if queue is None:
            return _error(503, "too many open console pages: close some")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        try:
            await response.prepare(request)
            first = {"now": None, "values": self.live.snapshot()}
            await response.write(f"event: values\ndata: {_dumps(first)}\n\n".encode())
            while not self.live.closing.is_set():
                try:
                    message = await asyncio.wait_for(queue.get(), 15.0)
                except TimeoutError:
                    message = b": keep-alive\n\n"
                if self.live.closing.is_set() or not self.sessions.alive(session.token):
                    break
                await response.write(message)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.live.close_stream(queue)
        return response

    async def audit(self, request: web.Request, _: Session) -> web.StreamResponse:
        try:
            limit = max(1, min(int(request.query.get("limit", "200")), 2000))
        except ValueError:
            return _error(400, "limit must be a number")
        device = request.query.get("device") or None
        user = request.query.get("user") or None
        rows = await self.host.store.audit(limit if device is None and user is None else 2000)
        if device:
            rows = [r for r in rows if r["device"] == device]
        if user:
            rows = [r for r in rows if r["source"] == f"console:{user}"]
        return _json({"rows": list(reversed(rows))[:limit]})

    async def panel_views(self, _: web.Request, __: Session) -> web.StreamResponse:
        out = []
        for panel in self.panels:
            for name, config in self.host.site.solutions.items():
                if config.type != panel.solution_type:
                    continue
                part = self.host.parts.get(PartKey.solution(name))
                if part is None or part.obj is None:
                    continue
                try:
                    widgets = [jsonable(w) for w in panel.view(part.obj, self.live)]
                    error = None
                except Exception as e:  # noqa: BLE001 - one broken panel must not blank the page
                    self.host.metrics.errors.labels(part="console", kind="panel").inc()
                    log.exception("console: panel %r of solution %s failed", panel.title, name)
                    widgets, error = [], f"{type(e).__name__}: {e}"
                out.append({"solution": name, "type": config.type, "title": panel.title, "widgets": widgets, "error": error})
        return _json({"panels": out})

    # -- acting --------------------------------------------------------------------------------

    async def write(self, request: web.Request, session: Session) -> web.StreamResponse:
        body = await self._body(request)
        device, point, value = body.get("device"), body.get("point"), body.get("value")
        if not isinstance(device, str) or not isinstance(point, str) or "value" not in body:
            return _error(400, "send {\"device\": ..., \"point\": ..., \"value\": ...}")
        if not isinstance(value, (int, float, bool, str)):
            return _error(400, f"value {value!r}: write a number, true/false or text")
        reason = str(body.get("reason") or "")[:200]
        result = await self.host.commands.execute(device, point, value, source=f"console:{session.user}",
                                                  reason=reason or "written from the site console")
        return _json({"device": result.device, "point": result.point, "value": result.value,
                      "status": result.status.value, "message": result.message, "readback": result.readback,
                      "ts": result.ts, "user": session.user})

    async def scan_device(self, request: web.Request, _: Session) -> web.StreamResponse:
        connector = request.match_info["connector"]
        scanner = self.scanners.get(connector)
        if scanner is None:
            return _error(404, f"no commissioning for connector {connector[:40]!r}: installed scanners are "
                               f"{', '.join(sorted(self.scanners)) or 'none'} (install the connector's distribution)")
        body = await self._body(request)
        try:
            return _json(await scanner.scan(body))
        except (commissioning.CommissioningError, ValueError) as e:
            return _error(400, str(e))

    async def save_profile(self, request: web.Request, session: Session) -> web.StreamResponse:
        body = await self._body(request)
        points = body.get("points")
        if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
            return _error(400, "points must be a list of objects")
        folder = (self.host.site.base_dir / self.config.profiles_dir).resolve()
        try:
            path = await asyncio.get_running_loop().run_in_executor(
                None, lambda: commissioning.save_profile(folder, str(body.get("name", "")), str(body.get("connector", "")),
                                                         points, f"{body.get('source', '')} by {session.user}",
                                                         scanners=self.scanners, overwrite=bool(body.get("overwrite"))))
        except (commissioning.CommissioningError, ValueError) as e:
            return _error(400, str(e))
        log.info("console: %s saved profile %s", session.user, path)
        return _json({"path": str(path), "hint": f"list it under 'profiles:' in the site file ({self.config.profiles_dir}/{path.name})"})


def tls_context(config: ConsoleConfig, base_dir: Path) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    try:
        return config.tls.server_context(base_dir)
    except ValueError as e:
        raise ValueError(f"console.tls: {e} (make them with `edgeplane site certs`)") from e


CONSOLE = web.AppKey("edgeplane_console", Console)
"""The mounted :class:`Console` in the HTTP app, for whoever needs its live data (a benchmark, a test)."""


def mount_console(app: web.Application, host: Host) -> ssl.SSLContext | None:
    """Add the console's routes to ``app`` (the host's HTTP app); returns the TLS context to serve with, if any.

    Must be called on the host's running event loop, before the app is started.
    """
    config = host.site.core.console
    if config is None or not config.enabled:
        return None
    console = Console(host, config)
    console.routes(app)
    context = tls_context(config, host.site.base_dir)
    console.live.start()

    async def on_shutdown(_: web.Application) -> None:
        await console.live.stop()

    app.on_shutdown.append(on_shutdown)
    app[CONSOLE] = console
    if not config.users:
        log.warning("console: no users in console.users: nobody can log in (add users with password hashes)")
    log.info("site console at /console/ on the HTTP port (%s, %d users)%s", "https" if context else "http",
             len(config.users), "" if is_loopback(host.site.core.http.host) else ", reachable beyond this machine")
    return context
