"""The replay connector: plays a recorded CSV series back as if a device were measuring it.

One column holds the time (epoch seconds or ISO 8601), the others the points' values. Rows are
published at the recorded pace scaled by ``speed`` (``speed: 0`` plays as fast as the bus takes
them), with timestamps moved to the present (``rebase``) or kept. When the host runs on a
simulated clock, the replay drives it: the clock is set to each row's time, which makes
evaluations on recorded data deterministic and fast.
"""

from __future__ import annotations

import asyncio
import csv
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from edgeplane.bus import Quality
from edgeplane.clock import SimulatedClock
from edgeplane.components import Connector
from edgeplane.config import DeviceConfig, PointSpec


class ReplayPoint(PointSpec):
    column: str | None = Field(None, description="CSV column; defaults to the point's name")


class ReplayConfig(DeviceConfig):
    file: str = Field(description="CSV file, relative to the site file")
    time_column: str = "ts"
    speed: float = Field(1.0, ge=0, description="playback speed; 60 plays a minute per second, 0 as fast as possible")
    loop: bool = Field(True, description="start again at the end, time moving on")
    rebase: bool = Field(True, description="shift timestamps so that the first row is 'now'")
    rows_per_batch: int = Field(1, ge=1, le=100_000)
    points: dict[str, ReplayPoint] = Field(default_factory=dict)  # type: ignore[assignment]  # each connector narrows its points' model

    @model_validator(mode="after")
    def _has_points(self) -> ReplayConfig:
        if not self.points:
            raise ValueError("a replay device needs at least one point (a CSV column): add 'points:' or a profile")
        return self


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()


class Recording:
    """A CSV series in columns: ``ts`` (float64) and one float64 array per column."""

    def __init__(self, path: Path, time_column: str, columns: list[str]):
        try:
            with path.open(newline="") as f:
                reader = csv.DictReader(row for row in f if not row.startswith("#"))
                header = reader.fieldnames or []
                missing = [c for c in [time_column, *columns] if c not in header]
                if missing:
                    raise ValueError(f"{path}: no column {', '.join(map(repr, missing))}; the file has {header}")
                rows = list(reader)
        except OSError as e:
            raise ValueError(f"cannot read replay file {str(path)!r}: {e.strerror}") from None
        if len(rows) < 2:
            raise ValueError(f"{path}: a replay needs at least two rows, found {len(rows)}")
        self.ts = np.array([_parse_time(r[time_column]) for r in rows])
        if np.any(np.diff(self.ts) <= 0):
            raise ValueError(f"{path}: times in {time_column!r} must increase row by row")
        self.columns = {c: np.array([_to_float(r[c]) for r in rows]) for c in columns}
        self.period = float(np.median(np.diff(self.ts)))

    @property
    def span(self) -> float:
        """Time from the first row to one period after the last: one loop's length."""
        return float(self.ts[-1] - self.ts[0]) + self.period


def _to_float(text: str | None) -> float:
    if text is None or text.strip() == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


class ReplayConnector(Connector[ReplayConfig, ReplayPoint]):
    """Publishes a recorded series; see the module docstring."""

    async def start(self) -> None:
        columns = [spec.column or name for name, spec in self.config.points.items()]
        path = (self.context.site_dir / self.config.file).expanduser()
        self.recording = await self.context.run_blocking(Recording, path, self.config.time_column, sorted(set(columns)))

    async def run(self) -> None:
        rec, config, clock = self.recording, self.config, self.context.clock
        drive = isinstance(clock, SimulatedClock)
        paced = config.speed > 0 and not drive
        t0, n, step = clock.now(), len(rec.ts), config.rows_per_batch
        loop_offset = 0.0  # recorded time added by each completed loop
        while True:
            for first in range(0, n, step):
                last = min(first + step, n)
                elapsed = rec.ts[first:last] - rec.ts[0] + loop_offset  # recorded seconds since the start
                if paced:
                    # row k is due at t0 + elapsed_k / speed of wall time
                    wait = t0 + float(elapsed[0]) / config.speed - clock.now()
                    if wait > 0:
                        await clock.sleep(wait)
                    ts = t0 + elapsed / config.speed if config.rebase else rec.ts[first:last] + loop_offset
                else:
                    ts = (t0 + elapsed) if (config.rebase or drive) else rec.ts[first:last] + loop_offset
                    if isinstance(clock, SimulatedClock):  # drive: this replay moves simulated time
                        clock.set_time(max(clock.now(), float(ts[-1])))
                for name, spec in config.points.items():
                    values = rec.columns[spec.column or name][first:last] * spec.scale + spec.offset
                    quality = np.where(np.isnan(values), Quality.BAD, Quality.GOOD).astype(np.uint8)
                    await self.publish(name, ts, values, quality)
                if not paced:
                    await asyncio.sleep(0)  # let subscribers run between batches
            if not config.loop:
                return
            loop_offset += rec.span
