"""The policy's observation, built by one function for training and for the field.

sumo-rl's default observation, ``[phase one-hot, min-green flag, lane densities, lane queues]``,
computed by :func:`build_observation` from plain per-lane numbers. Training calls it through
:func:`make_layout_observation` (a sumo-rl observation class reading SUMO), the controller calls it
with values read from bus points, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np

from edgeplane_traffic.layout import IntersectionLayout

__all__ = ["DETECTOR_COUNT_SCALE", "MIN_GAP", "DetectorObservation", "build_detector_observation", "build_observation",
           "detector_observation_names", "lane_capacity", "make_layout_observation", "read_detector_observation", "served_lanes"]

MIN_GAP = 2.5  # SUMO's default minimum gap (m), as sumo-rl uses it


def lane_capacity(length: float, mean_vehicle_length: float) -> float:
    """How many vehicles fit on a lane of ``length`` m (sumo-rl's rule)."""
    return length / (MIN_GAP + max(0.0, mean_vehicle_length))


def build_observation(
    layout: IntersectionLayout,
    green: int,
    min_green_passed: bool,
    vehicles: Sequence[float],
    halting: Sequence[float],
    vehicle_length: Sequence[float],
) -> np.ndarray:
    """The observation vector (float32, length ``layout.observation_size``).

    ``vehicles``, ``halting`` and ``vehicle_length`` (mean length of the vehicles now on the lane,
    SUMO's lastStepLength) are per incoming lane in ``layout.lanes`` order.
    """
    n = len(layout.lanes)
    if not (len(vehicles) == len(halting) == len(vehicle_length) == n):
        raise ValueError(f"signal {layout.tls!r}: expected {n} values per lane list, got "
                         f"{len(vehicles)}, {len(halting)}, {len(vehicle_length)}")
    obs = np.zeros(layout.observation_size, dtype=np.float32)
    if 0 <= green < layout.num_greens:
        obs[green] = 1.0
    obs[layout.num_greens] = 1.0 if min_green_passed else 0.0
    lengths = np.asarray(layout.lane_lengths, dtype=np.float64)
    capacity = lengths / (MIN_GAP + np.maximum(np.asarray(vehicle_length, dtype=np.float64), 0.0))
    base = layout.num_greens + 1
    obs[base : base + n] = np.minimum(1.0, np.asarray(vehicles, dtype=np.float64) / capacity)
    obs[base + n : base + 2 * n] = np.minimum(1.0, np.asarray(halting, dtype=np.float64) / capacity)
    return obs


DETECTOR_COUNT_SCALE = 5.0  # advance-loop counts per decision period are divided by this (and capped at 1)


def detector_observation_names(layout: IntersectionLayout) -> list[str]:
    return [
        *(f"phase_{i}" for i in range(layout.num_greens)), "min_green", "green_time",
        *(f"stop_bar_presence:{lane}" for lane in layout.lanes),
        *(f"stop_bar_occupancy:{lane}" for lane in layout.lanes),
        *(f"advance_occupancy:{lane}" for lane in layout.lanes),
        *(f"advance_count:{lane}" for lane in layout.lanes),
    ]


def build_detector_observation(
    layout: IntersectionLayout,
    green: int,
    min_green_passed: bool,
    green_time_fraction: float,
    detectors: Mapping[str, Sequence[float]],
) -> np.ndarray:
    """The detector-only observation: ``[green one-hot, min-green passed, green time / max green,
    stop-bar presence, stop-bar occupancy, advance occupancy, advance counts / 5]``, per lane in
    ``layout.lanes`` order; ``detectors`` is a :meth:`DetectorWindow.snapshot`."""
    n = len(layout.lanes)
    parts = [np.asarray(detectors[k], dtype=np.float64) for k in ("stop_bar_presence", "stop_bar_occupancy", "advance_occupancy", "advance_count")]
    if any(p.shape != (n,) for p in parts):
        raise ValueError(f"signal {layout.tls!r}: expected {n} values per detector list, got {[p.shape for p in parts]}")
    parts[3] = parts[3] / DETECTOR_COUNT_SCALE
    head = np.zeros(layout.num_greens + 2)
    if 0 <= green < layout.num_greens:
        head[green] = 1.0
    head[layout.num_greens] = 1.0 if min_green_passed else 0.0
    head[layout.num_greens + 1] = green_time_fraction
    return np.clip(np.concatenate([head, *parts]), 0.0, 1.0).astype(np.float32)


class DetectorObservation(NamedTuple):
    """A detector observation vector read back by field (what a rule-based teacher decides on)."""

    green: int
    min_green_passed: bool
    green_time: float  # fraction of the maximum green
    presence: np.ndarray  # per lane, in ``layout.lanes`` order
    stop_bar_occupancy: np.ndarray
    advance_occupancy: np.ndarray
    advance_count: np.ndarray  # divided by DETECTOR_COUNT_SCALE, as in the vector


def read_detector_observation(obs: np.ndarray, greens: int, lanes: int) -> DetectorObservation:
    """The fields of :func:`build_detector_observation`'s vector for a signal of ``greens`` greens and ``lanes`` lanes."""
    obs = np.asarray(obs, dtype=np.float64).reshape(-1)
    presence, sb_occ, adv_occ, adv_count = (obs[greens + 2 + k * lanes: greens + 2 + (k + 1) * lanes] for k in range(4))
    return DetectorObservation(int(np.argmax(obs[:greens])), bool(obs[greens] > 0.5), float(obs[greens + 1]),
                               presence, sb_occ, adv_occ, adv_count)


def served_lanes(layout: IntersectionLayout) -> np.ndarray:
    """A (greens x lanes) matrix: 1 where green ``g`` gives way to incoming lane ``layout.lanes[i]``."""
    served = np.zeros((layout.num_greens, len(layout.lanes)))
    for g in range(layout.num_greens):
        for m in layout.green_movements(g):
            served[g, layout.lanes.index(m.in_lane)] = 1.0
    return served


def _sumo_rl_observation_base() -> type:
    from edgeplane_traffic.sumo_runtime import ensure_sumo_home

    ensure_sumo_home()
    from sumo_rl.environment.observations import ObservationFunction

    return ObservationFunction



def make_layout_observation(layout: IntersectionLayout) -> type:
    """A sumo-rl observation class that computes :func:`build_observation` from SUMO."""
    from gymnasium import spaces

    base = _sumo_rl_observation_base()

    class LayoutObservation(base):  # type: ignore[misc, valid-type]
        def __call__(self) -> np.ndarray:
            ts = self.ts
            sumo = ts.sumo
            return build_observation(
                layout,
                ts.green_phase,
                ts.time_since_last_phase_change >= ts.min_green + ts.yellow_time,
                [sumo.lane.getLastStepVehicleNumber(lane) for lane in layout.lanes],
                [sumo.lane.getLastStepHaltingNumber(lane) for lane in layout.lanes],
                [sumo.lane.getLastStepLength(lane) for lane in layout.lanes],
            )

        def observation_space(self) -> spaces.Box:
            size = layout.observation_size
            return spaces.Box(low=np.zeros(size, dtype=np.float32), high=np.ones(size, dtype=np.float32))

    return LayoutObservation

