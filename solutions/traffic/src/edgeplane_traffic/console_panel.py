"""The intersection's panel in the site console: current phase, queues, shield interventions."""

from __future__ import annotations

from typing import Any

from edgeplane.console import Panel, PanelData, Plot, Series, Stats, Table, Widget
from edgeplane_traffic.layout import point_name

__all__ = ["PANELS"]


def _number(data: PanelData, topic: str) -> float | None:
    found = data.latest(topic)
    return None if found is None or not isinstance(found[1], (int, float)) else float(found[1])


def signal_view(solution: Any, data: PanelData) -> list[Widget]:
    layout = solution.layout
    device = solution.config.device
    key = point_name(layout.tls)
    phase = _number(data, f"{device}/{key}.phase")
    phase_time = _number(data, f"{device}/{key}.phase_time")
    kind, state = "?", "?"
    if phase is not None:
        try:
            kind, state = layout.phase_kind(int(phase)), layout.phase_states[int(phase)]
        except (ValueError, IndexError):
            kind = "unknown"
    controller = solution.controller
    stats = Stats(f"Signal {layout.tls}", {
        "phase": "-" if phase is None else int(phase),
        "kind": kind,
        "signal state": state,
        "in phase s": "-" if phase_time is None else round(phase_time, 1),
        "controller": controller.fallback if controller.in_fallback else solution.config.controller,
        "shield interventions": controller.interventions,
    })
    queues = []
    for lane in layout.lanes:
        base = f"{device}/lane.{point_name(lane)}"
        queues.append([lane, _number(data, f"{base}.halting"), _number(data, f"{base}.vehicles")])
    queues.sort(key=lambda r: -(r[1] or 0))
    rules = [[rule, count] for rule, count in sorted(controller.shield.interventions.items())]
    fallbacks = [[e["kind"], e["data"].get("reason") or e["data"].get("controller", "")]
                 for e in data.events(f"{solution.name}/fallback", limit=10)]
    halting = Plot("Halting vehicles on the busiest lanes", unit="vehicles",
                   series=[Series(r[0], data.history(f"{device}/lane.{point_name(r[0])}.halting")) for r in queues[:4]])
    interventions = Plot("Shield interventions (cumulative)", unit="count",
                         series=[Series("interventions", data.history(f"{solution.name}/interventions"))])
    return [stats, Table("Queues per incoming lane", ["lane", "halting", "vehicles"], queues), halting,
            Table("Shield interventions by rule", ["rule", "count"], rules), interventions,
            Table("Fallbacks (recent)", ["event", "reason / controller"], fallbacks)]


PANELS = [Panel("traffic-signal", "Intersection", signal_view)]
