"""The http_json connector against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from edgeplane import Batch, HealthState, SiteError
from edgeplane.testing import wait_for

from edgeplane_http_json import plugin
from edgeplane_http_json.client import retry_after_seconds
from edgeplane_http_json.connector import parse_time

from .conftest import API_KEY, PASSWORD, T0, TOKEN, USER, pump, record


def site(**device):
    return {"site": {"id": "t"}, "devices": {"logger1": {"connector": "http_json", **device}}}


def logger_device(api, **extra):
    device = {
        "url": f"{api.url}/logger/readings",
        "auth": {"type": "bearer", "token": TOKEN},
        "pagination": {"type": "page", "param": "page", "size_param": "per_page", "size": 3},
        "records": "data",
        "timestamp": "ts",
        "poll": 3600,
        "points": {"poa": {"field": "poa", "unit": "W/m2"}, "module_temp": {"field": "sensors.module_temp", "unit": "degC"}},
    }
    device.update(extra)
    return device


class Collector:
    """Every reading of a topic, from a subscription, in order."""

    def __init__(self, sub):
        self.sub = sub
        self.ts: list[float] = []
        self.values: list = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self):
        while True:
            message = await self.sub.get()
            if isinstance(message, Batch):
                self.ts += list(np.asarray(message.ts, dtype=float))
                self.values += list(message.values)

    def close(self):
        self.task.cancel()


async def test_page_pagination_and_bearer_auth_publish_every_record_once_with_its_time(edgeplane_host, api, fake_clock):
    fake_clock.set_time(T0 + 3600)
    async with edgeplane_host(site(**logger_device(api, poll=60)), plugins=[plugin], clock=fake_clock) as host:
        poa = Collector(host.bus.subscribe("logger1/poa"))
        await pump(fake_clock, lambda: len(poa.values) >= 7)
        assert poa.values == [100.0 + i for i in range(7)]
        assert poa.ts == [T0 + 60 * i for i in range(7)]  # the records' own times, not the poll's
        pages = [r["query"]["page"] for r in api.requests]
        assert pages[:3] == ["1", "2", "3"] and all(r["query"]["per_page"] == "3" for r in api.requests)
        # the next poll sees the same 7 records and 2 new ones: only the new ones are published
        api.records += [record(7), record(8)]
        await pump(fake_clock, lambda: len(poa.values) >= 9)
        await asyncio.sleep(0.1)
        assert poa.values == [100.0 + i for i in range(9)]
        temps = host.bus.latest("logger1/module_temp")
        assert temps[1] == 28.0
        poa.close()


async def test_cursor_pagination_with_an_api_key_header(edgeplane_host, api):
    device = {"url": f"{api.url}/cursor", "auth": {"type": "api_key", "name": "X-API-Key", "value": API_KEY},
              "pagination": {"type": "cursor", "param": "cursor", "cursor_field": "next_cursor"},
              "records": "items", "timestamp": "ts", "poll": 3600,
              "points": {"status": {"field": "status", "type": "string"}, "poa": {"field": "poa"}}}
    async with edgeplane_host(site(**device), plugins=[plugin]) as host:
        status = Collector(host.bus.subscribe("logger1/status"))
        await wait_for(lambda: len(status.values) >= 7, timeout=10)
        assert status.values == ["ok", "warn"] * 3 + ["ok"]
        assert [r["query"].get("cursor") for r in api.requests] == [None, "3", "6"]
        status.close()


async def test_link_header_pagination_with_basic_auth(edgeplane_host, api):
    device = {"url": f"{api.url}/linked", "auth": {"type": "basic", "username": USER, "password": PASSWORD},
              "pagination": {"type": "link"}, "timestamp": "ts", "poll": 3600,
              "points": {"poa": {"field": "poa", "scale": 2.0, "offset": 1.0}}}
    async with edgeplane_host(site(**device), plugins=[plugin]) as host:
        poa = Collector(host.bus.subscribe("logger1/poa"))
        await wait_for(lambda: len(poa.values) >= 7, timeout=10)
        assert poa.values == [(100.0 + i) * 2 + 1 for i in range(7)]  # scale and offset applied
        assert len(api.requests) == 4
        poa.close()


async def test_weather_service_with_an_api_key_in_the_query(edgeplane_host, api):
    device = {"url": f"{api.url}/weather", "params": {"q": "Golden,US", "units": "metric"},
              "auth": {"type": "api_key", "name": "appid", "value": API_KEY, "location": "query"},
              "timestamp": "dt", "poll": 3600,
              "points": {"temp": {"field": "main.temp", "unit": "degC"}, "sky": {"field": "weather.0.main", "type": "string"}}}
    async with edgeplane_host(site(**device), plugins=[plugin]) as host:
        await wait_for(lambda: host.bus.latest("logger1/sky") is not None, timeout=10)
        ts, temp = host.bus.latest("logger1/temp")[:2]
        assert temp == 21.5 and ts == T0 + 600
        assert host.bus.latest("logger1/sky")[1] == "Clear"
        assert api.requests[0]["query"] == {"q": "Golden,US", "units": "metric", "appid": API_KEY}


async def test_refused_credentials_degrade_the_device_and_are_counted(edgeplane_host, api):
    device = logger_device(api, auth={"type": "bearer", "token": "wrong"})
    async with edgeplane_host(site(**device), plugins=[plugin]) as host:
        dev = host.device("logger1")
        await wait_for(lambda: dev.health.state is HealthState.DEGRADED or host.health()["device:logger1"]["restarts"] > 0,
                       timeout=10)
        await wait_for(lambda: host.metrics.value("edgeplane_errors_total", part="device:logger1",
                                                   kind="http_json_http_401") >= 1, timeout=10)
        assert host.metrics.value("edgeplane_http_json_responses_total", device="logger1", status="401") >= 1
        assert "wrong" not in str(host.health())  # the token never shows


async def test_rate_limit_spaces_requests_in_the_hosts_time(edgeplane_host, api, fake_clock):
    api.clock = fake_clock
    device = logger_device(api, rate_limit="30/min", pagination={"type": "page", "size_param": "per_page", "size": 2})
    async with edgeplane_host(site(**device), plugins=[plugin], clock=fake_clock) as host:
        await pump(fake_clock, lambda: host.bus.latest("logger1/poa") is not None and len(api.requests) >= 4)
        times = [r["t"] for r in api.requests[:4]]
        gaps = np.diff(times)
        assert (gaps >= 2.0 - 1e-9).all(), times  # 30/min: one request per 2 s of the host's clock
        assert host.bus.latest("logger1/poa")[1] == 106.0


async def test_429_retry_after_is_honoured(edgeplane_host, api, fake_clock):
    api.clock = fake_clock
    api.throttle_first = 1
    async with edgeplane_host(site(**logger_device(api)), plugins=[plugin], clock=fake_clock) as host:
        await pump(fake_clock, lambda: host.bus.latest("logger1/poa") is not None)
        assert api.requests[1]["t"] - api.requests[0]["t"] >= 30.0
        assert host.metrics.value("edgeplane_http_json_responses_total", device="logger1", status="429") == 1


async def test_missing_fields_and_bad_values_are_dropped_and_counted(edgeplane_host, api):
    api.records = [record(0), {**record(1), "poa": "n/a"}, {k: v for k, v in record(2).items() if k != "poa"}]
    async with edgeplane_host(site(**logger_device(api)), plugins=[plugin]) as host:
        await wait_for(lambda: host.bus.latest("logger1/module_temp") is not None, timeout=10)
        await wait_for(lambda: host.metrics.value("edgeplane_dropped_total", part="device:logger1", reason="missing_field") == 1)
        assert host.metrics.value("edgeplane_dropped_total", part="device:logger1", reason="not_a_number") == 1
        assert host.bus.latest("logger1/poa")[1] == 100.0
        assert host.bus.latest("logger1/module_temp")[1] == 22.0


@pytest.mark.parametrize(("change", "message"), [
    ({"url": "ftp://x/y"}, "is not an HTTP URL"),
    ({"auth": {"type": "oauth"}}, "auth"),
    ({"points": {"p": {"field": "a", "access": "rw"}}}, "read-only"),
    ({"pagination": {"type": "page", "sise": 3}}, "unknown key 'sise'"),
])
def test_config_errors_name_the_key_and_the_fix(edgeplane_site, change, message):
    device = {"url": "http://127.0.0.1:1/x", "points": {"p": {"field": "a"}}, **change}
    with pytest.raises(SiteError) as error:
        edgeplane_site(site(**device), plugins=[plugin])
    assert message in str(error.value) and "devices.logger1" in str(error.value)


def test_time_and_retry_after_parsing():
    assert parse_time("2023-11-14T22:13:20Z", "auto") == T0
    assert parse_time("2023-11-14T22:13:20", "auto") == T0  # no zone: UTC
    assert parse_time(T0 * 1000, "auto") == T0 and parse_time(T0, "epoch_s") == T0
    with pytest.raises(ValueError):
        parse_time("yesterday", "iso")
    assert retry_after_seconds("12", 0) == 12.0
    assert retry_after_seconds("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0
    assert retry_after_seconds("soon", 0) is None


async def test_the_tutorials_demo_logger_is_read_end_to_end(edgeplane_host):
    """The README's tutorial site, against the demo logger it starts."""
    from aiohttp import web

    from edgeplane_http_json.demo import make_app

    runner = web.AppRunner(make_app("demo-token", step=60.0, limit=60))
    await runner.setup()
    server = web.TCPSite(runner, "127.0.0.1", 0)
    await server.start()
    port = runner.addresses[0][1]
    device = {"url": f"http://127.0.0.1:{port}/api/v1/readings", "auth": {"type": "bearer", "token": "demo-token"},
              "pagination": {"type": "page", "size_param": "per_page", "size": 25}, "records": "data",
              "timestamp": "ts", "rate_limit": "30/min", "poll": 60,
              "points": {"poa": {"field": "poa", "unit": "W/m2"}, "module_temp": {"field": "module_temp", "unit": "degC"}}}
    try:
        async with edgeplane_host(site(**device), plugins=[plugin]) as host:
            poa = Collector(host.bus.subscribe("logger1/poa"))
            # 60 records in pages of 25: three requests, two of them waiting for the rate limit (2 s each)
            await wait_for(lambda: len(poa.values) >= 60, timeout=30)
            assert len(poa.values) == 60 and poa.ts == sorted(poa.ts)
            poa.close()
    finally:
        await runner.cleanup()
