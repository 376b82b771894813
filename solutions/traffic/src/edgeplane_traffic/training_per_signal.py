"""``edgeplane traffic train --per-signal``: one small policy per signal of a multi-signal net.

RESCO's city nets (cologne8, ingolstadt7) have signals of different structures (2-4 greens, 2-12
incoming lanes), so one shared network (:mod:`.training_shared`) cannot serve them. Here every
signal gets its own policy (its own ``model.onnx``, input ``obs`` of that signal's detector
observation, output ``scores`` over its greens), all trained together in one simulation of the
whole net, so each learns in the traffic the others make.

How (imitation with DAgger, as the single-signal warm start does for one signal):

1. a detector teacher (:class:`GapOutPressureTeacher`) runs at every signal on ``train`` demand,
   through the same :func:`~edgeplane_traffic.evaluate.run_episode` loop (controller, shield,
   timing, detectors, decision cadence) that evaluation and the host run; its (observation,
   green) pairs are recorded per signal;
2. one MLP per signal is fitted to them (cross-entropy);
3. DAgger rounds: the clones drive every signal on a new train pattern, the teachers label the
   observations the clones reach, each clone is refitted on everything recorded;
4. the clone of every round is compared on ``validation`` demand with all signals under their
   clones; the best round is exported. Evaluation patterns are never touched.

There is no reinforcement-learning step here: the policies are trained by imitation, and the
metadata says so (``algo: dagger``). :mod:`.training_per_signal_rl` (``--fine-tune-from V``)
fine-tunes them afterwards with one PPO per signal in one simulation of the net.

The teacher: gap-out actuation with a pressure-ordered call, from detectors only. After the minimum
green, a green is extended while the advance loops of its lanes counted at least ``gap`` vehicles
in the detector window (a gap-out, as SUMO's actuated control ends a green when vehicles stop
arriving) and the maximum green is not reached; then the green with the most detector demand
(stop-bar presence and occupancy, advance occupancy and counts) on lanes the current green does
not serve is called; with none, the green rests. Counting only lanes the current green does not
serve matters where greens overlap (a permissive left is served by the main green and by its
protected arrow): the vehicles being served now are not a call for another green.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeplane_traffic.demand import demand_seed, generate_demand
from edgeplane_traffic.layout import IntersectionLayout, signal_layouts
from edgeplane_traffic.nets import NetSpec
from edgeplane_traffic.observation import DETECTOR_COUNT_SCALE, read_detector_observation, served_lanes
from edgeplane_traffic.shield import ShieldConfig

__all__ = ["PER_SIGNAL_TEACHER", "GapOutPressureTeacher", "per_signal_model_name", "train_per_signal"]

PER_SIGNAL_TEACHER = "gap-out-pressure"


def per_signal_model_name(net_name: str, tls: str) -> str:
    """The registry name suffix of one signal's policy: ``traffic-<net>-<tls>`` is the model's name."""
    return f"{net_name}-{tls}"


class GapOutPressureTeacher:
    """Gap-out actuation with a pressure-ordered call, deciding from the detector observation alone."""

    def __init__(self, layout: IntersectionLayout, gap: float):
        if gap <= 0:
            raise ValueError(f"teacher gap {gap:g}: give the vehicles (> 0) that must cross the advance loops to extend a green")
        self.gap = float(gap)
        self.greens, self.lanes = layout.num_greens, len(layout.lanes)
        self.served = served_lanes(layout)

    def __call__(self, obs: np.ndarray) -> int:
        seen = read_detector_observation(obs, self.greens, self.lanes)
        green = seen.green
        if not seen.min_green_passed:
            return green
        if seen.green_time < 1.0 and float(self.served[green] @ seen.advance_count) * DETECTOR_COUNT_SCALE >= self.gap:
            return green
        lane_demand = seen.presence + seen.stop_bar_occupancy + seen.advance_occupancy + seen.advance_count
        waiting = np.clip(self.served - self.served[green], 0.0, 1.0) @ lane_demand
        waiting[green] = -1.0
        best = int(np.argmax(waiting))
        return best if waiting[best] > 0 else green


@dataclass
class _Samples:
    obs: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


def _episode(spec: NetSpec, split: str, index: int, folder: Path, layouts: list[IntersectionLayout], timing: ShieldConfig,
             actors: dict[str, Callable[[np.ndarray], int]], teachers: dict[str, Callable[[np.ndarray], int]] | None,
             samples: dict[str, _Samples] | None, decision_period: float, detector_window: int | None) -> float:
    """One episode on pattern (split, index) with ``actors`` deciding at every signal; return its delay.

    With ``teachers``, every observation an actor decides on is labelled by the signal's teacher and
    added to ``samples``."""
    from edgeplane_traffic.evaluate import run_episode

    seed = demand_seed(split, index)  # type: ignore[arg-type]
    route = folder / f"{split}-{index}.rou.xml"
    generate_demand(spec.net, spec.route, route, begin=spec.begin, seconds=spec.seconds, seed=seed,
                    signal_lanes=[lane for x in layouts for lane in x.lanes])

    def policy(layout: IntersectionLayout) -> Callable[[np.ndarray], Any]:
        act, eye = actors[layout.tls], np.eye(layout.num_greens, dtype=np.float32)

        async def infer(obs: np.ndarray) -> np.ndarray:
            if teachers is not None and samples is not None:
                samples[layout.tls].obs.append(np.asarray(obs, dtype=np.float32).reshape(-1))
                samples[layout.tls].labels.append(int(teachers[layout.tls](obs)))
            return eye[int(act(obs))]

        return infer

    result = run_episode(replace(spec, route=route), "rl", seed=seed % 100_000, timing=timing, deadline=10.0,
                         infer_for={x.tls: policy(x) for x in layouts}, all_signals=True,
                         decision_period=decision_period, detector_window=detector_window)
    return float(result.avg_delay_s)


def _fit(samples: _Samples, obs_size: int, greens: int, *, epochs: int, seed: int, hidden: int) -> tuple[Any, float]:
    """An MLP (obs -> scores over greens) fitted to the samples; its agreement with the labels."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(obs_size, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                              torch.nn.Tanh(), torch.nn.Linear(hidden, greens))
    obs = torch.as_tensor(np.asarray(samples.obs, dtype=np.float32))
    labels = torch.as_tensor(np.asarray(samples.labels, dtype=np.int64))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(obs), generator=generator)
        for start in range(0, len(obs), 256):
            idx = order[start:start + 256]
            loss = torch.nn.functional.cross_entropy(net(obs[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        agreement = float((net(obs).argmax(dim=1) == labels).float().mean()) if len(obs) else 0.0
    return net.eval(), agreement


def _export(net: Any, obs_size: int, path: Path) -> None:
    """``net`` as ONNX (input ``obs`` [batch, n], output ``scores`` [batch, greens]), IR 9 for onnxruntime 1.31."""
    import warnings

    import onnx
    import torch

    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, obs_size),), str(tmp), input_names=["obs"], output_names=["scores"],
                          dynamic_axes={"obs": {0: "batch"}, "scores": {0: "batch"}}, opset_version=17, dynamo=False)
    proto = onnx.load(str(tmp))
    proto.ir_version = 9
    onnx.save(proto, str(path))
    tmp.unlink()


def _export_agreement(net: Any, path: Path, samples: _Samples) -> float:
    """The fraction of recorded observations where the ONNX file's argmax equals the torch module's (must be 1)."""
    import onnxruntime as ort
    import torch

    if not samples.obs:
        return 1.0
    obs = np.asarray(samples.obs, dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"obs": obs})[0].argmax(axis=1)
    with torch.no_grad():
        theirs = net(torch.as_tensor(obs)).argmax(dim=1).numpy()
    return float((ours == theirs).mean())


def _onnx_actor(path: Path) -> Callable[[np.ndarray], int]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda obs: int(np.argmax(session.run(None, {"obs": np.asarray(obs, dtype=np.float32).reshape(1, -1)})[0][0]))


def train_per_signal(spec: NetSpec, out: Path, *, teacher_gap: float = 1.0, decision_period: float = 1.0,
                     detector_window: int | None = 3, demonstrations: int = 4, dagger: int = 2, epochs: int = 40,
                     hidden: int = 64, validation_patterns: int = 3, seed: int = 0, timing: ShieldConfig | None = None,
                     command: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Train one policy per signal of ``spec.net`` by imitation with DAgger; write ``out/<tls>/`` per signal
    (``model.onnx`` + ``metadata.json``) and ``out/summary.json``; return the summary.

    Demonstrations and DAgger run on ``train`` patterns from index ``seed x 10,000 + 5,000`` (apart from
    the RL trainers' ``seed x 10,000``); rounds are compared on the first ``validation_patterns``
    validation patterns."""
    from edgeplane_traffic.training import policy_metadata

    timing = timing or ShieldConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    layouts = signal_layouts(spec.net)
    teachers: dict[str, Callable[[np.ndarray], int]] = {x.tls: GapOutPressureTeacher(x, teacher_gap) for x in layouts}
    samples = {x.tls: _Samples() for x in layouts}
    first_index = seed * 10_000 + 5_000
    train_indices: list[int] = []
    rounds: list[dict[str, Any]] = []

    def say(text: str) -> None:
        if progress:
            print(text, file=sys.stderr, flush=True)

    def validate(actors: dict[str, Callable[[np.ndarray], int]], folder: Path) -> float:
        delays = [_episode(spec, "validation", i, folder, layouts, timing, actors, None, None, decision_period, detector_window)
                  for i in range(validation_patterns)]
        return float(np.mean(delays))

    with tempfile.TemporaryDirectory(prefix="edgeplane-train-per-signal-") as tmp_name:
        tmp = Path(tmp_name)
        for k in range(demonstrations):
            train_indices.append(first_index + len(train_indices))
            delay = _episode(spec, "train", train_indices[-1], tmp, layouts, timing, teachers, teachers, samples,
                             decision_period, detector_window)
            say(f"demonstration {k + 1}/{demonstrations} (train pattern {train_indices[-1]}): teacher delay {delay:.2f} s")
        teacher_validation = validate(teachers, tmp)
        say(f"teacher on validation: {teacher_validation:.2f} s")
        for r in range(dagger + 1):
            if r > 0:  # the clones of the previous round drive, the teachers label
                train_indices.append(first_index + len(train_indices))
                actors = {x.tls: _onnx_actor(tmp / f"round{r - 1}" / f"{k}.onnx") for k, x in enumerate(layouts)}
                delay = _episode(spec, "train", train_indices[-1], tmp, layouts, timing, actors, teachers, samples,
                                 decision_period, detector_window)
                say(f"DAgger round {r}/{dagger} (train pattern {train_indices[-1]}): clone delay {delay:.2f} s")
            folder = tmp / f"round{r}"
            folder.mkdir()
            agreements = {}
            for k, x in enumerate(layouts):
                net, agreements[x.tls] = _fit(samples[x.tls], x.observation_size_detectors, x.num_greens, epochs=epochs,
                                              seed=seed + k, hidden=hidden)
                _export(net, x.observation_size_detectors, folder / f"{k}.onnx")
                if _export_agreement(net, folder / f"{k}.onnx", samples[x.tls]) < 1.0:
                    raise RuntimeError(f"signal {x.tls}: the ONNX export disagrees with the fitted network")
            actors = {x.tls: _onnx_actor(folder / f"{k}.onnx") for k, x in enumerate(layouts)}
            delay = validate(actors, tmp)
            rounds.append({"round": r, "validation_avg_delay_s": round(delay, 2),
                           "samples": sum(len(s.labels) for s in samples.values()),
                           "agreement_min": round(min(agreements.values()), 4),
                           "agreement": {t: round(a, 4) for t, a in agreements.items()}})
            say(f"round {r}: validation delay {delay:.2f} s, agreement with the teacher >= {min(agreements.values()):.1%}")
        best = min(rounds, key=lambda row: row["validation_avg_delay_s"])
        train_seconds = round(time.time() - started, 1)
        warm = {"teacher": PER_SIGNAL_TEACHER, "teacher_gap": teacher_gap, "demonstrations": demonstrations,
                "dagger_rounds": dagger, "teacher_validation_avg_delay_s": round(teacher_validation, 2),
                "demand_seeds": [demand_seed("train", i) for i in train_indices], "epochs": epochs, "hidden": [hidden, hidden]}
        for k, x in enumerate(layouts):
            target = out / x.tls
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp / f"round{best['round']}" / f"{k}.onnx", target / "model.onnx")
            meta = policy_metadata(
                algo="dagger", steps=len(samples[x.tls].labels), seed=seed, spec=spec, validation_patterns=validation_patterns,
                seconds=spec.seconds, reward="none (imitation of the teacher; no RL fine-tuning)", timing=timing, layout=x,
                training_curve=[], validation=[{k2: v for k2, v in row.items() if k2 != "agreement"} for row in rounds],
                selected_timestep=best["round"], train_seconds=train_seconds, command=command or "",
                onnx_agreement=1.0, decision_period=decision_period, detector_window=detector_window)
            meta.update(per_signal=True, signals=[y.tls for y in layouts], warm_start=warm,
                        clone_agreement=best["agreement"][x.tls], training_demand_seeds=warm["demand_seeds"],
                        validation_demand_seeds=[demand_seed("validation", i) for i in range(validation_patterns)])
            (target / "metadata.json").write_text(json.dumps(meta, indent=1))
    summary = {"net": spec.name, "signals": [x.tls for x in layouts], "rounds": rounds, "selected_round": best["round"],
               "teacher_validation_avg_delay_s": round(teacher_validation, 2), "train_seconds": train_seconds,
               "decision_period": decision_period, "detector_window": detector_window,
               "command": command}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def train_per_signal_command(spec: NetSpec, out: Path, *, timing: ShieldConfig, teacher_gap: float, decision_period: float,
                             detector_window: int | None, demonstrations: int, dagger: int, epochs: int,
                             validation_patterns: int, seed: int, as_json: bool) -> None:
    """``edgeplane traffic train --per-signal``: check the options, train, print what was selected."""
    import shlex

    import click

    if demonstrations < 1:
        raise click.BadParameter(f"{demonstrations}: record at least one demonstration episode", param_hint="--demonstrations")
    if not 1.0 <= decision_period <= timing.max_green:
        raise click.BadParameter(f"{decision_period:g}: give 1 s (SUMO's step) up to the maximum green ({timing.max_green:g} s)",
                                 param_hint="--decision-period")
    if detector_window is not None and detector_window < 1:
        raise click.BadParameter(f"{detector_window}: give 1 s or more", param_hint="--detector-window")
    if teacher_gap <= 0:
        raise click.BadParameter(f"{teacher_gap:g}: give the vehicles (> 0) that extend a green", param_hint="--teacher-gap")
    command = "edgeplane traffic train " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if len(sys.argv) > 3 else None
    try:
        summary = train_per_signal(spec, out, teacher_gap=teacher_gap, decision_period=decision_period,
                                   detector_window=detector_window, demonstrations=demonstrations, dagger=dagger, epochs=epochs,
                                   validation_patterns=validation_patterns, seed=seed, timing=timing, command=command)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--net") from None
    click.echo(f"{'net':<22}{summary['net']} ({len(summary['signals'])} signals, one policy each)")
    click.echo(f"{'teacher (validation)':<22}{summary['teacher_validation_avg_delay_s']:.2f} s")
    for row in summary["rounds"]:
        click.echo(f"{'validation @ round ' + str(row['round']):<22}{row['validation_avg_delay_s']:.2f} s "
                   f"(agreement >= {row['agreement_min']:.1%})")
    click.echo(f"{'selected':<22}round {summary['selected_round']}")
    click.echo(f"{'train time':<22}{summary['train_seconds']} s")
    click.echo(f"{'output':<22}{out}/<signal>/model.onnx, metadata.json")
    if as_json:
        click.echo(json.dumps(summary))
