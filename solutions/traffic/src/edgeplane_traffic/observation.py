"""The policy's observation, built by one function for training and for the field.

sumo-rl's default observation, ``[phase one-hot, min-green flag, lane densities, lane queues]``,
computed by :func:`build_observation` from plain per-lane numbers. Training calls it through
:func:`make_layout_observation` (a sumo-rl observation class reading SUMO), the controller calls it
with values read from bus points, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgeplane_traffic.layout import IntersectionLayout

__all__ = ["MIN_GAP", "build_observation", "lane_capacity", "make_layout_observation"]

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

