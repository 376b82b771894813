"""The solar plant's panels in the site console: forecast against measured, inverter performance, dispatch."""

from __future__ import annotations

import math
from typing import Any

from edgeplane.console import Band, Panel, PanelData, Plot, Series, Stats, Table, Widget

__all__ = ["PANELS"]


def _kw(watts: Any) -> float | None:
    if watts is None or (isinstance(watts, float) and not math.isfinite(watts)):
        return None
    return round(float(watts) / 1000.0, 3)


def forecast_view(solution: Any, data: PanelData) -> list[Widget]:
    """Measured 15-min plant power, what was forecast for each step one step ahead (P50 and its
    P10-P90), and the latest forecast out to 4 h with its band."""
    latest = solution.latest or {}
    # the last 6 h of plant time before the latest forecast, and the 4 h it looks ahead
    since = latest.get("issued_at", 0.0) - 6 * 3600
    measured = [(ts, _kw(w)) for ts, w in solution.day_history if ts >= since]
    past_p50: list[tuple[float, float | None]] = []
    band: list[tuple[float, float, float]] = []
    # the console keeps recent events: each forecast's first step, once the step has passed, is the
    # one-step-ahead forecast for a measured step
    for event in reversed(data.events(f"forecast/{solution.name}", limit=200)):
        first = (event["data"].get("horizons") or [{}])[0]
        if "p50_w" in first and first["ts"] >= since:
            past_p50.append((first["ts"], _kw(first["p50_w"])))
            band.append((first["ts"], _kw(first["p10_w"]) or 0.0, _kw(first["p90_w"]) or 0.0))
    ahead: list[tuple[float, float | None]] = []
    baseline: list[tuple[float, float | None]] = []
    for h in latest.get("horizons", []):
        baseline.append((h["ts"], _kw(h.get("smart_persistence_w"))))
        if "p50_w" in h:
            ahead.append((h["ts"], _kw(h["p50_w"])))
            if not band or h["ts"] > band[-1][0]:
                band.append((h["ts"], _kw(h["p10_w"]) or 0.0, _kw(h["p90_w"]) or 0.0))
    state = solution.state
    stats = Stats("Forecast", {
        "forecasts issued": state.get("issued", 0),
        "model": latest.get("model") or "baselines only (model needs 5 steps of history)",
        "next 15 min P50 kW": _kw((state.get("15min") or {}).get("p50_w")),
        "1 h P50 kW": _kw((state.get("1h") or {}).get("p50_w")),
        "capacity kW": _kw(solution.capacity_w),
    })
    plot = Plot("Plant power: forecast against measured", unit="kW", series=[
        Series("measured (15-min mean)", measured),
        Series("P50 one step ahead", past_p50),
        Series("latest forecast P50", ahead, dashed=True),
        Series("smart persistence", baseline, dashed=True),
    ], bands=[Band("P10-P90", sorted(band))])
    return [stats, plot]


def diagnosis_view(solution: Any, data: PanelData) -> list[Widget]:
    rows = []
    for device, s in solution.state.items():
        s = s or {}
        rows.append([device, _kw(s.get("power_w")), _kw(s.get("expected_w")), s.get("performance_index"),
                     s.get("state", "?"), ", ".join(s.get("active", [])) or "-"])
    alerts = [[_when(e["ts"]), e["kind"], e.get("severity") or "", e["data"].get("device", ""), e["data"].get("message", "")]
              for e in data.events(f"alerts/{solution.name}", limit=20)]
    return [Table("Inverters: measured against expected (pvlib)",
                  ["inverter", "power kW", "expected kW", "performance index", "state", "active alerts"], rows),
            Table("Recent alerts", ["time (UTC)", "kind", "severity", "inverter", "message"], alerts)]


def dispatch_view(solution: Any, data: PanelData) -> list[Widget]:
    st = solution.state
    items = {"plant output kW": _kw(st.get("plant_w")),
             "limit kW": _kw(st.get("limit_w")) if st.get("limit_w") is not None else "none",
             "expires in s": round(st["expires_in_s"]) if st.get("expires_in_s") is not None else "-",
             "power factor": st.get("power_factor") or "released"}
    rows = [[name, round(pct, 1)] for name, pct in (st.get("allocation_pct") or {}).items()]
    return [Stats("Dispatch", items), Table("Allocation", ["inverter", "WMaxLimPct %"], rows)]


def _when(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


PANELS = [
    Panel("solar.forecast", "Forecast against measured", forecast_view),
    Panel("solar.diagnosis", "Inverter performance and alerts", diagnosis_view),
    Panel("solar.dispatch", "Grid dispatch", dispatch_view),
]
