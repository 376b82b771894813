"""Signal programs for the controllers SUMO runs itself (fixed, Webster, actuated), under one timing.

Every controller gets its clearances from one :class:`~edgeplane_traffic.shield.ShieldConfig`
(yellow, all-red, minimum and maximum green): the commanded controllers (max-pressure, RL) through
the :class:`~edgeplane_traffic.shield.SafetyShield`, the program controllers through
:func:`cycle_phases`, which builds ``green i -> yellow (i, i+1) -> all-red -> green i+1`` with the
same yellow and all-red states the shield commands. The net's own program keeps only its green
durations; its yellows (3-5 s on RESCO's nets) are replaced, so no controller gets other clearances.

Webster's method (Webster 1958; HCM's lost-time convention): per green the critical flow ratio
``y_i = max(q_lane / s)`` over the lanes it serves first, ``Y = sum(y_i)``, lost time
``L = n (yellow + all_red)``, cycle ``C = (1.5 L + 5) / (1 - Y)`` within ``[cycle_min, cycle_max]``,
effective greens ``(C - L) y_i / Y`` within ``[min_green, max_green]``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from edgeplane_traffic.layout import IntersectionLayout
from edgeplane_traffic.shield import ShieldConfig

__all__ = ["ProgramPhase", "WebsterPlan", "ACTUATED_PARAMS", "SATURATION_FLOW_VEH_H", "actuated_phases", "cycle_phases", "fixed_greens",
           "lane_primary_green", "tuned_max_pressure_period", "webster_plan", "write_programs"]

SATURATION_FLOW_VEH_H = 1800.0  # per lane, the HCM base value
# SUMO's gap-based actuation: a green is extended while vehicles pass its detectors less than
# max-gap s apart; detectors sit detector-gap s of travel (at the lane's speed) before the stop line
ACTUATED_PARAMS = {"max-gap": "3.0", "detector-gap": "2.0", "passing-time": "1.9", "show-detectors": "false"}


@dataclass(frozen=True)
class ProgramPhase:
    state: str
    duration: float
    min_dur: float | None = None
    max_dur: float | None = None
    kind: str = "green"  # green | yellow | all-red
    next: tuple[int, ...] | None = None  # SUMO's phase successors (actuated phase skipping)


def cycle_phases(layout: IntersectionLayout, greens: list[float], timing: ShieldConfig, *, actuated: bool = False) -> list[ProgramPhase]:
    """One cycle over every green in order with the shared clearances; ``greens`` are durations (s)."""
    if len(greens) != layout.num_greens:
        raise ValueError(f"signal {layout.tls!r}: {len(greens)} green durations for {layout.num_greens} greens")
    phases: list[ProgramPhase] = []
    n = layout.num_greens
    for i in range(n):
        g = min(max(greens[i], timing.min_green), timing.max_green)
        if actuated:
            phases.append(ProgramPhase(layout.green_states[i], timing.min_green, timing.min_green, timing.max_green))
        else:
            phases.append(ProgramPhase(layout.green_states[i], g))
        phases.append(ProgramPhase(layout.phase_states[layout.yellow_phase(i, (i + 1) % n)], timing.yellow, kind="yellow"))
        if timing.all_red > 0:
            phases.append(ProgramPhase(layout.all_red_state, timing.all_red, kind="all-red"))
    return phases


def actuated_phases(layout: IntersectionLayout, timing: ShieldConfig) -> list[ProgramPhase]:
    """Phases for SUMO's gap-based actuated control with phase skipping.

    Greens first (minimum ``min_green``, maximum ``max_green``); then for each ordered pair (i, j)
    the yellow (i, j) and the all-red leading to green j. Green i lists the yellows to every other
    green, next in cyclic order first, so SUMO serves the next green with demand on its detectors
    and skips the others, with the same clearances whichever green comes next.
    """
    n = layout.num_greens
    per_pair = 2 if timing.all_red > 0 else 1
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    first = {pair: n + k * per_pair for k, pair in enumerate(pairs)}
    phases: list[ProgramPhase] = []
    for i in range(n):
        order = [(i + k) % n for k in range(1, n)]
        phases.append(ProgramPhase(layout.green_states[i], timing.min_green, timing.min_green, timing.max_green,
                                   next=tuple(first[(i, j)] for j in order)))
    for (i, j) in pairs:
        idx = first[(i, j)]
        yellow_next = (idx + 1,) if timing.all_red > 0 else (j,)
        phases.append(ProgramPhase(layout.phase_states[layout.yellow_phase(i, j)], timing.yellow, kind="yellow", next=yellow_next))
        if timing.all_red > 0:
            phases.append(ProgramPhase(layout.all_red_state, timing.all_red, kind="all-red", next=(j,)))
    return phases


def fixed_greens(layout: IntersectionLayout) -> list[float]:
    """The net's own green durations, per green of the layout."""
    durations = {state: duration for state, duration in layout.fixed_program}
    return [durations.get(state, 30.0) for state in layout.green_states]


def lane_primary_green(layout: IntersectionLayout) -> dict[str, int]:
    """Each incoming lane's green: the one serving most of its links (then most protected ``G`` links).

    A shared lane discharges in that green; a protected turn phase that is nobody's primary gets the
    minimum green, its turners also go permissively in the main green."""
    best: dict[str, int] = {}
    for lane in layout.lanes:
        links = [m.link for m in layout.movements if m.in_lane == lane]

        def score(green: int) -> tuple[int, int]:
            state = layout.green_states[green]
            return (sum(state[k] in "Gg" for k in links), sum(state[k] == "G" for k in links))

        best[lane] = max(range(layout.num_greens), key=lambda g: (score(g), -g))
    return best


@dataclass(frozen=True)
class WebsterPlan:
    cycle_s: float
    greens_s: list[float]
    critical_ratios: list[float]
    flow_ratio_sum: float
    lost_time_s: float


def webster_plan(layout: IntersectionLayout, lane_flows_veh_h: Mapping[str, float], timing: ShieldConfig, *,
                 cycle_min: float = 40.0, cycle_max: float = 120.0, saturation: float = SATURATION_FLOW_VEH_H) -> WebsterPlan:
    """Webster's cycle and green splits from per-lane flows (veh/h) on the incoming lanes."""
    primary = lane_primary_green(layout)
    ratios = [0.0] * layout.num_greens
    for lane, green in primary.items():
        ratios[green] = max(ratios[green], float(lane_flows_veh_h.get(lane, 0.0)) / saturation)
    n = layout.num_greens
    lost = n * (timing.yellow + timing.all_red)
    total = sum(ratios)
    # an oversaturated intersection has no finite optimum: take the longest cycle allowed
    cycle = cycle_max if total >= 0.95 else (1.5 * lost + 5.0) / (1.0 - total)
    cycle = min(max(cycle, cycle_min, lost + n * timing.min_green), cycle_max)
    effective = cycle - lost
    if total <= 0:
        greens = [effective / n] * n
    else:
        greens = [effective * max(r, 1e-6) / total for r in ratios]
    greens = [min(max(g, timing.min_green), timing.max_green) for g in greens]
    return WebsterPlan(round(cycle, 1), [round(g, 1) for g in greens], ratios, total, lost)


def write_programs(path: Path, layout: IntersectionLayout, programs: Mapping[str, list[ProgramPhase]], *,
                   actuated: set[str] | frozenset[str] = frozenset()) -> None:
    """An additional file with ``programs`` (id -> phases) for signal ``layout.tls``."""
    root = ET.Element("additional")
    for program_id, phases in programs.items():
        logic = ET.SubElement(root, "tlLogic", id=layout.tls, programID=program_id,
                              type="actuated" if program_id in actuated else "static", offset="0")
        if program_id in actuated:
            for key, value in ACTUATED_PARAMS.items():
                ET.SubElement(logic, "param", key=key, value=value)
        for phase in phases:
            attrs = {"duration": f"{phase.duration:g}", "state": phase.state}
            if phase.min_dur is not None and phase.max_dur is not None:
                attrs |= {"minDur": f"{phase.min_dur:g}", "maxDur": f"{phase.max_dur:g}"}
            if phase.next is not None:
                attrs["next"] = " ".join(str(k) for k in phase.next)
            ET.SubElement(logic, "phase", **attrs)
    ET.ElementTree(root).write(str(path))


TUNED_FILE = Path(__file__).parent / "baselines.json"


def tuned_max_pressure_period(net_name: str) -> float:
    """Max-pressure's decision period for a net, as tuned on training demand (``baselines.json``; 5 s untuned)."""
    if TUNED_FILE.is_file():
        entry = json.loads(TUNED_FILE.read_text()).get("max-pressure", {}).get(net_name)
        if entry:
            return float(entry["decision_period_s"])
    return 5.0
