"""``edgeplane traffic train --shared``: one policy shared by every signal of a multi-signal net.

Parameter sharing, the usual way to train many intersections with one network: every signal of
the net is one sub-environment of a stable-baselines3 ``VecEnv`` over a single SUMO simulation
(libsumo). Each ``step`` takes one action per signal, runs ``DECISION_PERIOD`` seconds of
simulation with every signal behind its own :class:`~edgeplane_traffic.control.IntersectionController`
and shield (the timing of evaluation: 3 s yellow, 2 s all-red, 5-50 s green), and gives each signal
its own reward: minus (vehicles halted on its incoming lanes + its share of the vehicles waiting to
enter the network) / (10 x lanes), averaged over the period. An action lands at the signal's next
decision inside the period; during a clearance there is none, and the action has no effect.

Every signal must have the same structure (lanes in order, greens): the observation
(:func:`~edgeplane_traffic.observation.build_detector_observation`) then means the same thing at every
signal. Each episode is a new ``train`` demand pattern; checkpoints are compared on ``validation``
patterns with the policy at every signal (``evaluate --all-signals``); evaluation patterns are never
touched. The exported ``metadata.json`` lists the layout fingerprint of every signal it may serve.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from edgeplane_traffic.control import IntersectionController
from edgeplane_traffic.demand import demand_seed, generate_demand
from edgeplane_traffic.detectors import DetectorWindow, detector_layout, write_detectors
from edgeplane_traffic.layout import IntersectionLayout, signal_layouts
from edgeplane_traffic.nets import NetSpec
from edgeplane_traffic.shield import ShieldConfig
from edgeplane_traffic.training import DECISION_PERIOD, _check_export, export_onnx, policy_metadata

__all__ = ["controllable_signals", "shared_validation_delay", "train_shared"]


def controllable_signals(net: Path) -> list[IntersectionLayout]:
    """Every signal with two or more greens, checked to share one structure (else ValueError)."""
    layouts = signal_layouts(net)
    if len(layouts) < 2:
        raise ValueError(f"net {net} has {len(layouts)} controllable signal(s): a shared policy is for multi-signal nets")
    shapes = {(len(x.lanes), tuple(x.green_states)) for x in layouts}
    if len(shapes) > 1:
        raise ValueError(f"the signals of {net.name} differ in lanes or greens ({len(shapes)} structures): one shared "
                         f"policy needs one structure; train one policy per signal instead")
    return layouts


async def _gather(coroutines: list[Any]) -> list[Any]:
    return await asyncio.gather(*coroutines)


def _vec_env_class():  # type: ignore[no-untyped-def]
    from stable_baselines3.common.vec_env import VecEnv

    class SharedSignalsVecEnv(VecEnv):  # type: ignore[misc]
        """Each signal of one SUMO simulation is one sub-environment."""

        def __init__(self, spec: NetSpec, timing: ShieldConfig, first_index: int, seconds: int):
            os.environ.setdefault("LIBSUMO_AS_TRACI", "quiet")
            from edgeplane_traffic.sumo_runtime import sumo_binary, traci_module

            self.spec, self.timing, self.seconds, self.index = spec, timing, seconds, first_index
            self.layouts = controllable_signals(spec.net)
            self.detectors = [detector_layout(x, f"ep{k}") for k, x in enumerate(self.layouts)]
            self.traci = traci_module(prefer_libsumo=True)
            self.binary = sumo_binary()
            self.tmp = tempfile.TemporaryDirectory(prefix="edgeplane-train-shared-")
            self.det_file = Path(self.tmp.name) / "detectors.add.xml"
            write_detectors(self.det_file, self.detectors)
            first = self.layouts[0]
            self.render_mode = None
            super().__init__(len(self.layouts), gym.spaces.Box(0.0, 1.0, (first.observation_size_detectors,), dtype=np.float32),
                             gym.spaces.Discrete(first.num_greens))
            self.loop = asyncio.new_event_loop()
            self._open = False
            self._actions = np.zeros(self.num_envs, dtype=np.int64)
            self.episode_returns = np.zeros(self.num_envs)
            self.episodes: list[float] = []
            self.demand_seeds: list[int] = []  # the demand pattern of every episode run, in order

        def _start(self) -> None:
            if self._open:
                self.traci.close()
            seed = demand_seed("train", self.index)
            self.demand_seeds.append(seed)
            self.index += 1
            route = Path(self.tmp.name) / "demand.rou.xml"
            lanes = [lane for x in self.layouts for lane in x.lanes]
            generate_demand(self.spec.net, self.spec.route, route, begin=self.spec.begin, seconds=self.seconds, seed=seed,
                            signal_lanes=lanes)
            self.traci.start([self.binary, "-n", str(self.spec.net), "-r", str(route), "-a", str(self.det_file),
                              "-b", str(self.spec.begin), "--seed", str(seed % 100_000), "--no-step-log", "--no-warnings",
                              "--time-to-teleport", "-1", "--max-depart-delay", "-1"])
            self._open = True
            self.end = self.spec.begin + self.seconds
            self.windows = [DetectorWindow(d) for d in self.detectors]
            self.controllers = [IntersectionController(x, "rl", shield=self.timing, decision_period=DECISION_PERIOD,
                                                       infer=self._policy(k), observation="detectors", deadline=10.0)
                                for k, x in enumerate(self.layouts)]
            self.phase = [0] * self.num_envs
            self.elapsed = [0.0] * self.num_envs
            for x in self.layouts:
                self.traci.trafficlight.setRedYellowGreenState(x.tls, x.phase_states[0])
            self.episode_returns[:] = 0

        def _policy(self, k: int):  # type: ignore[no-untyped-def]
            greens = self.layouts[k].num_greens

            async def infer(obs: np.ndarray) -> np.ndarray:
                return np.eye(greens, dtype=np.float32)[int(self._actions[k])]

            return infer

        def _run(self, seconds: float) -> tuple[np.ndarray, bool]:
            conn = self.traci
            cost = np.zeros(self.num_envs)
            steps = 0
            done = False
            for _ in range(int(seconds)):
                if conn.simulation.getTime() >= self.end:
                    done = True
                    break
                conn.simulationStep()
                steps += 1
                now = conn.simulation.getTime()
                pending = len(conn.simulation.getPendingVehicles()) / self.num_envs
                ticks = []
                for k, x in enumerate(self.layouts):
                    self.windows[k].read(conn)
                    self.elapsed[k] += 1.0
                    cost[k] += sum(conn.lane.getLastStepHaltingNumber(lane) for lane in x.lanes) + pending
                    ticks.append(self.controllers[k].tick(now, self.phase[k], self.elapsed[k], {}, self.windows[k].snapshot()))
                outcomes = self.loop.run_until_complete(_gather(ticks))
                for k, outcome in enumerate(outcomes):
                    if outcome.decided:
                        self.windows[k].reset()
                    if outcome.command is not None and outcome.command != self.phase[k]:
                        self.phase[k], self.elapsed[k] = outcome.command, 0.0
                        x = self.layouts[k]
                        conn.trafficlight.setRedYellowGreenState(x.tls, x.phase_states[outcome.command])
            if conn.simulation.getTime() >= self.end:
                done = True
            scale = np.array([10.0 * len(x.lanes) for x in self.layouts])
            return -cost / max(1, steps) / scale, done

        def _observe(self) -> np.ndarray:
            out = []
            for k, ctl in enumerate(self.controllers):
                green = ctl.shield.current_green(self.phase[k])
                out.append(ctl.detector_observation(0 if green is None else green, self.elapsed[k], self.windows[k].snapshot()))
            return np.asarray(out, dtype=np.float32)

        def reset(self) -> np.ndarray:
            self._start()
            self._run(DECISION_PERIOD)
            return self._observe()

        def step_async(self, actions: np.ndarray) -> None:
            self._actions = np.asarray(actions).reshape(-1)

        def step_wait(self) -> Any:
            rewards, done = self._run(DECISION_PERIOD)
            self.episode_returns += rewards
            obs = self._observe()
            infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
            if done:
                for k in range(self.num_envs):
                    infos[k]["terminal_observation"] = obs[k]
                    infos[k]["episode"] = {"r": float(self.episode_returns[k]), "l": int(self.seconds / DECISION_PERIOD)}
                self.episodes.append(float(self.episode_returns.mean()))
                obs = self.reset()
            return obs, rewards.astype(np.float32), np.full(self.num_envs, done), infos

        def close(self) -> None:
            if self._open:
                self.traci.close()
                self._open = False
            self.loop.close()
            self.tmp.cleanup()

        def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
            return [getattr(self, attr_name)] * self.num_envs

        def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
            setattr(self, attr_name, value)

        def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
            return [None] * self.num_envs

        def env_is_wrapped(self, wrapper_class: Any, indices: Any = None) -> list[bool]:
            return [False] * self.num_envs

    return SharedSignalsVecEnv


def shared_validation_delay(spec: NetSpec, onnx_path: Path, timing: ShieldConfig, patterns: int, seconds: int) -> float:
    """Mean delay with the policy at every signal, over the first ``patterns`` validation demand patterns."""
    from edgeplane_traffic.evaluate import onnx_infer, run_episode

    layouts = controllable_signals(spec.net)
    infer = onnx_infer(onnx_path)
    delays = []
    with tempfile.TemporaryDirectory(prefix="edgeplane-validate-shared-") as tmp:
        for i in range(patterns):
            route = Path(tmp) / f"validation-{i}.rou.xml"
            generate_demand(spec.net, spec.route, route, begin=spec.begin, seconds=seconds, seed=demand_seed("validation", i),
                            signal_lanes=[lane for x in layouts for lane in x.lanes])
            result = run_episode(replace(spec, route=route, seconds=seconds), "rl", seed=demand_seed("validation", i) % 100_000,
                                 timing=timing, infer_for={x.tls: infer for x in layouts}, deadline=10.0, all_signals=True)
            delays.append(result.avg_delay_s)
    return float(np.mean(delays))


def train_shared(spec: NetSpec, steps: int, out: Path, *, seed: int = 0, timing: ShieldConfig | None = None,
                 episode_seconds: int | None = None, checkpoints: int = 4, validation_patterns: int = 2,
                 progress: bool = True, command: str | None = None, warm_start: str | None = None, teacher_gap: float = 1.0,
                 demonstrations: int = 2, bc_epochs: int = 30) -> dict[str, Any]:
    """PPO with one policy for every signal; ``steps`` counts decisions over all signals. Export the
    checkpoint with the lowest validation delay (``model.onnx`` + ``metadata.json``).

    ``warm_start``: first clone that detector controller (:mod:`.warm_start`) at every signal from
    ``demonstrations`` episodes on train demand; the clone is checkpoint 0."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.utils import set_random_seed

    timing = timing or ShieldConfig()
    torch.set_num_threads(1)
    set_random_seed(seed)
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    seconds = int(episode_seconds or spec.seconds)
    env = _vec_env_class()(spec, timing, seed * 10_000, seconds)
    layouts = env.layouts
    every = max(1, steps // max(1, checkpoints))
    saved: list[tuple[int, Path]] = []

    class Checkpoints(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps // every > sum(1 for n, _ in saved if n > 0) and self.num_timesteps <= steps + env.num_envs:
                path = ckpt_dir / f"step{self.num_timesteps}.zip"
                self.model.save(path)
                saved.append((int(self.num_timesteps), path))
            return True

    # n_steps per signal: one rollout of 16 signals x 128 decisions = 2,048 transitions
    if warm_start is None:
        model = PPO("MlpPolicy", env, n_steps=128, batch_size=256, n_epochs=5, learning_rate=3e-4, gamma=0.95, ent_coef=0.01,
                    policy_kwargs={"net_arch": [64, 64]}, seed=seed, verbose=0, device="cpu")
    else:
        # fine-tuning: small steps and a tight clip keep PPO near the cloned controller; no entropy bonus to undo it
        model = PPO("MlpPolicy", env, n_steps=128, batch_size=256, n_epochs=5, learning_rate=5e-5, clip_range=0.1,
                    gamma=0.95, ent_coef=0.0, policy_kwargs={"net_arch": [64, 64]}, seed=seed, verbose=0, device="cpu")
    started = time.time()
    warm: dict[str, Any] | None = None
    if warm_start is not None:
        from edgeplane_traffic.warm_start import behaviour_clone, make_teacher, record_demonstrations

        demo_env = _vec_env_class()(spec, timing, seed * 10_000 + 5_000, seconds)
        try:
            teachers = [make_teacher(warm_start, x, teacher_gap, demo_env.traci) for x in demo_env.layouts]
            demos = record_demonstrations(demo_env, teachers,
                                          demonstrations, model.gamma, lambda: demo_env.demand_seeds[:demonstrations],
                                          progress=progress)
        finally:
            demo_env.close()
        fit = behaviour_clone(model, demos, bc_epochs, seed=seed)
        if progress:
            print(f"behaviour cloning of {warm_start} (gap {teacher_gap:g}): {fit}", file=sys.stderr, flush=True)
        warm = {"teacher": warm_start, "teacher_gap": teacher_gap, "episodes": demos.episodes,
                "demand_seeds": demos.demand_seeds, "teacher_mean_return": round(demos.mean_return, 3), **fit}
        model.save(ckpt_dir / "step0.zip")
        saved.append((0, ckpt_dir / "step0.zip"))
    try:
        model.learn(total_timesteps=steps, callback=Checkpoints())
    finally:
        env.close()
    train_seconds = round(time.time() - started, 1)
    first = layouts[0]
    scores = []
    best: tuple[float, int, Path] | None = None
    for step_count, path in saved:
        candidate = PPO.load(path, device="cpu")
        onnx_path = ckpt_dir / f"step{step_count}.onnx"
        export_onnx(candidate, "ppo", first.observation_size_detectors, onnx_path)
        delay = shared_validation_delay(spec, onnx_path, timing, validation_patterns, seconds)
        scores.append({"timestep": step_count, "validation_avg_delay_s": round(delay, 2)})
        if progress:
            print(f"checkpoint {step_count}: validation delay {delay:.2f} s", file=sys.stderr, flush=True)
        if best is None or delay < best[0]:
            best = (delay, step_count, path)
    if best is None:
        raise RuntimeError(f"no checkpoint was saved in {steps} steps: raise --steps or lower --checkpoints")
    chosen = PPO.load(best[2], device="cpu")
    export_onnx(chosen, "ppo", first.observation_size_detectors, out / "model.onnx")
    agreement = _check_export(chosen, out / "model.onnx", first.observation_size_detectors, first.num_greens, seed)
    if agreement < 1.0:
        raise RuntimeError(f"the ONNX export disagrees with SB3 on {1 - agreement:.1%} of observations")
    import shutil

    shutil.rmtree(ckpt_dir, ignore_errors=True)
    metadata = policy_metadata(
        algo="ppo", steps=steps, seed=seed, spec=spec, validation_patterns=validation_patterns, seconds=seconds,
        reward="per signal: -(halted on its incoming lanes + waiting to enter / signals) / (10 x lanes), "
               "mean over the decision period",
        timing=timing, layout=first,
        training_curve=[{"episode": k, "mean_return": round(r, 3)} for k, r in enumerate(env.episodes)],
        validation=scores, selected_timestep=best[1], train_seconds=train_seconds, command=command,
        onnx_agreement=agreement)
    metadata.update(shared=True, signals=[x.tls for x in layouts],
                    layout_fingerprints={x.tls: x.fingerprint() for x in layouts}, warm_start=warm,
                    training_demand_seeds=env.demand_seeds,
                    validation_demand_seeds=[demand_seed("validation", i) for i in range(validation_patterns)])
    (out / "metadata.json").write_text(json.dumps(metadata, indent=1))
    return metadata
