"""``edgeplane traffic train``: a signal policy with stable-baselines3 on generated demand.

Needs the ``[training]`` extra (torch, stable-baselines3). The environment (:class:`SignalEnv`) runs
SUMO through libsumo with the same :class:`~edgeplane_traffic.control.IntersectionController`,
safety shield and timing as evaluation (yellow 3 s, all-red 2 s, minimum green 5 s, maximum green
50 s by default), decisions every ``decision_period`` s (5 by default; at 1-2 s each decision in a green
is "extend or end it", the shield still holding the minimum green and the clearances), and the detector-only observation
(:func:`~edgeplane_traffic.observation.build_detector_observation`). Every training episode is a new
``train`` demand pattern (:mod:`.demand`); checkpoints are compared on ``validation`` patterns only
and the best is exported. Evaluation patterns are never touched here.

The decision period and the detector window (the counts of the last ``detector_window`` s, sliding,
or, when None, since the previous decision) are recorded in the metadata's ``timing``: the host and
``traffic evaluate`` run a policy at its own cadence (:func:`~edgeplane_traffic.models.policy_cadence`).

Reward: minus the vehicles halted on the signal's incoming lanes plus the vehicles waiting to enter
the network, averaged over the decision period (a policy that blocks entry is not rewarded).

The output folder holds ``model.onnx`` (input ``obs`` [batch, n], output ``scores`` [batch, greens]:
Q-values for DQN, action logits for PPO; the controller takes the argmax) and ``metadata.json``
(layout, observation names, detector layout, timing, training curve, validation scores, the command).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from edgeplane_traffic.control import IntersectionController
from edgeplane_traffic.demand import demand_seed, generate_demand
from edgeplane_traffic.detectors import DetectorWindow, detector_layout, write_detectors
from edgeplane_traffic.layout import IntersectionLayout, layout_from_net
from edgeplane_traffic.models import DEFAULT_DECISION_PERIOD
from edgeplane_traffic.nets import NetSpec
from edgeplane_traffic.observation import detector_observation_names
from edgeplane_traffic.shield import ShieldConfig

__all__ = ["DECISION_PERIOD", "SignalEnv", "default_detector_window", "export_onnx", "train"]

DECISION_PERIOD = DEFAULT_DECISION_PERIOD  # s, unless ``train(decision_period=...)`` says otherwise
SHORT_PERIOD_WINDOW = 5  # s of detector readings a policy deciding more often than every 5 s sees


def default_detector_window(decision_period: float) -> int | None:
    """Since the previous decision at 5 s or more; a sliding 5 s below, so counts still show a gap in traffic."""
    return None if decision_period >= SHORT_PERIOD_WINDOW else SHORT_PERIOD_WINDOW


class SignalEnv(gym.Env):  # type: ignore[misc]
    """A gymnasium environment: one signal, one generated ``train`` demand pattern per episode."""

    def __init__(self, spec: NetSpec, layout: IntersectionLayout, timing: ShieldConfig, *, first_index: int = 0,
                 episode_seconds: int | None = None, split: str = "train", decision_period: float = DECISION_PERIOD,
                 detector_window: int | None = None):
        os.environ.setdefault("LIBSUMO_AS_TRACI", "quiet")
        from edgeplane_traffic.sumo_runtime import sumo_binary, traci_module

        self.spec, self.layout, self.timing, self.split = spec, layout, timing, split
        self.decision_period, self.detector_window = float(decision_period), detector_window
        self.seconds = int(episode_seconds or spec.seconds)
        self.index = first_index
        self.traci = traci_module(prefer_libsumo=True)
        self.binary = sumo_binary()
        self.detectors = detector_layout(layout, "ep0")
        self.tmp = tempfile.TemporaryDirectory(prefix="edgeplane-train-")
        self.det_file = Path(self.tmp.name) / "detectors.add.xml"
        write_detectors(self.det_file, [self.detectors])
        size = layout.observation_size_detectors
        self.observation_space = gym.spaces.Box(0.0, 1.0, (size,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(layout.num_greens)
        self._open = False
        self.loop = asyncio.new_event_loop()
        self.episode_delay: list[float] = []
        self.demand_seeds: list[int] = []  # the demand pattern of every episode run, in order

    def _start(self, seed: int) -> None:
        if self._open:
            self.traci.close()
        route = Path(self.tmp.name) / "demand.rou.xml"
        generate_demand(self.spec.net, self.spec.route, route, begin=self.spec.begin, seconds=self.seconds,
                        seed=seed, signal_lanes=self.layout.lanes)
        self.traci.start([self.binary, "-n", str(self.spec.net), "-r", str(route), "-a", str(self.det_file),
                          "-b", str(self.spec.begin), "--seed", str(seed % 100_000), "--no-step-log", "--no-warnings",
                          "--time-to-teleport", "-1", "--max-depart-delay", "-1"])
        self._open = True
        self.end = self.spec.begin + self.seconds
        self.window = DetectorWindow(self.detectors, self.detector_window)
        self.choice = 0
        self.ctl = IntersectionController(self.layout, "rl", shield=self.timing, decision_period=self.decision_period,
                                          infer=self._infer, observation="detectors", deadline=10.0)
        self.phase, self.elapsed = 0, 0.0
        self.traci.trafficlight.setRedYellowGreenState(self.layout.tls, self.layout.phase_states[0])

    async def _infer(self, obs: np.ndarray) -> np.ndarray:
        return np.eye(self.layout.num_greens, dtype=np.float32)[self.choice]

    def _advance(self, act: bool) -> tuple[float, bool]:
        """Step SUMO until the next decision is due (acting at the first tick when ``act``); return cost, done."""
        conn = self.traci
        cost, steps = 0.0, 0
        while True:
            if conn.simulation.getTime() >= self.end:
                return cost / max(1, steps), True
            conn.simulationStep()
            now = conn.simulation.getTime()
            self.elapsed += 1.0
            self.window.read(conn)
            halting = sum(conn.lane.getLastStepHaltingNumber(lane) for lane in self.layout.lanes)
            cost += halting + len(conn.simulation.getPendingVehicles())
            steps += 1
            if self.ctl.decision_due(now, self.phase) and not act:
                self._now = now
                return cost / max(1, steps), False
            outcome = self.loop.run_until_complete(self.ctl.tick(now, self.phase, self.elapsed, {}, self.window.snapshot()))
            if outcome.decided:
                act = False
                self.window.reset()
            if outcome.command is not None and outcome.command != self.phase:
                self.phase, self.elapsed = outcome.command, 0.0
                conn.trafficlight.setRedYellowGreenState(self.layout.tls, self.layout.phase_states[self.phase])

    def _observe(self) -> np.ndarray:
        green = self.ctl.shield.current_green(self.phase)
        return self.ctl.detector_observation(0 if green is None else green, self.elapsed, self.window.snapshot())

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
        self.demand_seeds.append(demand_seed(self.split, self.index))  # type: ignore[arg-type]
        self._start(self.demand_seeds[-1])
        self.index += 1
        self._advance(act=False)
        return self._observe(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.choice = int(action)
        # the decision due now is taken with this action; run to the next one
        cost, done = self._advance(act=True)
        reward = -cost / (10.0 * len(self.layout.lanes))
        return self._observe(), float(reward), False, done, {}

    def close(self) -> None:
        if self._open:
            self.traci.close()
            self._open = False
        self.loop.close()
        self.tmp.cleanup()



def export_onnx(model: Any, algo: str, obs_size: int, path: Path) -> None:
    """Export the policy's scores (Q-values or logits) to ONNX, IR 9 for onnxruntime 1.31."""
    import onnx
    import torch

    torch.distributions.Distribution.set_default_validate_args(False)
    policy = model.policy.to("cpu").eval()

    class Scores(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = policy

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            if algo == "dqn":
                return self.policy.q_net(obs)
            features = self.policy.extract_features(obs, self.policy.pi_features_extractor)
            return self.policy.action_net(self.policy.mlp_extractor.forward_actor(features))

    dummy = torch.zeros(1, obs_size, dtype=torch.float32)
    tmp = path.with_suffix(".tmp.onnx")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Scores(), dummy, str(tmp), input_names=["obs"], output_names=["scores"],
            dynamic_axes={"obs": {0: "batch"}, "scores": {0: "batch"}}, opset_version=17, dynamo=False,
        )
    proto = onnx.load(str(tmp))
    proto.ir_version = 9
    onnx.save(proto, str(path))
    tmp.unlink()


def _check_export(model: Any, path: Path, obs_size: int, greens: int, seed: int) -> float:
    """The fraction of random observations where ONNX's argmax equals SB3's action (must be 1.0)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    obs = rng.random((256, obs_size), dtype=np.float32)
    obs[:, :greens] = np.eye(greens, dtype=np.float32)[rng.integers(0, greens, 256)]
    ours = session.run(None, {"obs": obs})[0].argmax(axis=1)
    theirs, _ = model.predict(obs, deterministic=True)
    return float((ours == np.asarray(theirs)).mean())


def validation_delay(spec: NetSpec, onnx_path: Path, timing: ShieldConfig, patterns: int, seconds: int, *,
                     decision_period: float = DECISION_PERIOD, detector_window: int | None = None) -> float:
    """Mean RESCO delay of a policy over the first ``patterns`` validation demand patterns."""
    from dataclasses import replace

    from edgeplane_traffic.evaluate import onnx_infer, run_episode

    layout = layout_from_net(spec.net, spec.tls)
    delays = []
    with tempfile.TemporaryDirectory(prefix="edgeplane-validate-") as tmp:
        for i in range(patterns):
            route = Path(tmp) / f"validation-{i}.rou.xml"
            generate_demand(spec.net, spec.route, route, begin=spec.begin, seconds=seconds,
                            seed=demand_seed("validation", i), signal_lanes=layout.lanes)
            result = run_episode(replace(spec, route=route, seconds=seconds), "rl", seed=demand_seed("validation", i) % 100_000,
                                 timing=timing, infer=onnx_infer(onnx_path), deadline=10.0, decision_period=decision_period,
                                 detector_window=detector_window)
            delays.append(result.avg_delay_s)
    return float(np.mean(delays))


def train(
    spec: NetSpec,
    algo: str,
    steps: int,
    out: Path,
    *,
    seed: int = 0,
    timing: ShieldConfig | None = None,
    episode_seconds: int | None = None,
    checkpoints: int = 4,
    validation_patterns: int = 2,
    progress: bool = True,
    command: str | None = None,
    warm_start: str | None = None,
    teacher_gap: float = 1.0,
    demonstrations: int = 8,
    bc_epochs: int = 30,
    dagger: int = 0,
    fine_tune_lr: float = 5e-5,
    decision_period: float = DECISION_PERIOD,
    detector_window: int | None | str = "auto",
) -> dict[str, Any]:
    """Train, pick the checkpoint with the lowest validation delay, export ``model.onnx`` + ``metadata.json``.

    ``warm_start`` (PPO only): clone the detector controller of that name (:mod:`.warm_start`) from
    ``demonstrations`` episodes on train demand (plus ``dagger`` rounds of the clone driving and the
    teacher labelling, half as many episodes each), then fine-tune; the clone is checkpoint 0.

    ``decision_period`` (s) and ``detector_window`` (s of readings the counts span, sliding; None:
    since the previous decision; "auto": :func:`default_detector_window`) hold for the teacher, the
    policy, validation and the exported metadata."""
    import torch
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.utils import set_random_seed

    if algo not in ("ppo", "dqn"):
        raise ValueError(f"--algo {algo!r}: use ppo or dqn")
    if warm_start is not None and algo != "ppo":
        raise ValueError("--warm-start fine-tunes a PPO policy: add --algo ppo")
    timing = timing or ShieldConfig()
    if not 1.0 <= decision_period <= timing.max_green:
        raise ValueError(f"decision period {decision_period:g} s: give 1 s (SUMO's step) to the maximum green ({timing.max_green:g} s)")
    window = default_detector_window(decision_period) if detector_window == "auto" else detector_window
    if window is not None and (not isinstance(window, int) or window < 1):
        raise ValueError(f"detector window {window!r}: give whole seconds, 1 or more (or None: since the previous decision)")
    cadence: dict[str, Any] = {"decision_period": float(decision_period), "detector_window": window}
    # the discount per decision that keeps DQN's/PPO's horizon at 0.95 per 5 s whatever the period
    gamma = round(0.95 ** (decision_period / DECISION_PERIOD), 6)
    torch.set_num_threads(1)  # two shared cores: one for SUMO, one for torch
    set_random_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    layout = layout_from_net(spec.net, spec.tls)
    seconds = int(episode_seconds or spec.seconds)
    inner = SignalEnv(spec, layout, timing, first_index=seed * 10_000, episode_seconds=seconds, **cadence)
    env = Monitor(inner)
    curve: list[dict[str, float]] = []
    every = max(1, steps // max(1, checkpoints))
    saved: list[tuple[int, Path]] = []
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)

    class Progress(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                episode = info.get("episode")
                if episode:
                    curve.append({"timestep": int(self.num_timesteps), "return": float(episode["r"])})
            if self.num_timesteps % every == 0 and self.num_timesteps <= steps:
                path = ckpt_dir / f"step{self.num_timesteps}.zip"
                self.model.save(path)
                saved.append((int(self.num_timesteps), path))
            return True

    if algo == "dqn":
        model: Any = DQN(
            "MlpPolicy", env, learning_rate=5e-4, learning_starts=500, train_freq=1, target_update_interval=500,
            exploration_fraction=0.2, exploration_initial_eps=1.0, exploration_final_eps=0.02, buffer_size=50_000,
            batch_size=64, gamma=gamma, policy_kwargs={"net_arch": [64, 64]}, seed=seed, verbose=0, device="cpu",
        )
    elif warm_start is None:
        model = PPO("MlpPolicy", env, n_steps=min(720, steps), batch_size=64, n_epochs=10, learning_rate=3e-4, gamma=gamma,
                    ent_coef=0.01, policy_kwargs={"net_arch": [64, 64]}, seed=seed, verbose=0, device="cpu")
    else:
        # fine-tuning: small steps and a tight clip keep PPO near the cloned controller; no entropy bonus to undo it
        model = PPO("MlpPolicy", env, n_steps=min(720, max(64, steps)), batch_size=64, n_epochs=5, learning_rate=fine_tune_lr,
                    clip_range=0.1, gamma=gamma, ent_coef=0.0, policy_kwargs={"net_arch": [64, 64]}, seed=seed, verbose=0,
                    device="cpu")
    started = time.time()
    warm: dict[str, Any] | None = None
    if warm_start is not None:
        warm = _warm_start(model, spec, layout, timing, warm_start, teacher_gap, demonstrations, bc_epochs, seconds=seconds,
                           first_index=seed * 10_000 + 5_000, seed=seed, progress=progress, dagger=dagger, cadence=cadence)
        model.save(ckpt_dir / "step0.zip")
        saved.append((0, ckpt_dir / "step0.zip"))
    use_bar = progress and sys.stderr.isatty()
    try:
        model.learn(total_timesteps=steps, callback=Progress(), progress_bar=use_bar)
    finally:
        env.close()
    if not saved or saved[-1][0] < steps:
        model.save(ckpt_dir / f"step{steps}.zip")
        saved.append((steps, ckpt_dir / f"step{steps}.zip"))
    train_seconds = round(time.time() - started, 1)
    metadata = select_and_export(spec, algo, out, saved, timing=timing, seed=seed, steps=steps, seconds=seconds,
                                 validation_patterns=validation_patterns, curve=curve, train_seconds=train_seconds,
                                 command=command, progress=progress, warm_start=warm,
                                 training_demand_seeds=inner.demand_seeds, **cadence)
    return metadata


def _warm_start(model: Any, spec: NetSpec, layout: IntersectionLayout, timing: ShieldConfig, teacher: str, gap: float,
                episodes: int, epochs: int, *, seconds: int, first_index: int, seed: int, progress: bool,
                dagger: int = 0, cadence: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record the teacher on train demand (patterns from ``first_index``), clone it into ``model``."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from edgeplane_traffic.warm_start import behaviour_clone, make_teacher, merge, record_demonstrations

    demo_env = SignalEnv(spec, layout, timing, first_index=first_index, episode_seconds=seconds, split="train", **(cadence or {}))
    vec = DummyVecEnv([lambda: demo_env])
    rounds: list[dict[str, Any]] = []
    try:
        teacher_fn = make_teacher(teacher, layout, gap, demo_env.traci)
        demos = record_demonstrations(vec, [teacher_fn], episodes, model.gamma, lambda: demo_env.demand_seeds[:episodes],
                                      progress=progress)
        teacher_return = demos.mean_return
        fit = behaviour_clone(model, demos, epochs, seed=seed)
        rounds.append({"samples": fit["samples"], "action_agreement": fit["action_agreement"]})
        for r in range(dagger):
            # record_demonstrations resets first: its episodes are the patterns from the next one on
            start, count = len(demo_env.demand_seeds), max(1, episodes // 2)
            more = record_demonstrations(vec, [teacher_fn], count, model.gamma,
                                         lambda start=start, count=count: demo_env.demand_seeds[start:start + count],
                                         progress=progress, actor=lambda obs: model.predict(obs, deterministic=True)[0])
            rounds[-1]["clone_return"] = round(more.mean_return, 3)
            demos = merge(demos, more)
            fit = behaviour_clone(model, demos, epochs, seed=seed + r + 1)
            rounds.append({"samples": fit["samples"], "action_agreement": fit["action_agreement"]})
    finally:
        vec.close()
    if progress:
        print(f"behaviour cloning of {teacher} (gap {gap:g}): {fit}", file=sys.stderr, flush=True)
    return {"teacher": teacher, "teacher_gap": gap, "episodes": demos.episodes, "demand_seeds": demos.demand_seeds,
            "teacher_mean_return": round(teacher_return, 3), "dagger_rounds": rounds, **fit}


def policy_metadata(*, algo: str, steps: int, seed: int, spec: Any, validation_patterns: int, seconds: float,
                    reward: str, timing: Any, layout: Any, training_curve: list[dict[str, Any]],
                    validation: Any, selected_timestep: Any, train_seconds: float, command: str,
                    onnx_agreement: float, decision_period: float = DECISION_PERIOD,
                    detector_window: int | None = None) -> dict[str, Any]:
    """What a trained policy's ``metadata.json`` says (one signal's layout; the shared trainer adds its signals)."""
    return {
        "format": "edgeplane-traffic-policy/2",
        "algo": algo,
        "steps": steps,
        "seed": seed,
        "net": spec.name,
        "net_file": spec.net.name,
        "route_file": spec.route.name,
        "demand": f"generated: train patterns from {seed * 10_000} (one per episode), validation patterns 0..{validation_patterns - 1}",
        "begin": spec.begin,
        "episode_seconds": seconds,
        "reward": reward,
        # the cadence the policy was trained at: the host and evaluation run it at the same (models.policy_cadence)
        "timing": {**asdict(timing), "decision_period": decision_period, "detector_window": detector_window},
        "observation_kind": "detectors",
        "tls": layout.tls,
        "layout_fingerprint": layout.fingerprint(),
        "observation": detector_observation_names(layout),
        "detectors": detector_layout(layout).describe(),
        "phases": layout.green_states,
        "output": "scores: argmax is the green phase index",
        "layout": layout.to_dict(),
        "training_curve": training_curve,
        "validation": validation,
        "selected_timestep": selected_timestep,
        "train_seconds": train_seconds,
        "command": command,
        "onnx_agreement": onnx_agreement,
    }


def select_and_export(spec: NetSpec, algo: str, out: Path, saved: list[tuple[int, Path]], *, timing: ShieldConfig, seed: int,
                      steps: int, seconds: int, validation_patterns: int, curve: list[dict[str, float]],
                      train_seconds: float, command: str | None, progress: bool = True, note: str | None = None,
                      warm_start: dict[str, Any] | None = None, training_demand_seeds: list[int] | None = None,
                      decision_period: float = DECISION_PERIOD, detector_window: int | None = None) -> dict[str, Any]:
    """Compare the checkpoints ``saved`` ((step, SB3 zip)) on validation demand; export the best."""
    from stable_baselines3 import DQN, PPO

    layout = layout_from_net(spec.net, spec.tls)
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    # model selection on validation demand only
    cls = DQN if algo == "dqn" else PPO
    scores: list[dict[str, float]] = []
    best: tuple[float, int, Path] | None = None
    for step_count, path in saved:
        candidate = cls.load(path, device="cpu")
        onnx_path = ckpt_dir / f"step{step_count}.onnx"
        export_onnx(candidate, algo, layout.observation_size_detectors, onnx_path)
        delay = validation_delay(spec, onnx_path, timing, validation_patterns, seconds, decision_period=decision_period,
                                 detector_window=detector_window)
        scores.append({"timestep": step_count, "validation_avg_delay_s": round(delay, 2)})
        if progress:
            print(f"checkpoint {step_count}: validation delay {delay:.2f} s", file=sys.stderr)
        if best is None or delay < best[0]:
            best = (delay, step_count, path)
    assert best is not None
    chosen = cls.load(best[2], device="cpu")
    onnx_path = out / "model.onnx"
    export_onnx(chosen, algo, layout.observation_size_detectors, onnx_path)
    agreement = _check_export(chosen, onnx_path, layout.observation_size_detectors, layout.num_greens, seed)
    if agreement < 1.0:
        raise RuntimeError(f"the ONNX export disagrees with SB3 on {1 - agreement:.1%} of observations")
    import shutil

    shutil.rmtree(ckpt_dir, ignore_errors=True)
    metadata = policy_metadata(
        algo=algo, steps=steps, seed=seed, spec=spec, validation_patterns=validation_patterns, seconds=seconds,
        reward="-(halted on incoming lanes + waiting to enter) / (10 x lanes), mean over the decision period",
        timing=timing, layout=layout, training_curve=curve, validation=scores, selected_timestep=best[1],
        train_seconds=train_seconds, command=command, onnx_agreement=agreement, decision_period=decision_period,
        detector_window=detector_window)
    metadata["note"] = note
    metadata["warm_start"] = warm_start
    metadata["validation_demand_seeds"] = [demand_seed("validation", i) for i in range(validation_patterns)]
    if training_demand_seeds is not None:
        metadata["training_demand_seeds"] = training_demand_seeds
    (out / "metadata.json").write_text(json.dumps(metadata, indent=1))
    return metadata
