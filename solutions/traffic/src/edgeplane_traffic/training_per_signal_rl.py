"""``edgeplane traffic train --per-signal --fine-tune-from V``: PPO fine-tuning of per-signal policies.

The per-signal policies of a multi-signal net (:mod:`.training_per_signal`, ``traffic-<net>-<tls>/V``)
imitate a detector teacher. Here each is improved by reinforcement learning in one simulation of the
whole net, as PPO fine-tuning improved the cloned single-signal policies (:mod:`.training`).

Independent learners, all at once: every signal has its own stable-baselines3 PPO (its own observation
and action space, so one ``VecEnv`` cannot hold them), whose actor starts from the signal's shipped
policy (same 64-64 tanh network: the weights are copied) and whose critic is fitted first. The
simulation runs through the same :func:`~edgeplane_traffic.evaluate.run_episode` loop as evaluation
and the host (controller, shield, timing, detectors, cadence); at each decision of a signal its PPO
samples an action, and the transition it closes goes into that signal's own ``RolloutBuffer``; when
a buffer is full, that PPO's own ``train()`` runs (its clipped objective, epochs, minibatches). All
signals learn from every episode, each in the traffic the others make while they learn.

Reward (local, per signal, as the single-signal recipe's): minus the vehicles halted on the signal's
own incoming lanes, per simulated second, averaged over the decision period, / (10 x lanes). The
single-signal reward's "waiting to enter the network" term is net-wide and cannot be attributed to a
signal, so it is left out; evaluation still counts every vehicle due (``undeparted`` included).

Episodes run ``train`` demand patterns from index ``seed x 10,000 + 7,000`` (apart from the DAgger
stage's ``+ 5,000`` and the single-signal trainers' ``+ 0``). Before learning, one episode under the
starting policies fits every critic to the discounted returns it saw (an untrained critic would make
PPO's first updates noise). After each round (``steps / checkpoints`` simulated seconds, whole
episodes), every signal's policy is exported and the round is compared on the first
``validation_patterns`` ``validation`` patterns with all signals under that round's policies; round 0 is
the starting policies, so selection can only keep or improve the validation delay. Evaluation
patterns are never touched here.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from edgeplane_traffic.demand import demand_seed
from edgeplane_traffic.layout import IntersectionLayout, signal_layouts
from edgeplane_traffic.models import MODELS_DIR, PolicyFiles
from edgeplane_traffic.nets import NetSpec
from edgeplane_traffic.shield import ShieldConfig

__all__ = ["LOCAL_REWARD", "fine_tune_per_signal", "starting_policies"]

LOCAL_REWARD = "-(halted on the signal's own incoming lanes) / (10 x lanes), per simulated s, mean over the decision period"
FIRST_INDEX_OFFSET = 7_000  # train patterns of the fine-tuning stage: seed x 10,000 + this


class _Spaces(gym.Env):  # type: ignore[misc]
    """Only the spaces of one signal, for SB3's constructor: the simulation is driven by run_episode."""

    def __init__(self, layout: IntersectionLayout):
        self.observation_space = gym.spaces.Box(0.0, 1.0, (layout.observation_size_detectors,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(layout.num_greens)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
        raise RuntimeError("the per-signal fine-tuning drives the simulation itself; this environment only declares spaces")

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        raise RuntimeError("the per-signal fine-tuning drives the simulation itself; this environment only declares spaces")


def starting_policies(spec: NetSpec, version: str, layouts: list[IntersectionLayout],
                      root: Path = MODELS_DIR) -> dict[str, PolicyFiles]:
    """The shipped ``traffic-<net>-<tls>/<version>`` of every signal; a clear error when one is missing or differs."""
    found: dict[str, PolicyFiles] = {}
    for x in layouts:
        folder = root / f"traffic-{spec.name}-{x.tls}" / version
        try:
            found[x.tls] = PolicyFiles(folder)
        except FileNotFoundError:
            raise ValueError(f"signal {x.tls}: no policy traffic-{spec.name}-{x.tls}/{version} in {root}; train one with "
                             f"'edgeplane traffic train --net {spec.name} --per-signal' or give another --fine-tune-from") from None
        if found[x.tls].metadata.get("layout_fingerprint") != x.fingerprint():
            raise ValueError(f"signal {x.tls}: traffic-{spec.name}-{x.tls}/{version} was trained on another layout of the signal "
                             f"(fingerprint {found[x.tls].metadata.get('layout_fingerprint')} != {x.fingerprint()})")
    cadences = {(p.decision_period, p.detector_window) for p in found.values()}
    if len(cadences) != 1:
        raise ValueError(f"the signals' /{version} policies were trained at different cadences {sorted(cadences, key=str)}: "
                         "fine-tune policies of one training run")
    return found


def _copy_actor(model: Any, onnx_path: Path) -> None:
    """Copy a per-signal ONNX MLP (Gemm-tanh-Gemm-tanh-Gemm, initializers 0/2/4.weight|bias) into PPO's actor."""
    import onnx
    import torch
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(onnx_path)).graph.initializer}
    policy = model.policy
    targets = [(policy.mlp_extractor.policy_net[0], "0"), (policy.mlp_extractor.policy_net[2], "2"), (policy.action_net, "4")]
    with torch.no_grad():
        for layer, key in targets:
            w, b = weights.get(f"{key}.weight"), weights.get(f"{key}.bias")
            if w is None or b is None or tuple(w.shape) != tuple(layer.weight.shape):
                raise ValueError(f"{onnx_path}: not a 64-64 tanh per-signal policy (layer {key} missing or of another shape)")
            layer.weight.copy_(torch.as_tensor(np.array(w)))
            layer.bias.copy_(torch.as_tensor(np.array(b)))


@dataclass
class _Learner:
    """One signal's PPO and the transition its last decision opened."""

    layout: IntersectionLayout
    model: Any
    mode: str = "learn"  # "critic": record (obs, reward) for the critic fit; "learn": PPO; "act": argmax only
    pending: tuple[np.ndarray, int, Any, Any] | None = None
    cost: float = 0.0
    steps: int = 0
    episode_start: bool = True
    updates: int = 0
    critic_obs: list[np.ndarray] = field(default_factory=list)
    critic_rewards: list[list[float]] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)

    def _reward(self) -> float:
        return -self.cost / max(1, self.steps) / (10.0 * len(self.layout.lanes))

    def decide(self, obs: np.ndarray) -> int:
        import torch

        obs = np.asarray(obs, dtype=np.float32).reshape(1, -1)
        with torch.no_grad():
            action, value, log_prob = self.model.policy(torch.as_tensor(obs), deterministic=self.mode == "act")
        if self.pending is not None:
            self._close(self._reward(), value, episode_over=False)
        self.pending = (obs, int(action[0]), value, log_prob)
        self.cost, self.steps = 0.0, 0
        if self.mode == "critic":
            self.critic_obs.append(obs[0])
        return int(action[0])

    def _close(self, reward: float, next_value: Any, *, episode_over: bool) -> None:
        assert self.pending is not None
        obs, action, value, log_prob = self.pending
        self.rewards.append(reward)
        if self.mode == "critic":
            self.critic_rewards[-1].append(reward)
        elif self.mode == "learn":
            if episode_over:  # a time limit, not a terminal state: bootstrap as SB3 does for truncation
                reward += float(self.model.gamma) * float(value)
            buffer = self.model.rollout_buffer
            buffer.add(obs, np.array([action]), np.array([reward], dtype=np.float32), np.array([self.episode_start]),
                       value, log_prob)
            self.episode_start = episode_over
            if buffer.full:
                buffer.compute_returns_and_advantage(last_values=next_value, dones=np.array([episode_over]))
                self.model.train()
                self.updates += 1
                buffer.reset()
        self.pending = None

    def start_episode(self) -> None:
        self.pending, self.cost, self.steps, self.episode_start = None, 0.0, 0, True
        if self.mode == "critic":
            self.critic_rewards.append([])

    def end_episode(self) -> None:
        if self.pending is not None:
            self._close(self._reward(), self.pending[2], episode_over=True)


def _fit_critic(model: Any, obs: list[np.ndarray], episodes: list[list[float]], epochs: int, seed: int) -> float:
    """Fit the value head to the discounted returns of the critic episodes (the actor is frozen); return the RMSE."""
    import torch

    returns: list[float] = []
    for rewards in episodes:
        g, back = 0.0, []
        for r in reversed(rewards):
            g = r + float(model.gamma) * g
            back.append(g)
        returns.extend(reversed(back))
    n = min(len(obs), len(returns))
    x = torch.as_tensor(np.asarray(obs[:n], dtype=np.float32))
    y = torch.as_tensor(np.asarray(returns[:n], dtype=np.float32))
    policy = model.policy
    params = [*policy.mlp_extractor.value_net.parameters(), *policy.value_net.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, 256):
            idx = order[start:start + 256]
            loss = torch.nn.functional.mse_loss(policy.predict_values(x[idx]).flatten(), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return float(torch.sqrt(torch.nn.functional.mse_loss(policy.predict_values(x).flatten(), y))) if n else 0.0


def _run(spec: NetSpec, split: str, index: int, folder: Path, layouts: list[IntersectionLayout], timing: ShieldConfig,
         learners: dict[str, _Learner], decision_period: float, detector_window: int | None) -> float:
    """One episode of pattern (split, index) with every signal deciding through its learner; return the delay."""
    from dataclasses import replace

    from edgeplane_traffic.demand import generate_demand
    from edgeplane_traffic.evaluate import run_episode
    from edgeplane_traffic.sumo_runtime import traci_module

    seed = demand_seed(split, index)  # type: ignore[arg-type]
    route = folder / f"{split}-{index}.rou.xml"
    generate_demand(spec.net, spec.route, route, begin=spec.begin, seconds=spec.seconds, seed=seed,
                    signal_lanes=[lane for x in layouts for lane in x.lanes])
    sumo = traci_module()  # run_episode's own binding: libsumo is one simulation per process, read here per step

    def policy(learner: _Learner) -> Any:
        eye = np.eye(learner.layout.num_greens, dtype=np.float32)

        async def infer(obs: np.ndarray) -> np.ndarray:
            return eye[learner.decide(obs)]

        return infer

    def on_step(now: float, outcome: Any) -> None:
        for learner in learners.values():
            learner.cost += sum(sumo.lane.getLastStepHaltingNumber(lane) for lane in learner.layout.lanes)
            learner.steps += 1

    for learner in learners.values():
        learner.start_episode()
    result = run_episode(replace(spec, route=route), "rl", seed=seed % 100_000, timing=timing, deadline=10.0,
                         infer_for={tls: policy(learner) for tls, learner in learners.items()}, all_signals=True,
                         decision_period=decision_period, detector_window=detector_window, on_step=on_step)
    for learner in learners.values():
        learner.end_episode()
    return float(result.avg_delay_s)


def fine_tune_per_signal(spec: NetSpec, out: Path, *, start_version: str = "1", steps: int = 36_000, checkpoints: int = 4,
                         learning_rate: float = 5e-5, n_steps: int = 512, validation_patterns: int = 3, seed: int = 0,
                         timing: ShieldConfig | None = None, critic_epochs: int = 20, command: str | None = None,
                         models_root: Path = MODELS_DIR, progress: bool = True) -> dict[str, Any]:
    """Fine-tune every signal's ``traffic-<net>-<tls>/<start_version>`` with its own PPO in one simulation of the
    net; write ``out/<tls>/`` (``model.onnx`` + ``metadata.json``) of the round best on validation and
    ``out/summary.json``; return the summary.

    ``steps``: simulated seconds of PPO training (whole episodes), in ``checkpoints`` rounds."""
    if checkpoints < 1 or steps < 1:
        raise ValueError(f"--steps {steps} / --checkpoints {checkpoints}: give at least one simulated second and one round")
    started = time.time()
    layouts = signal_layouts(spec.net)
    start = starting_policies(spec, start_version, layouts, models_root)  # before the slow imports: a wrong version fails fast

    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.utils import set_random_seed

    from edgeplane_traffic.training import _check_export, export_onnx, policy_metadata
    from edgeplane_traffic.training_per_signal import _episode, _onnx_actor

    timing = timing or ShieldConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    decision_period, detector_window = next(iter(start.values())).decision_period, next(iter(start.values())).detector_window
    gamma = round(0.95 ** (decision_period / 5.0), 6)  # the single-signal trainer's horizon: 0.95 per 5 s
    episodes_per_round = max(1, math.ceil(steps / checkpoints / spec.seconds))
    torch.set_num_threads(1)
    set_random_seed(seed)
    learners: dict[str, _Learner] = {}
    for k, x in enumerate(layouts):
        model = PPO("MlpPolicy", _Spaces(x), n_steps=n_steps, batch_size=64, n_epochs=5, learning_rate=learning_rate,
                    clip_range=0.1, gamma=gamma, ent_coef=0.0, policy_kwargs={"net_arch": [64, 64]}, seed=seed + k, verbose=0,
                    device="cpu")
        model.set_logger(configure(None, [""]))
        _copy_actor(model, start[x.tls].onnx)
        learners[x.tls] = _Learner(x, model)
    next_index = seed * 10_000 + FIRST_INDEX_OFFSET
    train_indices: list[int] = []
    rounds: list[dict[str, Any]] = []

    def say(text: str) -> None:
        if progress:
            print(text, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="edgeplane-fine-tune-per-signal-") as tmp_name:
        tmp = Path(tmp_name)

        def checkpoint(r: int, source: dict[str, Path] | None = None) -> dict[str, Any]:
            folder = tmp / f"round{r}"
            folder.mkdir()
            for k, x in enumerate(layouts):
                path = folder / f"{k}.onnx"
                if source is not None:
                    shutil.copyfile(source[x.tls], path)
                    continue
                export_onnx(learners[x.tls].model, "ppo", x.observation_size_detectors, path)
                if _check_export(learners[x.tls].model, path, x.observation_size_detectors, x.num_greens, seed) < 1.0:
                    raise RuntimeError(f"signal {x.tls}: the ONNX export disagrees with the PPO policy")
            actors = {x.tls: _onnx_actor(folder / f"{k}.onnx") for k, x in enumerate(layouts)}
            delays = [_episode(spec, "validation", i, tmp, layouts, timing, actors, None, None, decision_period, detector_window)
                      for i in range(validation_patterns)]
            return {"round": r, "validation_avg_delay_s": round(float(np.mean(delays)), 2),
                    "validation_per_pattern_s": [round(d, 2) for d in delays]}

        rounds.append({**checkpoint(0, {tls: p.onnx for tls, p in start.items()}), "episodes": 0, "updates": 0})
        say(f"round 0 (the /{start_version} policies): validation delay {rounds[0]['validation_avg_delay_s']:.2f} s")
        for learner in learners.values():
            learner.mode = "critic"
        train_indices.append(next_index)
        next_index += 1
        delay = _run(spec, "train", train_indices[-1], tmp, layouts, timing, learners, decision_period, detector_window)
        critic_rmse = {}
        for k, (tls, learner) in enumerate(learners.items()):
            critic_rmse[tls] = round(_fit_critic(learner.model, learner.critic_obs, learner.critic_rewards, critic_epochs,
                                                 seed + k), 4)
            learner.mode = "learn"
        say(f"critic episode (train pattern {train_indices[-1]}): delay {delay:.2f} s, value RMSE <= {max(critic_rmse.values()):.3f}")
        for r in range(1, checkpoints + 1):
            train_delays = []
            for _ in range(episodes_per_round):
                train_indices.append(next_index)
                next_index += 1
                for learner in learners.values():
                    learner.rewards = []
                train_delays.append(_run(spec, "train", train_indices[-1], tmp, layouts, timing, learners, decision_period,
                                         detector_window))
                say(f"round {r} episode (train pattern {train_indices[-1]}): delay {train_delays[-1]:.2f} s, "
                    f"updates {sum(x.updates for x in learners.values())}")
            row = checkpoint(r)
            row.update(episodes=episodes_per_round, train_avg_delay_s=round(float(np.mean(train_delays)), 2),
                       updates={tls: x.updates for tls, x in learners.items()},
                       mean_reward={tls: round(float(np.mean(x.rewards)) if x.rewards else 0.0, 4) for tls, x in learners.items()})
            rounds.append(row)
            say(f"round {r}: validation delay {row['validation_avg_delay_s']:.2f} s {row['validation_per_pattern_s']}")
        best = min(rounds, key=lambda row: row["validation_avg_delay_s"])
        train_seconds = round(time.time() - started, 1)
        fine_tune = {"from": f"traffic-{spec.name}-<tls>/{start_version}", "algo": "ppo", "learners": "independent, one PPO per signal",
                     "rounds": checkpoints, "episodes_per_round": episodes_per_round, "critic_episodes": 1,
                     "critic_epochs": critic_epochs, "critic_rmse": critic_rmse, "learning_rate": learning_rate,
                     "n_steps": n_steps, "batch_size": 64, "n_epochs": 5, "clip_range": 0.1, "gamma": gamma, "ent_coef": 0.0}
        seeds = [demand_seed("train", i) for i in train_indices]
        for k, x in enumerate(layouts):
            target = out / x.tls
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp / f"round{best['round']}" / f"{k}.onnx", target / "model.onnx")
            meta = policy_metadata(
                algo="ppo" if best["round"] > 0 else "dagger", steps=(len(train_indices) - 1) * spec.seconds, seed=seed,
                spec=spec, validation_patterns=validation_patterns, seconds=spec.seconds, reward=LOCAL_REWARD, timing=timing,
                layout=x, training_curve=[{"round": row["round"], "train_avg_delay_s": row.get("train_avg_delay_s"),
                                           "mean_reward": (row.get("mean_reward") or {}).get(x.tls)} for row in rounds[1:]],
                validation=[{k2: v for k2, v in row.items() if k2 not in ("updates", "mean_reward")} for row in rounds],
                selected_timestep=best["round"], train_seconds=train_seconds, command=command or "", onnx_agreement=1.0,
                decision_period=decision_period, detector_window=detector_window)
            meta.update(per_signal=True, signals=[y.tls for y in layouts], fine_tune=fine_tune,
                        warm_start=start[x.tls].metadata.get("warm_start"),
                        start_command=start[x.tls].metadata.get("command"),
                        training_demand_seeds=seeds,
                        validation_demand_seeds=[demand_seed("validation", i) for i in range(validation_patterns)])
            (target / "metadata.json").write_text(json.dumps(meta, indent=1))
    summary = {"net": spec.name, "signals": [x.tls for x in layouts], "from_version": start_version, "rounds": rounds,
               "selected_round": best["round"], "critic_rmse": critic_rmse, "train_seconds": train_seconds,
               "decision_period": decision_period, "detector_window": detector_window, "command": command}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def fine_tune_per_signal_command(spec: NetSpec, out: Path, *, start_version: str, timing: ShieldConfig, steps: int,
                                 checkpoints: int, learning_rate: float, validation_patterns: int, seed: int,
                                 as_json: bool) -> None:
    """``edgeplane traffic train --per-signal --fine-tune-from V``: check the options, fine-tune, print the rounds."""
    import shlex

    import click

    if checkpoints < 1:
        raise click.BadParameter(f"{checkpoints}: give one round or more", param_hint="--checkpoints")
    if steps < 1:
        raise click.BadParameter(f"{steps}: give the simulated seconds of training (> 0)", param_hint="--steps")
    if validation_patterns < 1:
        raise click.BadParameter(f"{validation_patterns}: compare rounds on one validation pattern or more",
                                 param_hint="--validation-patterns")
    command = "edgeplane traffic train " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if len(sys.argv) > 3 else None
    try:
        summary = fine_tune_per_signal(spec, out, start_version=start_version, steps=steps, checkpoints=checkpoints,
                                       learning_rate=learning_rate, validation_patterns=validation_patterns, seed=seed,
                                       timing=timing, command=command)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--fine-tune-from") from None
    click.echo(f"{'net':<22}{summary['net']} ({len(summary['signals'])} signals, one PPO each, from /{start_version})")
    for row in summary["rounds"]:
        click.echo(f"{'validation @ round ' + str(row['round']):<22}{row['validation_avg_delay_s']:.2f} s")
    click.echo(f"{'selected':<22}round {summary['selected_round']}")
    click.echo(f"{'train time':<22}{summary['train_seconds']} s")
    click.echo(f"{'output':<22}{out}/<signal>/model.onnx, metadata.json")
    if as_json:
        click.echo(json.dumps(summary))
