"""``edgeplane traffic train --warm-start``: imitate a detector controller, then fine-tune with PPO.

Learning from demonstrations (behaviour cloning as in DQfD and its successors): a controller that
needs nothing but the policy's own observation (:func:`~edgeplane_traffic.observation.build_detector_observation`)
runs on ``train`` demand; its (observation, action) pairs and the discounted returns of the
training reward are recorded; the PPO policy is fitted to them by supervised learning
(cross-entropy on the actions, squared error of the value head on the returns, so PPO's first
update does not start from an untrained critic); PPO then fine-tunes it. The cloned policy is
checkpoint 0 of the run, compared on ``validation`` demand with the fine-tuned checkpoints, so
selection can only keep or improve the validation delay. Evaluation demand is never touched.

The teachers read only the observation vector, so a policy can copy them exactly:

* ``actuated``: gap-based actuated control over the stop-bar and advance loops. After the minimum
  green, the green is extended while the advance loops of the lanes it serves counted at least
  ``gap`` vehicles per lane in the observation's detector window (the last decision period, or the
  last few seconds, sliding, for a policy deciding every second or two) and the maximum green is not
  reached;
  then the next green in cyclic order whose lanes show demand (stop-bar presence or occupancy,
  advance occupancy) is called; with no demand elsewhere the green rests.
* ``max-pressure``: the green whose lanes show the most detector demand (stop-bar presence and
  occupancy plus advance occupancy and counts), held while its own demand is at least ``gap``
  times the strongest other green's. Out-lane counts, which textbook max-pressure uses, have no
  detector, so the downstream term is left out.
* ``max-pressure-lanes``: textbook max-pressure (vehicles on the lanes in minus on the lanes out,
  :func:`~edgeplane_traffic.control.max_pressure_choice`) read from the simulation: a privileged
  teacher ("learning by cheating") that only the recording sees; the policy still observes detectors
  only, so it copies it approximately, as far as detectors reveal the queues.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeplane_traffic.layout import IntersectionLayout
from edgeplane_traffic.observation import DETECTOR_COUNT_SCALE, read_detector_observation, served_lanes

__all__ = ["TEACHERS", "Demonstrations", "DetectorTeacher", "LaneMaxPressureTeacher", "behaviour_clone", "make_teacher",
           "record_demonstrations"]

TEACHERS = ("actuated", "max-pressure", "max-pressure-lanes")


class DetectorTeacher:
    """A controller that decides from the detector observation vector alone."""

    def __init__(self, layout: IntersectionLayout, kind: str, gap: float):
        if kind not in TEACHERS[:2]:
            raise ValueError(f"warm-start teacher {kind!r}: use one of {', '.join(TEACHERS)}")
        self.kind, self.gap = kind, float(gap)
        self.greens, self.lanes = layout.num_greens, len(layout.lanes)
        self.served = served_lanes(layout)

    def __call__(self, obs: np.ndarray) -> int:
        g_count = self.greens
        seen = read_detector_observation(obs, g_count, self.lanes)
        green, green_time = seen.green, seen.green_time
        if not seen.min_green_passed:
            return green
        occupied = seen.presence + seen.stop_bar_occupancy + seen.advance_occupancy
        if self.kind == "actuated":
            demand = self.served @ occupied
            lanes_served = max(1.0, float(self.served[green].sum()))
            if green_time < 1.0 and float(self.served[green] @ seen.advance_count) * DETECTOR_COUNT_SCALE >= self.gap * lanes_served:
                return green
            waiting = [g for g in range(g_count) if g != green and demand[g] > 0]
            if not waiting:
                return green
            return min(waiting, key=lambda g: (g - green) % g_count)
        demand = self.served @ (occupied + seen.advance_count)
        others = [g for g in range(g_count) if g != green]
        best = max(others, key=lambda g: demand[g])
        if green_time < 1.0 and demand[green] >= self.gap * demand[best]:
            return green
        return best if demand[best] > 0 else green


class LaneMaxPressureTeacher:
    """Max-pressure from whole-lane vehicle counts read from the running simulation (recording only)."""

    def __init__(self, layout: IntersectionLayout, conn: Any):
        self.layout, self.conn = layout, conn

    def __call__(self, obs: np.ndarray) -> int:
        from edgeplane_traffic.control import LaneReading, max_pressure_choice

        lanes = dict.fromkeys([*self.layout.lanes, *self.layout.out_lanes])
        readings = {lane: LaneReading(self.conn.lane.getLastStepVehicleNumber(lane)) for lane in lanes}
        return max_pressure_choice(self.layout, readings)


def make_teacher(kind: str, layout: IntersectionLayout, gap: float, conn: Any) -> Callable[[np.ndarray], int]:
    """The teacher ``kind`` for one signal; ``conn`` (libsumo/TraCI) is read by ``max-pressure-lanes`` only."""
    if kind == "max-pressure-lanes":
        return LaneMaxPressureTeacher(layout, conn)
    return DetectorTeacher(layout, kind, gap)


@dataclass
class Demonstrations:
    obs: np.ndarray  # [samples, observation size]
    actions: np.ndarray  # [samples]
    returns: np.ndarray  # discounted return of the training reward from each sample on
    episodes: int
    demand_seeds: list[int]  # the train patterns they were recorded on
    mean_return: float


def record_demonstrations(env: Any, teachers: list[Callable[[np.ndarray], int]], episodes: int, gamma: float,
                          seeds: Callable[[], list[int]], progress: bool = True,
                          actor: Callable[[np.ndarray], np.ndarray] | None = None) -> Demonstrations:
    """Run ``teachers`` (one per sub-environment of the SB3 ``VecEnv`` ``env``) for ``episodes`` episodes.

    With ``actor`` (DAgger), the actor's actions drive the simulation and the teachers only label the
    observations it reaches, so the clone learns the teacher's answer where the clone itself goes."""
    obs = env.reset()
    rows: list[list[tuple[np.ndarray, int, float]]] = [[] for _ in range(env.num_envs)]
    done_rows: list[list[tuple[np.ndarray, int, float]]] = []
    finished, returns_sum, running = 0, 0.0, np.zeros(env.num_envs)
    while finished < episodes:
        actions = np.array([teachers[k](obs[k]) for k in range(env.num_envs)], dtype=np.int64)
        taken = actions if actor is None else np.asarray(actor(obs), dtype=np.int64).reshape(-1)
        next_obs, rewards, dones, _ = env.step(taken)
        for k in range(env.num_envs):
            rows[k].append((np.asarray(obs[k], dtype=np.float32), int(actions[k]), float(rewards[k])))
            running[k] += float(rewards[k])
        if bool(np.all(dones)):
            finished += 1
            returns_sum += float(running.mean())
            running[:] = 0
            done_rows.extend(rows)
            rows = [[] for _ in range(env.num_envs)]
            if progress:
                print(f"{'demonstration' if actor is None else 'DAgger episode'} {finished}/{episodes}: "
                      f"mean return {returns_sum / finished:.1f}",
                      file=sys.stderr, flush=True)
        obs = next_obs
    all_obs, all_actions, all_returns = [], [], []
    for row in done_rows:
        g = 0.0
        back = []
        for _, _, reward in reversed(row):
            g = reward + gamma * g
            back.append(g)
        all_returns.extend(reversed(back))
        all_obs.extend(o for o, _, _ in row)
        all_actions.extend(a for _, a, _ in row)
    return Demonstrations(np.asarray(all_obs, dtype=np.float32), np.asarray(all_actions, dtype=np.int64),
                          np.asarray(all_returns, dtype=np.float32), finished, seeds(), returns_sum / max(1, finished))


def merge(a: Demonstrations, b: Demonstrations) -> Demonstrations:
    """Both sets of samples (DAgger's aggregation)."""
    return Demonstrations(np.concatenate([a.obs, b.obs]), np.concatenate([a.actions, b.actions]),
                          np.concatenate([a.returns, b.returns]), a.episodes + b.episodes, [*a.demand_seeds, *b.demand_seeds],
                          a.mean_return)


def behaviour_clone(model: Any, demos: Demonstrations, epochs: int, *, seed: int = 0, batch_size: int = 256,
                    learning_rate: float = 1e-3, value_weight: float = 0.5) -> dict[str, float]:
    """Fit an SB3 PPO policy to the demonstrations; return its final action agreement and value error."""
    import torch

    policy = model.policy
    policy.set_training_mode(True)
    optimizer = torch.optim.Adam(policy.parameters(), lr=learning_rate)
    obs = torch.as_tensor(demos.obs)
    actions = torch.as_tensor(demos.actions)
    returns = torch.as_tensor(demos.returns)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(max(0, epochs)):
        order = torch.randperm(len(obs), generator=generator)
        for start in range(0, len(obs), batch_size):
            idx = order[start:start + batch_size]
            values, log_prob, _ = policy.evaluate_actions(obs[idx], actions[idx])
            loss = -log_prob.mean() + value_weight * torch.nn.functional.mse_loss(values.flatten(), returns[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    policy.set_training_mode(False)
    with torch.no_grad():
        chosen, values, _ = policy(obs, deterministic=True)
        agreement = float((chosen == actions).float().mean())
        value_rmse = float(torch.sqrt(torch.nn.functional.mse_loss(values.flatten(), returns)))
    return {"action_agreement": round(agreement, 4), "value_rmse": round(value_rmse, 3), "samples": int(len(obs)),
            "epochs": int(epochs)}
