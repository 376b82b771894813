"""``edgeplane traffic train``: a signal policy with stable-baselines3 on SUMO through sumo-rl.

Needs the ``[training]`` extra (torch, stable-baselines3). The environment is sumo-rl's
single-agent ``SumoEnvironment`` with the observation built by
:func:`edgeplane_traffic.observation.build_observation` (the function the field controller uses),
decisions every 5 s, 2 s yellow, 5 s minimum green, reward: change in accumulated waiting time.
Each episode gets its own SUMO seed (``seed + episode``), so the policy sees varied demand.

The output folder holds ``model.onnx`` (input ``obs`` [batch, n], output ``scores`` [batch, greens]:
Q-values for DQN, action logits for PPO; the controller takes the argmax) and ``metadata.json``
(layout, observation names, phases, timing, training curve, the command that made it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeplane_traffic.layout import IntersectionLayout, layout_from_net
from edgeplane_traffic.nets import NetSpec
from edgeplane_traffic.observation import make_layout_observation

__all__ = ["TIMING", "export_onnx", "make_env", "train"]

# the signal timing the policy is trained under; the shield uses the same by default
TIMING = {"delta_time": 5, "yellow_time": 2, "min_green": 5, "max_green": 50}


def make_env(spec: NetSpec, layout: IntersectionLayout, seed: int, episode_seconds: int | None = None,
             reward: str = "diff-waiting-time") -> Any:
    os.environ.setdefault("LIBSUMO_AS_TRACI", "quiet")
    from edgeplane_traffic.sumo_runtime import ensure_sumo_home

    ensure_sumo_home()
    import gymnasium as gym
    import sumo_rl

    env = sumo_rl.SumoEnvironment(
        net_file=str(spec.net),
        route_file=str(spec.route),
        single_agent=True,
        begin_time=spec.begin,
        num_seconds=episode_seconds or spec.seconds,
        observation_class=make_layout_observation(layout),
        reward_fn=reward,
        sumo_seed=seed,
        sumo_warnings=False,
        additional_sumo_cmd="--no-step-log",
        add_per_agent_info=False,
        **TIMING,
    )

    class SeedPerEpisode(gym.Wrapper):
        """Gives every episode its own SUMO seed, reproducibly."""

        def __init__(self, inner: Any):
            super().__init__(inner)
            self.episode = 0

        def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
            self.episode += 1
            return self.env.reset(seed=seed if seed is not None else spec_seed + self.episode - 1)

    spec_seed = seed
    return SeedPerEpisode(env)


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


def train(
    spec: NetSpec,
    algo: str,
    steps: int,
    out: Path,
    *,
    seed: int = 0,
    episode_seconds: int | None = None,
    progress: bool = True,
    command: str | None = None,
    reward: str = "diff-waiting-time",
) -> dict[str, Any]:
    """Train, export ``model.onnx`` + ``metadata.json`` into ``out``; return the metadata."""
    import torch
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.utils import set_random_seed

    if algo not in ("ppo", "dqn"):
        raise ValueError(f"--algo {algo!r}: use ppo or dqn")
    torch.set_num_threads(1)  # two shared cores: one for SUMO, one for torch
    set_random_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    layout = layout_from_net(spec.net, spec.tls)
    env = Monitor(make_env(spec, layout, seed, episode_seconds, reward))

    curve: list[dict[str, float]] = []

    class Curve(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                episode = info.get("episode")
                if episode:
                    curve.append({"timestep": int(self.num_timesteps), "return": float(episode["r"]),
                                  "mean_waiting_s": float(info.get("system_mean_waiting_time", float("nan")))})
            return True

    if algo == "dqn":
        model = DQN(
            "MlpPolicy", env, learning_rate=1e-3, learning_starts=0, train_freq=1, target_update_interval=500,
            exploration_initial_eps=0.05, exploration_final_eps=0.01, buffer_size=50_000, seed=seed, verbose=0,
            device="cpu",
        )
    else:
        model = PPO(
            "MlpPolicy", env, n_steps=720, batch_size=120, n_epochs=10, learning_rate=3e-4, gamma=0.99,
            ent_coef=0.01, seed=seed, verbose=0, device="cpu",
        )
    started = time.time()
    use_bar = progress and sys.stderr.isatty()
    try:
        model.learn(total_timesteps=steps, callback=Curve(), progress_bar=use_bar)
    finally:
        env.close()
    if progress and not use_bar:
        print(f"trained {steps} steps in {time.time() - started:.0f} s", file=sys.stderr)
    model.save(out / "sb3_model.zip")
    onnx_path = out / "model.onnx"
    export_onnx(model, algo, layout.observation_size, onnx_path)
    agreement = _check_export(model, onnx_path, layout.observation_size, layout.num_greens, seed)
    if agreement < 1.0:
        raise RuntimeError(f"the ONNX export disagrees with SB3 on {1 - agreement:.1%} of observations")
    metadata = {
        "format": "edgeplane-traffic-policy/1",
        "algo": algo,
        "steps": steps,
        "seed": seed,
        "net": spec.name,
        "net_file": spec.net.name,
        "route_file": spec.route.name,
        "begin": spec.begin,
        "episode_seconds": episode_seconds or spec.seconds,
        "reward": reward,
        "timing": TIMING,
        "tls": layout.tls,
        "layout_fingerprint": layout.fingerprint(),
        "observation": layout.observation_names(),
        "phases": layout.green_states,
        "output": "scores: argmax is the green phase index",
        "layout": layout.to_dict(),
        "training_curve": curve,
        "train_seconds": round(time.time() - started, 1),
        "command": command,
        "onnx_agreement": agreement,
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=1))
    return metadata
