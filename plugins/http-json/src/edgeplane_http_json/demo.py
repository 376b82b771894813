"""A data logger's JSON API on loopback, for the tutorial: ``python -m edgeplane_http_json.demo``.

``GET /api/v1/readings?page=N&per_page=M`` with ``Authorization: Bearer <token>`` returns
``{"data": [{"ts": ISO 8601, "poa": W/m2, "module_temp": degC}, ...]}``: one record per
``--step`` seconds for the last hour, a new one every ``--step`` seconds; at most ``--limit``
requests per minute (more get 429 with Retry-After).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import time

from aiohttp import web


def make_app(token: str, step: float, limit: int) -> web.Application:
    recent: list[float] = []

    def reading(t: float) -> dict:
        hour = (t / 3600) % 24
        sun = max(0.0, math.sin(math.pi * (hour - 6) / 12))
        return {"ts": dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(), "poa": round(1000 * sun, 1),
                "module_temp": round(15 + 30 * sun, 2)}

    async def readings(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        now = time.time()
        recent[:] = [t for t in recent if now - t < 60] + [now]
        if len(recent) > limit:
            return web.json_response({"error": "rate limited"}, status=429, headers={"Retry-After": "10"})
        page, size = int(request.query.get("page", 1)), min(int(request.query.get("per_page", 100)), 500)
        last = math.floor(now / step) * step
        times = [last - step * i for i in range(int(3600 / step))][::-1]
        chunk = times[(page - 1) * size: page * size]
        return web.json_response({"data": [reading(t) for t in chunk], "meta": {"page": page, "total": len(times)}})

    app = web.Application()
    app.router.add_get("/api/v1/readings", readings)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8780)
    parser.add_argument("--token", default="demo-token")
    parser.add_argument("--step", type=float, default=60.0, help="seconds between records")
    parser.add_argument("--limit", type=int, default=60, help="requests per minute before 429")
    args = parser.parse_args(argv)
    web.run_app(make_app(args.token, args.step, args.limit), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
