"""The factory line's panel in the site console: vibration features, health, alerts and RUL."""

from __future__ import annotations

import datetime as dt
from typing import Any

from edgeplane.console import Panel, PanelData, Plot, Series, Table, Widget
from edgeplane_pdm.features import FAULT_NAMES

__all__ = ["PANELS"]


def _value(data: PanelData, topic: str) -> float | None:
    found = data.latest(topic)
    return None if found is None or not isinstance(found[1], (int, float)) else round(float(found[1]), 3)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def pdm_view(solution: Any, data: PanelData) -> list[Widget]:
    widgets: list[Widget] = []
    status = solution.status()
    if status:
        rows = []
        for machine, s in status.items():
            envelope = {tone: _value(data, f"pdm/{machine}/env_{tone}_db") for tone in FAULT_NAMES}
            found = {tone: db for tone, db in envelope.items() if db is not None}
            tone = max(found, key=lambda k: found[k]) if found else None
            strongest = f"{tone.upper()} {found[tone]:.1f} dB" if tone else "-"
            rows.append([machine, s["health"], s["score"], s["alert"] or "none", s["fault_class"] or "-",
                         *(_value(data, f"pdm/{machine}/{f}") for f in ("rms", "kurtosis", "crest")), strongest,
                         s["windows"], "yes" if s["commissioned"] else "commissioning"])
        widgets.append(Table("Machines: vibration features and health",
                             ["machine", "health", "anomaly score", "alert", "classifier", "RMS", "kurtosis", "crest",
                              "strongest bearing tone", "windows", "baseline"], rows))
        widgets.append(Plot("Anomaly score", series=[Series(m, data.history(f"pdm/{m}/anomaly_score")) for m in status],
                            unit="score"))
        widgets.append(Plot("Vibration RMS", series=[Series(m, data.history(f"pdm/{m}/rms")) for m in status], unit="g"))
    if solution.rul_assets:
        rows = [[asset, None if s.rul is None else round(s.rul, 1), s.cycles, s.alert.severity or "none"]
                for asset, s in solution.rul_assets.items()]
        widgets.append(Table("Remaining useful life", ["asset", "RUL (cycles)", "cycles seen", "alert"], rows))
        widgets.append(Plot("Predicted RUL", series=[Series(a, data.history(f"pdm/{a}/rul")) for a in solution.rul_assets],
                            unit="cycles"))
    alerts = []
    for e in data.events(f"alerts/{solution.name}/#", limit=20):
        d = e["data"]
        detail = d.get("evidence", {}).get("fault_frequency") or {}
        tone = f"{detail['name']} {detail['hz']} Hz" if detail.get("name") else "-"
        alerts.append([_when(e["ts"]), d.get("machine") or d.get("asset") or "", e["kind"], e.get("severity") or "",
                       d.get("score", d.get("rul_cycles")), tone])
    widgets.append(Table("Recent alerts", ["time (UTC)", "machine", "kind", "severity", "score / RUL", "fault tone"], alerts))
    return widgets


PANELS = [Panel("pdm", "Machine health", pdm_view)]
