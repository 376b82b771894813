"""Time bases: what a file's timestamps mean, and the one conversion to UTC at the data layer's edge.

A timestamp in a data file is wall-clock digits in some zone, and it labels either an instant
(a sample, a satellite scan) or an interval of averaged values (its start or its end). Every input
declares both, and :func:`to_known_at` turns the digits into UTC *known-at* times: an instant is
known at its own time, an interval average at the end of its interval. Everything above this
module works on UTC known-at times, so "what is known at issue time t" is ``known_at <= t``.

Zones: an IANA name (``America/Denver``: wall clock with daylight saving) or a fixed offset
(``UTC``, ``UTC-07:00``, ``Etc/GMT+7``). A declared zone re-reads the wall-clock digits in that
zone even when the file carries an offset: PVDAQ files say ``UTC-07:00`` on a clock that keeps
daylight saving. Without a declaration, an offset in the file is taken as the declaration; naive
timestamps without one are an error, never a guess.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import timedelta, timezone, tzinfo
from typing import Literal

import pandas as pd

from edgeplane.errors import EdgeplaneError

Label = Literal["instant", "start", "end"]
_OFFSET = re.compile(r"^UTC([+-])(\d{1,2})(?::?(\d{2}))?$")


class TimeBaseError(EdgeplaneError, ValueError):
    """A time base that cannot be used; the message names the file, column and fix."""


@dataclass(frozen=True)
class TimeBase:
    """How a column of timestamps is to be read.

    ``zone``: None means "the offset the file carries". ``label``: what a timestamp marks.
    ``interval``: the length of the averaged interval (for ``start``/``end``); None infers it
    from the median spacing of the timestamps.
    """

    zone: str | None = None
    label: Label = "instant"
    interval: pd.Timedelta | None = None

    @classmethod
    def parse(cls, spec: str | None, *, what: str = "time base") -> TimeBase:
        """``ZONE[,LABEL[,INTERVAL]]``, e.g. ``America/Denver,end,15min`` or ``UTC-07:00,instant``.

        An empty ZONE (``,end``) keeps the file's own offset.
        """
        if not spec:
            return cls()
        parts = [p.strip() for p in spec.split(",")]
        zone = parts[0] or None
        label = parts[1] if len(parts) > 1 and parts[1] else "instant"
        if label not in ("instant", "start", "end"):
            raise TimeBaseError(f"{what} {spec!r}: the label must be instant, start or end (what a timestamp marks)")
        interval = None
        if len(parts) > 2 and parts[2]:
            try:
                interval = pd.Timedelta(parts[2])
            except ValueError:
                raise TimeBaseError(f"{what} {spec!r}: {parts[2]!r} is not a duration; write e.g. 15min") from None
        if zone is not None:
            zone_info(zone, what=f"{what} {spec!r}")
        return cls(zone, label, interval)  # type: ignore[arg-type]  # checked above

    def describe(self) -> str:
        zone = self.zone or "the file's offset"
        if self.label == "instant":
            return f"{zone}, instants"
        return f"{zone}, interval {self.label} labels" + (f" ({self.interval})" if self.interval is not None else "")


def zone_info(zone: str, *, what: str = "zone") -> tzinfo:
    """The tzinfo of an IANA name or a fixed ``UTC±HH:MM`` offset; a clear error for anything else."""
    if zone.upper() in ("UTC", "Z", "GMT"):
        return timezone.utc
    m = _OFFSET.match(zone.upper().replace(" ", ""))
    if m:
        sign = -1 if m.group(1) == "-" else 1
        return timezone(sign * timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0)))
    try:
        return zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise TimeBaseError(f"{what}: unknown time zone {zone!r}; use an IANA name such as America/Denver (wall clock "
                            "with daylight saving) or a fixed offset such as UTC-07:00") from None


def to_known_at(raw: pd.Series | pd.DatetimeIndex, base: TimeBase, *, where: str) -> tuple[pd.DatetimeIndex, pd.Timedelta]:
    """UTC known-at times for parsed timestamps ``raw`` read under ``base``, and the averaging interval (0 for instants).

    ``where`` names the file and column for errors. Wall-clock times that do not exist (the hour
    skipped in spring) or are ambiguous without a second copy (the hour repeated in autumn) become
    NaT; the caller drops and counts them.
    """
    index = pd.DatetimeIndex(raw)
    if base.zone is not None:
        wall = index.tz_localize(None) if index.tz is not None else index
        tz = zone_info(base.zone, what=where)
        try:
            utc = wall.tz_localize(tz, ambiguous="infer", nonexistent="NaT")
        except (ValueError, TypeError):  # a repeated hour with one copy cannot be inferred: leave it out
            utc = wall.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
        utc = utc.tz_convert("UTC")
    elif index.tz is not None:
        utc = index.tz_convert("UTC")
    else:
        raise TimeBaseError(f"{where}: timestamps carry no zone and none is declared; declare it, e.g. "
                            "--power-time America/Denver,end (wall clock with daylight saving) or UTC-07:00,instant")
    interval = pd.Timedelta(0)
    if base.label != "instant":
        if base.interval is not None:
            interval = base.interval
        else:
            steps = utc.dropna().sort_values().to_series().diff().dropna()
            if steps.empty:
                raise TimeBaseError(f"{where}: one timestamp cannot give an interval length; declare it, e.g. ,end,15min")
            interval = steps.median()
        if base.label == "start":
            utc = utc + interval
    return pd.DatetimeIndex(utc), interval
