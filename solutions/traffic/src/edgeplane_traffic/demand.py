"""Demand a policy has not seen: a generator of SUMO route files, and the run-window check.

:func:`generate_demand` draws one demand pattern for a net from a reference route file (the net's
own): its origin-destination pairs (entry edge -> exit edge) give the routes and base turning
ratios; every pattern then draws

* a demand level (0.6-1.3 x the reference's rate) and a time profile over 5-minute bins (a random
  peak plus noise), so flows vary in time;
* turning ratios: per entry, a Dirichlet draw around the reference split, with a small share for
  every other reachable exit (turns the reference never had);
* a surge (probability 0.6): one entry at 1.5-2.2 x for 10-15 minutes;
* an incident (probability 0.5): a stalled vehicle closes one lane of a multi-lane approach to a
  controlled signal for 8-20 minutes (vType ``edgeplane-incident``, not counted as traffic).

Arrivals are Poisson per pair and bin. Seeds are split so the three uses never share a pattern:
``train`` index i -> seed i, ``validation`` -> 1,000,000 + i, ``evaluation`` -> 2,000,000 + i.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = ["INCIDENT_VTYPE", "SPLIT_SEED_BASE", "DemandPattern", "check_route_window", "demand_seed", "generate_demand",
           "route_departures"]

INCIDENT_VTYPE = "edgeplane-incident"
SPLIT_SEED_BASE = {"train": 0, "validation": 1_000_000, "evaluation": 2_000_000}
Split = Literal["train", "validation", "evaluation"]


def demand_seed(split: Split, index: int) -> int:
    if split not in SPLIT_SEED_BASE:
        raise ValueError(f"demand split {split!r}: use train, validation or evaluation")
    if not 0 <= index < 1_000_000:
        raise ValueError(f"demand index {index}: use 0..999999")
    return SPLIT_SEED_BASE[split] + index


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None  # "triggered", "now", ...: not a time


def route_departures(path: Path) -> tuple[float, float, int]:
    """Earliest and latest departure in a route file and how many vehicles/trips/flows it has."""
    first, last, count = float("inf"), -float("inf"), 0
    try:
        for _, el in ET.iterparse(str(path)):
            if el.tag in ("vehicle", "trip", "person"):
                t = _number(el.get("depart"))
                if t is not None:
                    first, last, count = min(first, t), max(last, t), count + 1
            elif el.tag == "flow":
                b, e = _number(el.get("begin")) or 0.0, _number(el.get("end"))
                first, last, count = min(first, b), max(last, e if e is not None else b), count + 1
            if el.tag != "route":
                el.clear()
    except ET.ParseError as e:
        raise ValueError(f"route file {path} is not valid XML ({e}): pass a SUMO .rou.xml") from None
    return first, last, count


def check_route_window(path: Path, begin: float, end: float) -> None:
    """Raise ValueError when no departure of ``path`` falls in ``[begin, end)``."""
    first, last, count = route_departures(path)
    if count == 0:
        raise ValueError(f"route file {path} has no vehicles, trips or flows: pass a SUMO route file with demand")
    if last < begin or first >= end:
        raise ValueError(
            f"route file {path} departs between {first:g} s and {last:g} s, outside the run {begin:g}..{end:g} s: "
            f"generate demand for this window ('edgeplane traffic demand') or pass a net whose begin time matches")


@dataclass(frozen=True)
class DemandPattern:
    seed: int
    level: float
    surge: dict[str, Any] | None
    incident: dict[str, Any] | None
    vehicles: int


def _reference_rates(route: Path) -> tuple[dict[tuple[str, str], float], list[ET.Element]]:
    """Per (entry edge, exit edge): the reference's rate in veh/s; and its vTypes."""
    counts: Counter[tuple[str, str]] = Counter()
    flow_rates: Counter[tuple[str, str]] = Counter()
    routes: dict[str, list[str]] = {}
    vtypes: list[ET.Element] = []
    first, last = float("inf"), -float("inf")
    for _, el in ET.iterparse(str(route)):
        if el.tag == "vType":
            vtypes.append(el)
        elif el.tag == "route" and el.get("id"):
            routes[el.get("id", "")] = el.get("edges", "").split()
        elif el.tag in ("trip", "vehicle"):
            if el.tag == "trip":
                edges = [e for e in (el.get("from"), el.get("to")) if e]
            else:
                inner = el.find("route")
                edges = inner.get("edges", "").split() if inner is not None else routes.get(el.get("route", ""), [])
            t = _number(el.get("depart"))
            if edges and t is not None:
                counts[(edges[0], edges[-1])] += 1
                first, last = min(first, t), max(last, t)
        elif el.tag == "flow":
            edges = routes.get(el.get("route", ""), []) or [e for e in (el.get("from"), el.get("to")) if e]
            if edges:
                rate = float(el.get("probability") or 0) or float(el.get("vehsPerHour") or 0) / 3600.0
                if not rate and el.get("period"):
                    rate = 1.0 / float(el.get("period", "1"))
                flow_rates[(edges[0], edges[-1])] += rate
    span = max(600.0, last - first) if counts else 1.0
    rates = {pair: n / span for pair, n in counts.items()}
    for pair, rate in flow_rates.items():
        rates[pair] = rates.get(pair, 0.0) + rate
    return rates, vtypes


def generate_demand(net_file: Path, reference_route: Path, out: Path, *, begin: float, seconds: float, seed: int,
                    signal_lanes: list[str] | None = None) -> DemandPattern:
    """Write one demand pattern (a SUMO route file of trips) for ``[begin, begin + seconds)``."""
    from edgeplane_traffic.layout import _read_net

    net = _read_net(net_file)
    rng = np.random.default_rng(seed)
    pairs, vtypes = _reference_rates(reference_route)
    if not pairs:
        raise ValueError(f"reference route file {reference_route} has no trips, vehicles or flows to learn routes from")
    entries = sorted({a for a, _ in pairs})
    exits = sorted({b for _, b in pairs})
    # every reachable (entry, exit) pair gets a share; the reference's split is the Dirichlet's centre
    split: dict[str, tuple[list[str], np.ndarray]] = {}
    for entry in entries:
        candidates, base = [], []
        for exit_ in exits:
            seen = pairs.get((entry, exit_), 0)
            if seen == 0:
                if exit_ == entry or _is_u_turn(net, entry, exit_):
                    continue
                path, _ = net.getShortestPath(net.getEdge(entry), net.getEdge(exit_), vClass="passenger")
                if not path:
                    continue
            candidates.append(exit_)
            base.append(float(seen))
        if not candidates:
            continue
        weights = np.asarray(base)
        total = weights.sum()
        prior = (weights / total if total > 0 else np.full(len(weights), 1 / len(weights))) + 0.05
        prior /= prior.sum()
        split[entry] = (candidates, rng.dirichlet(prior * 30.0))
    entry_rate = {e: sum(v for (a, _), v in pairs.items() if a == e) for e in entries}
    level = float(rng.uniform(0.6, 1.3))
    bins = int(np.ceil(seconds / 300.0))
    peak_at, peak_width, peak_height = rng.uniform(0, bins), rng.uniform(2, 6), rng.uniform(0.0, 0.6)
    profile = np.array([1.0 + peak_height * np.exp(-0.5 * ((b - peak_at) / peak_width) ** 2) for b in range(bins)])
    profile *= rng.uniform(0.85, 1.15, bins)
    profile /= profile.mean()
    surge = None
    if rng.random() < 0.6:
        start = float(rng.uniform(0.1, 0.7) * seconds)
        surge = {"entry": str(rng.choice(entries)), "factor": round(float(rng.uniform(1.5, 2.2)), 2),
                 "begin": begin + round(start), "end": begin + round(start + rng.uniform(600, 900))}
    trips: list[tuple[float, str, str]] = []
    for b in range(bins):
        t0, t1 = begin + b * 300.0, min(begin + seconds, begin + (b + 1) * 300.0)
        for entry in split:
            rate = entry_rate[entry] * level * profile[b]
            if surge and surge["entry"] == entry:
                overlap = max(0.0, min(t1, surge["end"]) - max(t0, surge["begin"]))
                rate *= 1.0 + (surge["factor"] - 1.0) * overlap / (t1 - t0)
            n = rng.poisson(rate * (t1 - t0))
            exits_for, probs = split[entry]
            for t, k in zip(np.sort(rng.uniform(t0, t1, n)), rng.choice(len(exits_for), n, p=probs)):
                trips.append((float(t), entry, exits_for[k]))
    trips.sort()
    incident = None
    multi = [lane for lane in (signal_lanes or []) if net.getLane(lane).getEdge().getLaneNumber() >= 2
             and net.getLane(lane).getLength() >= 60]
    if multi and rng.random() < 0.5:
        lane_id = str(rng.choice(sorted(multi)))
        lane = net.getLane(lane_id)
        start = begin + round(float(rng.uniform(0.15, 0.6) * seconds))
        incident = {"lane": lane_id, "begin": start, "duration": round(float(rng.uniform(480, 1200))),
                    "pos": round(lane.getLength() * 0.5, 1)}
    root = ET.Element("routes")
    for vt in vtypes:
        root.append(vt)
    vtype = vtypes[0].get("id") if vtypes else None
    ET.SubElement(root, "vType", id=INCIDENT_VTYPE, vClass="passenger", color="red")
    events: list[tuple[float, ET.Element]] = []
    for k, (t, a, b) in enumerate(trips):
        attrs = {"id": f"d{seed}_{k}", "depart": f"{t:.2f}", "from": a, "to": b, "departLane": "best", "departSpeed": "max"}
        if vtype:
            attrs["type"] = vtype
        events.append((t, ET.Element("trip", attrs)))
    if incident:
        lane = net.getLane(incident["lane"])
        veh = ET.Element("vehicle", id="incident", type=INCIDENT_VTYPE, depart=f"{incident['begin']:.2f}",
                         departLane=str(lane.getIndex()), departPos=f"{incident['pos'] - 5:.1f}", departSpeed="0")
        ET.SubElement(veh, "route", edges=lane.getEdge().getID())
        ET.SubElement(veh, "stop", lane=incident["lane"], endPos=f"{incident['pos']:.1f}", duration=f"{incident['duration']}")
        events.append((incident["begin"], veh))
    events.sort(key=lambda e: e[0])
    for _, el in events:
        root.append(el)
    ET.indent(root)
    Path(out).write_text(ET.tostring(root, encoding="unicode"))
    return DemandPattern(seed, round(level, 3), surge, incident, len(trips))


def _is_u_turn(net: Any, a: str, b: str) -> bool:
    ea, eb = net.getEdge(a), net.getEdge(b)
    return ea.getFromNode() == eb.getToNode() and ea.getToNode() == eb.getFromNode()
