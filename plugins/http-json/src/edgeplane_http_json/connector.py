"""The ``http_json`` connector: polls a JSON API and publishes each point's new readings."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import aiohttp
import numpy as np

from edgeplane import Connector, Context, HealthState, Quality, RateLimitedLog
from edgeplane.components import PartKey
from edgeplane.ratelimit import TokenBucket

from edgeplane_http_json.client import AuthRefused, HttpJsonError, PageFetcher
from edgeplane_http_json.config import HttpJsonConfig, HttpJsonPoint
from edgeplane_http_json.jsonpath import MISSING, extract

__all__ = ["HttpJsonConnector", "parse_time"]


def parse_time(value: Any, fmt: str) -> float:
    """Seconds since the epoch from an ISO 8601 text or an epoch number (s or ms); ValueError if neither."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time")
    if isinstance(value, (int, float)) and fmt in ("auto", "epoch_s", "epoch_ms"):
        seconds = float(value) / (1000.0 if fmt == "epoch_ms" or (fmt == "auto" and value > 1e11) else 1.0)
        if not math.isfinite(seconds):
            raise ValueError(f"{value!r} is not a time")
        return seconds
    if isinstance(value, str) and fmt in ("auto", "iso"):
        parsed = dt.datetime.fromisoformat(value.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)  # APIs that omit the zone mostly mean UTC
        return parsed.timestamp()
    if isinstance(value, str) and fmt in ("epoch_s", "epoch_ms"):
        return parse_time(float(value), fmt)
    raise ValueError(f"{value!r} is not a time in format {fmt!r}")


class HttpJsonConnector(Connector[HttpJsonConfig, HttpJsonPoint]):
    """Polls one HTTP/JSON endpoint (all its pages), publishing readings newer than the last seen.

    Records with a time field are deduplicated per point by time, so an API that returns its last
    N records every poll publishes each reading once. Without a time field, each poll is one
    reading at the host's clock. Read-only.
    """

    def __init__(self, name: str, config: HttpJsonConfig, context: Context):
        super().__init__(name, config, context)
        self.session: aiohttp.ClientSession | None = None
        self.last_ts: dict[str, float] = {}
        self.polls = 0
        self.rate_log = RateLimitedLog(self.log)
        metrics = context.metrics
        self._responses = metrics.counter("edgeplane_http_json_responses_total", "HTTP responses by status", ["device", "status"])
        self._readings = metrics.counter("edgeplane_http_json_readings_total", "Readings published", ["device"]).labels(device=name)
        self._part = context.part or PartKey.device(name)  # the metric label of this device
        self.limiter = TokenBucket(config.rate_limit, clock=context.clock) if config.rate_limit else None

    async def start(self) -> None:
        # a TLS context reads its files: not on the event loop; without tls: section aiohttp's default
        tls = await self.context.run_blocking(self.config.tls.client_context, self.context.site_dir) if self.config.tls else True
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls))
        self.fetcher = PageFetcher(self.name, self.config, self.session, self.context.clock, self.limiter,
                                   lambda status: self._responses.labels(self.name, str(status)).inc())

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def run(self) -> None:
        while True:
            try:
                pages = await self.fetcher.fetch()
            except HttpJsonError as e:
                self.context.metrics.errors.labels(part=self._part, kind=f"http_json_{e.reason}").inc()
                detail = f"auth refused: {e}" if isinstance(e, AuthRefused) else f"link down: {e}"
                self.health.set(HealthState.DEGRADED, detail)
                now = self.context.clock.now()
                for point in self.config.points:
                    await self.publish_bad(point, now)
                raise  # the host restarts this device after a backoff
            self.polls += 1
            await self._publish(pages)
            self.health.set(HealthState.OK)
            await self.context.clock.sleep(self.config.poll or 60.0)

    def _drop(self, reason: str, message: str, *args: Any) -> None:
        self.context.metrics.dropped.labels(part=self._part, reason=reason).inc()
        self.rate_log.warning(reason, message, *args)

    def _records(self, pages: list[Any]) -> list[Any]:
        records: list[Any] = []
        for page in pages:
            found = extract(page, self.config.records)
            if found is MISSING:
                self._drop("no_records", "device %r: a page has no %r: check devices.%s.records", self.name,
                           self.config.records, self.name)
            elif isinstance(found, list):
                records.extend(found)
            else:
                records.append(found)
        return records

    async def _publish(self, pages: list[Any]) -> None:
        now = self.context.clock.now()
        records = self._records(pages)
        times: list[float] = []
        for record in records:
            if self.config.timestamp is None:
                times.append(now)
                continue
            try:
                times.append(parse_time(extract(record, self.config.timestamp), self.config.timestamp_format))
            except (ValueError, TypeError) as e:
                times.append(math.nan)
                self._drop("bad_timestamp", "device %r: record time %r unreadable (%s): check devices.%s.timestamp",
                           self.name, self.config.timestamp, e, self.name)
        for point, spec in self.config.points.items():
            ts_list, values = [], []
            for record, ts in zip(records, times, strict=True):
                if math.isnan(ts) or (self.config.timestamp is not None and ts <= self.last_ts.get(point, -math.inf)):
                    continue
                value = self._value(point, spec, extract(record, spec.field))
                if value is not None:
                    ts_list.append(ts)
                    values.append(value)
            if not ts_list:
                continue
            order = np.argsort(np.asarray(ts_list), kind="stable")
            ts_array = np.asarray(ts_list)[order]
            if spec.type == "string":
                value_array: Any = np.asarray([values[i] for i in order], dtype=object)
            else:
                value_array = np.asarray(values, dtype=float)[order]
            await self.publish(point, ts_array, value_array, Quality.GOOD)
            self._readings.inc(len(ts_list))
            self.last_ts[point] = float(ts_array[-1])

    def _value(self, point: str, spec: HttpJsonPoint, raw: Any) -> Any:
        if raw is MISSING or raw is None:
            self._drop("missing_field", "device %r point %r: no %r in a record: check the point's field", self.name, point, spec.field)
            return None
        if spec.type == "string":
            return str(raw)
        try:
            number = float(raw)
        except (TypeError, ValueError):
            self._drop("not_a_number", "device %r point %r: %r is not a number: set type: string or fix field",
                       self.name, point, raw)
            return None
        return number * spec.scale + spec.offset
