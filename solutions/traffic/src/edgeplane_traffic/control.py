"""Signal controllers (fixed-time, max-pressure, RL) and the runtime that shields and falls back.

:class:`IntersectionController` is what the host solution and ``edgeplane traffic evaluate`` both
run, one tick per simulation (or detector) step:

1. every ``decision_period`` s the chosen controller states a wish (a green index);
2. RL asks the policy (``infer``) under a wall-clock ``deadline``; a missing model, a late or
   failed answer, or a malformed one switches to the fallback controller (counted, with the
   reason) until a later answer arrives in time; the fallback decides at its own period
   (``fallback_period``, default the longer of the policy's and 5 s: a classic controller asked
   every second would end greens at the first lull);
3. the :class:`~edgeplane_traffic.shield.SafetyShield` turns the wish into a safe command.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal, Mapping

import numpy as np

from edgeplane_traffic.layout import IntersectionLayout
from edgeplane_traffic.observation import build_detector_observation, build_observation
from edgeplane_traffic.shield import SafetyShield, ShieldConfig

__all__ = ["ControllerKind", "IntersectionController", "LaneReading", "TickOutcome", "max_pressure_choice"]

ControllerKind = Literal["fixed", "max-pressure", "rl"]
# s of slack when a decision is due: decisions fall on whole steps, and a host's clock (about 1.8e9 s
# since the epoch) carries float error of a few 1e-7 s, so "now + period" may land an ulp past the step
TIME_SLACK = 1e-3
InferFn = Callable[[np.ndarray], Awaitable[np.ndarray]]


@dataclass
class LaneReading:
    vehicles: float = 0.0
    halting: float = 0.0
    vehicle_length: float = 0.0


@dataclass
class TickOutcome:
    command: int | None  # phase-table index to command, or None
    reason: str  # why, for the audit log
    decided: bool = False  # a controller decision was made this tick
    wish: int | None = None
    source: str | None = None  # which controller made the decision ("rl", "max-pressure", "fixed")
    corrections: list[str] = field(default_factory=list)
    latency_s: float | None = None
    fallback_reason: str | None = None  # set when this tick switched to the fallback
    recovered: bool = False  # set when this tick switched back to RL


def max_pressure_choice(layout: IntersectionLayout, lanes: Mapping[str, LaneReading]) -> int:
    """The green whose movements have the largest (vehicles in - vehicles out); ties: the lower index."""
    best, best_pressure = 0, -float("inf")
    for green in range(layout.num_greens):
        pressure = 0.0
        for m in layout.green_movements(green):
            pressure += lanes.get(m.in_lane, LaneReading()).vehicles - lanes.get(m.out_lane, LaneReading()).vehicles
        if pressure > best_pressure:
            best, best_pressure = green, pressure
    return best


class IntersectionController:
    """One intersection's decision loop: controller + fallback + shield, with its statistics."""

    def __init__(
        self,
        layout: IntersectionLayout,
        kind: ControllerKind,
        *,
        shield: ShieldConfig | None = None,
        decision_period: float = 5.0,
        deadline: float = 0.05,
        fallback: Literal["max-pressure", "fixed"] = "max-pressure",
        infer: InferFn | None = None,
        observation: Literal["lanes", "detectors"] = "lanes",
        fallback_period: float | None = None,
    ):
        if kind not in ("fixed", "max-pressure", "rl"):
            raise ValueError(f"controller {kind!r}: use fixed, max-pressure or rl")
        self.layout = layout
        self.kind = kind
        self.shield = SafetyShield(layout, shield)
        self.decision_period = decision_period
        self.fallback_period = max(decision_period, 5.0) if fallback_period is None else fallback_period
        self.deadline = deadline
        self.fallback = fallback
        self.infer = infer
        self.observation_kind = observation  # what the policy was trained on (its metadata says)
        self.in_fallback = False
        self.fallback_reason: str | None = None
        self.fallbacks: Counter[str] = Counter()  # switches to the fallback, by reason
        self.recoveries = 0
        self.decisions: Counter[str] = Counter()  # decisions by controller
        self.latencies_s: list[float] = []  # observation -> command ready, every decision
        self._next_decision: float | None = None
        # fixed-time: each green's duration in the network's own program
        durations = {state: dur for state, dur in layout.fixed_program}
        self._fixed_durations = [durations.get(s, 30.0) for s in layout.green_states]

    @property
    def interventions(self) -> int:
        return sum(self.shield.interventions.values())

    # ---- the controllers
    def _fixed(self, green: int, elapsed: float) -> int:
        return green if elapsed + 1e-9 < self._fixed_durations[green] else (green + 1) % self.layout.num_greens

    def observation(self, green: int, elapsed: float, lanes: Mapping[str, LaneReading]) -> np.ndarray:
        readings = [lanes.get(lane, LaneReading()) for lane in self.layout.lanes]
        cfg = self.shield.config
        return build_observation(
            self.layout, green, elapsed + cfg.yellow + 1e-9 >= cfg.min_green + cfg.yellow,
            [r.vehicles for r in readings], [r.halting for r in readings], [r.vehicle_length for r in readings],
        )

    def detector_observation(self, green: int, elapsed: float, detectors: Mapping[str, Any]) -> np.ndarray:
        cfg = self.shield.config
        return build_detector_observation(self.layout, green, elapsed + 1e-9 >= cfg.min_green,
                                          min(1.0, elapsed / cfg.max_green), detectors)

    async def _rl(self, obs: np.ndarray) -> tuple[int | None, str | None]:
        """The policy's green, or (None, reason) when it cannot be used."""
        if self.infer is None:
            return None, "model missing"
        try:
            # a timeout around the await, not wait_for: wait_for runs the call as a task of its own, which
            # starts on the loop's next pass and ends one pass late, behind every other signal's work
            async with asyncio.timeout(self.deadline):
                scores = await self.infer(obs)
        except TimeoutError:
            return None, f"late (> {self.deadline * 1000:.0f} ms)"
        except Exception as e:  # noqa: BLE001 - any model failure means: use the fallback
            text = str(e).splitlines()[0] if str(e) else ""
            if "not found" in text.lower() or type(e).__name__ == "ModelNotFoundError":
                return None, f"model missing ({text})"
            return None, f"error ({type(e).__name__}: {text[:120]})"
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape[0] != self.layout.num_greens or not np.all(np.isfinite(scores)):
            return None, f"error (bad output: {scores.shape[0]} scores for {self.layout.num_greens} greens)"
        return int(np.argmax(scores)), None

    def decision_due(self, now: float, phase: int) -> bool:
        """Whether :meth:`tick` at ``now`` with ``phase`` shown makes a controller decision."""
        due = self._next_decision is None or now + TIME_SLACK >= self._next_decision
        return due and self.layout.phase_kind(phase) == "green"

    # ---- one tick
    async def tick(self, now: float, phase: int, elapsed: float, lanes: Mapping[str, LaneReading],
                   detectors: Mapping[str, Any] | None = None) -> TickOutcome:
        """Advance by one observation: ``phase`` (phase-table index) shown for ``elapsed`` s at time ``now``.

        ``detectors`` (a :meth:`~edgeplane_traffic.detectors.DetectorWindow.snapshot`) feeds a policy
        trained on detector observations; ``lanes`` feeds max-pressure and lane-observation policies."""
        started = time.perf_counter()
        green = self.shield.current_green(phase)
        if green is None:
            green = 0
        outcome = TickOutcome(None, "")
        wish: int | None = None
        if self._next_decision is None:
            self._next_decision = now
        if now + TIME_SLACK >= self._next_decision and self.layout.phase_kind(phase) == "green":
            self._next_decision = now + self.decision_period
            outcome.decided = True
            source = self.kind
            if self.kind == "fixed":
                wish = self._fixed(green, elapsed)
            elif self.kind == "max-pressure":
                wish = max_pressure_choice(self.layout, lanes)
            else:
                if self.observation_kind == "detectors":
                    if detectors is None:
                        raise ValueError(f"signal {self.layout.tls!r}: the policy observes detectors; pass their readings")
                    obs = self.detector_observation(green, elapsed, detectors)
                else:
                    obs = self.observation(green, elapsed, lanes)
                wish, problem = await self._rl(obs)
                if problem is not None:
                    if not self.in_fallback:
                        self.in_fallback = True
                        self.fallbacks[problem.split(" ")[0]] += 1
                        outcome.fallback_reason = problem
                    self.fallback_reason = problem
                    source = self.fallback
                    wish = max_pressure_choice(self.layout, lanes) if self.fallback == "max-pressure" else self._fixed(green, elapsed)
                elif self.in_fallback:
                    self.in_fallback = False
                    self.fallback_reason = None
                    self.recoveries += 1
                    outcome.recovered = True
            self.decisions[source] += 1
            outcome.source = source
            if self.in_fallback:
                self._next_decision = now + self.fallback_period
        step = self.shield.step(phase, elapsed, wish)
        outcome.wish = wish
        outcome.command = step.command
        outcome.corrections = step.corrections
        if outcome.decided:
            outcome.latency_s = time.perf_counter() - started
            self.latencies_s.append(outcome.latency_s)
        if step.command is not None:
            kind = self.layout.phase_kind(step.command)
            why = f"{outcome.source or 'shield'}" if outcome.decided else "shield clearance"
            if step.corrections:
                why += f"; shield corrected: {', '.join(step.corrections)}"
            if self.in_fallback:
                why += f"; fallback ({self.fallback_reason})"
            outcome.reason = f"{kind} {step.command} ({why})"
        return outcome

    def latency_percentiles_ms(self) -> tuple[float, float]:
        if not self.latencies_s:
            return float("nan"), float("nan")
        values = np.asarray(self.latencies_s) * 1000
        return float(np.percentile(values, 50)), float(np.percentile(values, 99))
