"""Degradation onset on run-to-failure trends (IMS-style files), and its evaluation.

The detector is built to be run on a test it has never seen. Nothing in it is fitted to a run's
failure: every threshold is either a stated prior or a statistic of that run's own healthy
baseline window, so there is nothing to tune per run.

Per channel the trend value (IMS files hold the mean absolute acceleration per snapshot) is taken
as log-level; per bearing:

1. **Data quality first** (:mod:`edgeplane_pdm.quality`): missing, stuck, saturated and near-zero
   samples raise a ``data_quality`` alert for that channel and are removed before anything else.
2. **Time, not sample counts.** Sampling may be irregular (the IMS tests sampled every 5 minutes
   at first, then every 10): the level is the median over a trailing ``smooth_hours`` of time,
   the baseline statistics are taken over hourly medians (so a densely sampled stretch does not
   outvote the rest), and an alert needs its condition to hold for ``sustain_hours`` of time.
3. **Break-in.** The first ``break_in_hours`` are never a baseline (new bearings settle), the
   baseline is the median of the next ``baseline_hours``, and only a *rise* counts (a level that
   falls after running in is not degradation).
4. **Common mode.** Bearings on one shaft share load, speed and each other's shaft-borne
   vibration; a bearing's own rise is its log-level rise over its baseline minus the median rise
   of the other bearings. When one bearing breaks up, its neighbours shake too; this keeps that
   from reading as their own degradation. (With a single bearing there is nothing to subtract.)
5. **Two tests, both required,** held for ``sustain_hours``: the rise is at least ``z`` robust
   standard deviations of the bearing's own baseline wander (a statistical test against its own
   noise), and at least ``min_rise`` (25%: ISO 20816-1 treats a 25% change in vibration magnitude as
   significant; a physical floor so a very steady baseline does not make noise look like a fault).
   The alert clears after ``sustain_hours`` below half of both.

A bearing's channels are averaged in log-level (a channel with bad data drops out; the other
carries on).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeplane_pdm.datasets import ImsRun, bearing_of
from edgeplane_pdm.quality import trend_faults

__all__ = ["OnsetRules", "BearingAlerts", "detect_onset", "evaluate_run", "match_bearings"]


@dataclass(frozen=True)
class OnsetRules:
    """The detector's constants: priors, not fitted values (see the module docstring)."""

    break_in_hours: float = 12.0
    baseline_hours: float = 24.0
    smooth_hours: float = 1.0
    sustain_hours: float = 2.0
    z: float = 6.0
    min_rise: float = math.log(1.25)
    #: the smallest baseline wander in log-level: 1%, a sensor's resolution over a healthy day
    scale_floor: float = 0.01

    @property
    def needs_hours(self) -> float:
        return self.break_in_hours + self.baseline_hours


@dataclass
class BearingAlerts:
    """What the detector said about one bearing."""

    bearing: str
    channels: list[str]
    alerts: list[dict[str, Any]] = field(default_factory=list)  # degradation: {raised_h, cleared_h, rise, z}
    data_quality: list[dict[str, Any]] = field(default_factory=list)  # {channel, reason, raised_h, cleared_h}
    baseline: dict[str, float] = field(default_factory=dict)


def _trailing_median(hours: np.ndarray, x: np.ndarray, width: float) -> np.ndarray:
    """Median of the finite values of ``x`` within (t - width, t] at every t (NaN when none)."""
    out = np.full(len(x), np.nan)
    lo = 0
    for i in range(len(x)):
        while hours[lo] <= hours[i] - width:
            lo += 1
        seg = x[lo:i + 1]
        seg = seg[np.isfinite(seg)]
        if len(seg):
            out[i] = np.median(seg)
    return out


def _hourly(hours: np.ndarray, x: np.ndarray, start: float, end: float) -> np.ndarray:
    """Medians of the finite values of ``x`` in each whole hour of [start, end)."""
    sel = (hours >= start) & (hours < end) & np.isfinite(x)
    if not sel.any():
        return np.array([])
    bins = np.floor(hours[sel] - start).astype(int)
    values = x[sel]
    return np.array([np.median(values[bins == b]) for b in np.unique(bins)])


def _episodes(flags: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) sample indices of each run of True in ``flags``."""
    out, i = [], 0
    while i < len(flags):
        if flags[i]:
            j = i
            while j + 1 < len(flags) and flags[j + 1]:
                j += 1
            out.append((i, j))
            i = j + 1
        else:
            i += 1
    return out


def detect_onset(run: ImsRun, rules: OnsetRules = OnsetRules()) -> list[BearingAlerts]:
    """Degradation and data-quality alerts per bearing of ``run`` (hours from the run's first row)."""
    hours = (run.ts - run.ts[0]) / 3600.0
    if hours[-1] < rules.needs_hours:
        raise ValueError(f"{run.path}: the run lasts {hours[-1]:.1f} h, shorter than the break-in ({rules.break_in_hours:g} h) "
                         f"plus the baseline window ({rules.baseline_hours:g} h): pass a longer run or a shorter --baseline-hours")
    base_lo, base_hi = rules.break_in_hours, rules.needs_hours
    names = list(dict.fromkeys(run.bearings))
    result = {b: BearingAlerts(b, [c for c, cb in zip(run.channels, run.bearings) if cb == b]) for b in names}

    # 1. data quality per channel; bad samples become NaN
    logs = np.full(run.values.shape, np.nan)
    for c, (channel, bearing) in enumerate(zip(run.channels, run.bearings)):
        v = run.values[:, c]
        first = trend_faults(v)
        clean = (first == "") & (hours >= base_lo) & (hours < base_hi)
        healthy = float(np.median(v[clean])) if clean.any() else None
        reasons = trend_faults(v, healthy)
        bad = reasons != ""
        for i, j in _episodes(bad):
            kinds = [r for r in reasons[i:j + 1] if r]
            reason = max(set(kinds), key=kinds.count)
            # one missing cell is a glitch; an episode is an alert when it lasts a few samples
            if j - i + 1 >= 3 or reason != "missing":
                result[bearing].data_quality.append({"channel": channel, "kind": "data_quality", "reason": reason,
                                                     "raised_h": round(float(hours[i]), 2),
                                                     "cleared_h": None if j == len(v) - 1 else round(float(hours[j + 1]), 2)})
        good = ~bad
        logs[good, c] = np.log(v[good])

    # 2-3. smoothed log-level rise over each channel's baseline; bearing = mean of its channels
    rise_by_bearing: dict[str, np.ndarray] = {}
    for b in names:
        cols = [c for c, cb in enumerate(run.bearings) if cb == b]
        rises = []
        for c in cols:
            level = _trailing_median(hours, logs[:, c], rules.smooth_hours)
            hourly = _hourly(hours, level, base_lo, base_hi)
            if len(hourly) < 3:
                continue  # a channel with no healthy baseline cannot say anything
            base = float(np.median(hourly))
            result[b].baseline[run.channels[c]] = round(math.exp(base), 6)
            rises.append(level - base)
        if rises:
            stacked = np.vstack(rises)
            count = np.isfinite(stacked).sum(axis=0)
            total = np.where(np.isfinite(stacked), stacked, 0.0).sum(axis=0)
            rise_by_bearing[b] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        else:
            rise_by_bearing[b] = np.full(len(hours), np.nan)

    # 4. common mode: subtract the median rise of the other bearings
    for b in names:
        others = [rise_by_bearing[o] for o in names if o != b]
        own = rise_by_bearing[b]
        if others:
            stacked = np.vstack(others)
            common = np.zeros(len(hours))
            for hour in np.flatnonzero(np.isfinite(stacked).any(axis=0)):
                column = stacked[:, hour]
                common[hour] = np.median(column[np.isfinite(column)])
            own = own - common
        hourly = _hourly(hours, own, base_lo, base_hi)
        if len(hourly) < 3:
            continue
        center = float(np.median(hourly))
        scale = max(1.4826 * float(np.median(np.abs(hourly - center))), rules.scale_floor)
        rise = own - center
        z = rise / scale
        result[b].baseline["wander"] = round(scale, 4)
        # 5. sustained, two-test alert with hysteresis; NaN (no usable channel) neither raises nor clears
        active, since, open_alert = False, None, None
        for i in range(len(hours)):
            if hours[i] < base_hi or not np.isfinite(rise[i]):
                continue
            if not active:
                hot = rise[i] >= rules.min_rise and z[i] >= rules.z
                since = (since if since is not None else hours[i]) if hot else None
                if hot and hours[i] - since >= rules.sustain_hours:
                    active = True
                    open_alert = {"kind": "degradation", "raised_h": round(float(hours[i]), 2), "cleared_h": None,
                                  "rise_pct": round(100 * (math.exp(rise[i]) - 1), 1), "z": round(float(z[i]), 1)}
                    result[b].alerts.append(open_alert)
                    since = None
            else:
                cool = rise[i] < rules.min_rise / 2 or z[i] < rules.z / 2
                since = (since if since is not None else hours[i]) if cool else None
                if cool and hours[i] - since >= rules.sustain_hours:
                    active = False
                    assert open_alert is not None
                    open_alert["cleared_h"] = round(float(hours[i]), 2)
                    since = None
    return [result[b] for b in names]


def match_bearings(run: ImsRun, failed: list[str]) -> list[str]:
    """The bearings named by ``failed`` ("Bearing 3" matches its channels "Bearing 3 C1", "Bearing 3 C2").

    Raises ValueError naming what the file has when a name matches nothing."""
    known = list(dict.fromkeys(run.bearings))
    out = []
    for name in failed:
        parsed = bearing_of(name.strip())
        bearing = parsed[0] if parsed else None
        if bearing not in known:
            raise ValueError(f"--failed {name.strip()!r} matches no bearing of {run.path}: it has {', '.join(known)}")
        if parsed and parsed[1]:
            raise ValueError(f"--failed {name.strip()!r}: name the bearing ({bearing}), not one of its channels; "
                             f"a bearing name matches all of its channels")
        out.append(bearing)
    return list(dict.fromkeys(out))


def evaluate_run(run: ImsRun, failed: list[str] | None, rules: OnsetRules = OnsetRules()) -> dict[str, Any]:
    """Lead time and false alerts of :func:`detect_onset` on ``run``.

    With ``failed`` (bearing names): per failed bearing, lead time = hours from its first sustained
    degradation alert raised in the second half of the run to the run's end (alerts on it in the first
    half are false); every degradation alert on another bearing is false, wherever it falls.
    Top level: ``lead_time_hours`` (the smallest over the failed bearings; None when one never
    alerted), ``false_alerts`` (the total). Without ``failed``: alerts per bearing, no lead time.
    Data-quality alerts are reported apart and are never counted as degradation alerts.
    """
    detected = detect_onset(run, rules)
    hours_end = float((run.ts[-1] - run.ts[0]) / 3600.0)
    failed_set = set(match_bearings(run, failed)) if failed else None
    rows = []
    for d in detected:
        row: dict[str, Any] = {"bearing": d.bearing, "channels": d.channels, "alerts": len(d.alerts),
                               "alert_times_h": [a["raised_h"] for a in d.alerts],
                               "data_quality_alerts": d.data_quality, "baseline": d.baseline}
        if failed_set is not None:
            is_failed = d.bearing in failed_set
            if is_failed:
                early = [a for a in d.alerts if a["raised_h"] < hours_end / 2]
                late = [a for a in d.alerts if a["raised_h"] >= hours_end / 2]
                first = late[0]["raised_h"] if late else None
                row.update(failed=True, false_alerts=len(early), first_alert_h=first,
                           lead_time_hours=None if first is None else round(hours_end - first, 2))
            else:
                row.update(failed=False, false_alerts=len(d.alerts),
                           first_alert_h=d.alerts[0]["raised_h"] if d.alerts else None, lead_time_hours=None)
        rows.append(row)
    out: dict[str, Any] = {"run_hours": round(hours_end, 2), "rules": asdict(rules), "bearings": rows,
                           "alerts": sum(r["alerts"] for r in rows),
                           "data_quality_alerts": sum(len(r["data_quality_alerts"]) for r in rows)}
    if failed_set is None:
        out.update(lead_time_hours=None, false_alerts=None, failed=[])
    else:
        leads = [r["lead_time_hours"] for r in rows if r["failed"]]
        out.update(failed=sorted(failed_set), false_alerts=sum(r["false_alerts"] for r in rows),
                   lead_time_hours=None if any(lt is None for lt in leads) else min(leads))
    return out
