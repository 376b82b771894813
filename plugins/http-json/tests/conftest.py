"""A JSON API on loopback (aiohttp) that behaves like data loggers and weather services do:
bearer/basic/API-key auth, page/cursor/Link pagination, 429 with Retry-After."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

T0 = 1_700_000_000.0
TOKEN, API_KEY, USER, PASSWORD = "s3cret-token", "k-123", "edge", "pa55"


def record(i: int) -> dict[str, Any]:
    ts = dt.datetime.fromtimestamp(T0 + 60 * i, dt.timezone.utc).isoformat().replace("+00:00", "Z")
    return {"ts": ts, "poa": 100.0 + i, "sensors": {"module_temp": 20.0 + i}, "status": "ok" if i % 2 == 0 else "warn"}


@dataclass
class FakeApi:
    """The server's state; tests change ``records`` and read ``requests``."""

    records: list[dict[str, Any]] = field(default_factory=lambda: [record(i) for i in range(7)])
    requests: list[dict[str, Any]] = field(default_factory=list)
    clock: Any = None  # a test's simulated clock: each request notes its time
    throttle_first: int = 0  # answer this many requests with 429 first
    retry_after: str = "30"
    url: str = ""

    def note(self, request: web.Request) -> None:
        self.requests.append({"path": request.path, "query": dict(request.query), "headers": dict(request.headers),
                              "t": self.clock.now() if self.clock is not None else None})

    def throttled(self) -> web.Response | None:
        if self.throttle_first > 0:
            self.throttle_first -= 1
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": self.retry_after})
        return None


def build_app(api: FakeApi) -> web.Application:
    async def logger(request: web.Request) -> web.Response:
        api.note(request)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        if (answer := api.throttled()) is not None:
            return answer
        page, size = int(request.query.get("page", 1)), int(request.query.get("per_page", 100))
        chunk = api.records[(page - 1) * size: page * size]
        return web.json_response({"data": chunk, "meta": {"page": page}})

    async def cursor(request: web.Request) -> web.Response:
        api.note(request)
        if request.headers.get("X-API-Key") != API_KEY:
            return web.json_response({"error": "forbidden"}, status=403)
        start = int(request.query.get("cursor", "0"))
        chunk = api.records[start: start + 3]
        more = start + 3 < len(api.records)
        return web.json_response({"items": chunk, "next_cursor": str(start + 3) if more else None})

    async def linked(request: web.Request) -> web.Response:
        api.note(request)
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "unauthorized"}, status=401)
        offset = int(request.query.get("offset", "0"))
        headers = {}
        if offset + 2 < len(api.records):
            headers["Link"] = f'</linked?offset={offset + 2}>; rel="next"'
        return web.json_response(api.records[offset: offset + 2], headers=headers)

    async def weather(request: web.Request) -> web.Response:
        api.note(request)
        if request.query.get("appid") != API_KEY:
            return web.json_response({"cod": 401, "message": "Invalid API key"}, status=401)
        return web.json_response({"dt": int(T0) + 600, "name": "Golden", "main": {"temp": 21.5, "humidity": 40},
                                  "weather": [{"main": "Clear"}]})

    app = web.Application()
    app.router.add_get("/logger/readings", logger)
    app.router.add_get("/cursor", cursor)
    app.router.add_get("/linked", linked)
    app.router.add_get("/weather", weather)
    return app


@pytest.fixture
async def api():
    state = FakeApi()
    runner = web.AppRunner(build_app(state))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


async def pump(clock, predicate, timeout: float = 20.0) -> None:
    """Move a simulated clock from sleeper to sleeper until ``predicate()``; fail after ``timeout`` real seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s (simulated time {clock.now()})")
        await asyncio.sleep(0.01)
        if clock.next_deadline is not None:
            clock.set_time(clock.next_deadline)
