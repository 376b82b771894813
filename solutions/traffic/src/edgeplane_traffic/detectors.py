"""The detectors a signalised intersection has in the field, and what the policy may see of them.

Per incoming lane, two inductive loops (SUMO E1 detectors):

* a **stop-bar** loop ``STOP_BAR_SETBACK_M`` m before the stop line: presence (a vehicle on it now)
  and occupancy (share of time occupied);
* an **advance** loop ``ADVANCE_SETBACK_M`` m before the stop line (about 3 s of travel at 50 km/h,
  where actuated controllers place extension detectors), or at the lane's start when the lane is
  shorter: occupancy and counts (vehicles that crossed it).

Nothing else about a lane is observed: no whole-lane vehicle counts, no speeds, no waiting times.
Readings are accumulated over a decision period (:class:`DetectorWindow`): mean occupancy, counts
summed, presence at the last step; or, for a policy deciding every second or two, over a sliding
window of the last ``span`` readings, so a count still spans a few seconds of traffic.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeplane_traffic.layout import IntersectionLayout

__all__ = ["ADVANCE_SETBACK_M", "DETECTOR_METRICS", "STOP_BAR_SETBACK_M", "DetectorLayout", "DetectorWindow", "detector_layout", "write_detectors"]

DETECTOR_METRICS = ("stop_bar_occupancy", "stop_bar_count", "advance_occupancy", "advance_count")  # per lane and step
STOP_BAR_SETBACK_M = 1.0
ADVANCE_SETBACK_M = 40.0


@dataclass(frozen=True)
class DetectorLayout:
    tls: str
    lanes: list[str]
    stop_bar_ids: list[str]
    stop_bar_pos: list[float]
    advance_ids: list[str]
    advance_pos: list[float]

    def describe(self) -> list[dict[str, Any]]:
        return [{"lane": lane, "stop_bar_m_before_stop_line": round(length - sb, 1), "advance_m_before_stop_line": round(length - adv, 1)}
                for lane, sb, adv, length in zip(self.lanes, self.stop_bar_pos, self.advance_pos, self._lengths)]

    _lengths: tuple[float, ...] = ()


def detector_layout(layout: IntersectionLayout, prefix: str = "") -> DetectorLayout:
    """Where the loops of signal ``layout.tls`` are (positions from each lane's start, m)."""
    tag = prefix or "ep" + hashlib.sha1(layout.tls.encode()).hexdigest()[:8]
    sb_pos = [max(0.1, length - STOP_BAR_SETBACK_M) for length in layout.lane_lengths]
    adv_pos = [max(0.1, length - ADVANCE_SETBACK_M) for length in layout.lane_lengths]
    return DetectorLayout(
        layout.tls, list(layout.lanes),
        [f"{tag}_sb_{i}" for i in range(len(layout.lanes))], sb_pos,
        [f"{tag}_adv_{i}" for i in range(len(layout.lanes))], adv_pos,
        tuple(layout.lane_lengths),
    )


def write_detectors(path: Path, detectors: list[DetectorLayout]) -> None:
    """An additional file with every loop (no file output: values are read through libsumo/TraCI)."""
    root = ET.Element("additional")
    for d in detectors:
        for ids, positions in ((d.stop_bar_ids, d.stop_bar_pos), (d.advance_ids, d.advance_pos)):
            for det_id, lane, pos in zip(ids, d.lanes, positions):
                ET.SubElement(root, "inductionLoop", id=det_id, lane=lane, pos=f"{pos:.2f}", period="3600", file="NUL")
    ET.ElementTree(root).write(str(path))


class DetectorWindow:
    """Accumulates loop readings between two decisions (``span`` None), or over the last ``span``
    readings (one a second: the last ``span`` s), whatever the decisions; :meth:`reset` then does nothing."""

    def __init__(self, detectors: DetectorLayout, span: int | None = None):
        if span is not None and span < 1:
            raise ValueError(f"detector window of signal {detectors.tls!r}: span {span} readings; give 1 or more (or None)")
        self.detectors = detectors
        self.span = span
        self._history: deque[tuple[np.ndarray, ...]] = deque()
        n = len(detectors.lanes)
        self._sb_occ = np.zeros(n)
        self._adv_occ = np.zeros(n)
        self._adv_count = np.zeros(n)
        self._sb_count = np.zeros(n)
        self.presence = np.zeros(n)
        self.steps = 0

    def read(self, conn: Any) -> None:
        """Add one simulation step's readings (``conn``: libsumo or a TraCI connection)."""
        loop = conn.inductionloop
        d = self.detectors
        self.add([loop.getLastStepOccupancy(i) for i in d.stop_bar_ids], [loop.getLastStepVehicleNumber(i) for i in d.stop_bar_ids],
                 [loop.getLastStepOccupancy(i) for i in d.advance_ids], [loop.getLastStepVehicleNumber(i) for i in d.advance_ids])

    def add(self, stop_bar_occupancy_pct: Any, stop_bar_count: Any, advance_occupancy_pct: Any, advance_count: Any) -> None:
        """Add one step's readings, per lane: occupancy in % of the step, vehicles that crossed."""
        sb = np.asarray(stop_bar_occupancy_pct, dtype=np.float64) / 100.0
        # copies: a caller may pass the same buffer every step (the host solution does)
        row = (sb, np.array(stop_bar_count, dtype=np.float64), np.asarray(advance_occupancy_pct, dtype=np.float64) / 100.0,
               np.array(advance_count, dtype=np.float64))
        self._sb_occ += row[0]
        self.presence = (sb > 0).astype(float)
        self._sb_count += row[1]
        self._adv_occ += row[2]
        self._adv_count += row[3]
        self.steps += 1
        if self.span is not None:
            self._history.append(row)
            if len(self._history) > self.span:
                self._history.popleft()

    def snapshot(self) -> dict[str, np.ndarray]:
        if self.span is not None and self._history:
            sb_occ, sb_count, adv_occ, adv_count = (np.sum(column, axis=0) for column in zip(*self._history))
            steps = len(self._history)
            return {"stop_bar_presence": self.presence.copy(), "stop_bar_occupancy": sb_occ / steps, "stop_bar_count": sb_count,
                    "advance_occupancy": adv_occ / steps, "advance_count": adv_count}
        steps = max(1, self.steps)
        return {"stop_bar_presence": self.presence.copy(), "stop_bar_occupancy": self._sb_occ / steps,
                "stop_bar_count": self._sb_count.copy(), "advance_occupancy": self._adv_occ / steps,
                "advance_count": self._adv_count.copy()}

    def reset(self) -> None:
        if self.span is not None:
            return  # a sliding window forgets by age, not at decisions
        self._sb_occ[:] = 0
        self._adv_occ[:] = 0
        self._adv_count[:] = 0
        self._sb_count[:] = 0
        self.steps = 0
