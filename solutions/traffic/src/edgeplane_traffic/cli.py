"""``edgeplane traffic train|evaluate|demo``."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

__all__ = ["traffic"]


def _resolve(net: str, route: str | None, seconds: int | None = None):  # type: ignore[no-untyped-def]
    from edgeplane_traffic.nets import resolve

    try:
        return resolve(net, route, seconds=seconds)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--net/--route") from None


@click.group("traffic")
def traffic() -> None:
    """Intersection signal control on SUMO: train, evaluate, demo."""


@traffic.command("train")
@click.option("--net", required=True, help="scenario name (single-intersection, cologne1, ingolstadt1) or a .net.xml file")
@click.option("--route", default=None, help="SUMO route file (default: the scenario's)")
@click.option("--algo", type=click.Choice(["ppo", "dqn"]), default="dqn", show_default=True)
@click.option("--steps", type=int, default=100_000, show_default=True, help="environment steps (one step = 5 s of signal time)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="output folder")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--episode-seconds", type=int, default=None, help="simulated seconds per training episode (default: the scenario's)")
@click.option("--reward", type=click.Choice(["diff-waiting-time", "queue", "pressure", "average-speed"]),
              default="diff-waiting-time", show_default=True, help="sumo-rl reward function")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def train_command(net: str, route: str | None, algo: str, steps: int, out: Path, seed: int,
                  episode_seconds: int | None, reward: str, as_json: bool) -> None:
    """Train a policy with stable-baselines3 and export ONNX plus metadata."""
    try:
        from edgeplane_traffic.training import train
    except ImportError as e:
        raise click.ClickException(f"training needs the [training] extra: pip install 'edgeplane-traffic[training]' ({e})")
    spec = _resolve(net, route)
    command = "edgeplane traffic train " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if len(sys.argv) > 3 else None
    meta = train(spec, algo, steps, out, seed=seed, episode_seconds=episode_seconds, command=command, reward=reward)
    curve = meta["training_curve"]
    click.echo(f"{'net':<22}{meta['net']}")
    click.echo(f"{'algo / steps / seed':<22}{algo} / {steps} / {seed}")
    click.echo(f"{'episodes':<22}{len(curve)}")
    if curve:
        click.echo(f"{'first / last return':<22}{curve[0]['return']:.1f} / {curve[-1]['return']:.1f}")
    click.echo(f"{'train time':<22}{meta['train_seconds']} s")
    click.echo(f"{'output':<22}{out}/model.onnx, metadata.json")
    if as_json:
        click.echo(json.dumps({"episodes": len(curve), "train_s": meta["train_seconds"],
                               "last_return": curve[-1]["return"] if curve else None, "out": str(out)}))


@traffic.command("evaluate")
@click.option("--net", required=True, help="scenario name (single-intersection, cologne1, ingolstadt1) or a .net.xml file")
@click.option("--route", default=None, help="any SUMO route file for the net (demand the model never saw)")
@click.option("--controller", type=click.Choice(["fixed", "max-pressure", "rl"]), required=True)
@click.option("--model", type=click.Path(path_type=Path), default=None, help="policy folder (default: the one shipped for --net)")
@click.option("--seconds", type=int, default=None, help="simulated seconds (default: the scenario's; RESCO: 3600)")
@click.option("--seeds", type=int, default=1, show_default=True, help="SUMO seeds FIRST..FIRST+K-1; figures are means")
@click.option("--first-seed", type=int, default=1000, show_default=True,
              help="first SUMO seed (training uses seed+episode, far below 1000: no overlap)")
@click.option("--deadline", type=float, default=0.05, show_default=True, help="RL decision deadline in seconds; later answers fall back")
@click.option("--all-red", type=float, default=0.0, show_default=True, help="all-red clearance in seconds (training used 0)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def evaluate_command(net: str, route: str | None, controller: str, model: Path | None, seconds: int | None, seeds: int,
                     first_seed: int, deadline: float, all_red: float, as_json: bool) -> None:
    """Evaluate a controller: RESCO average delay, waiting, queue, throughput, shield, fallbacks, latency."""
    from edgeplane_traffic.evaluate import run_episode, summarize
    from edgeplane_traffic.models import PolicyFiles, shipped_policy
    from edgeplane_traffic.shield import ShieldConfig
    from edgeplane_traffic.training import TIMING

    spec = _resolve(net, route, seconds)
    if controller == "rl":
        model = model or shipped_policy(spec.name)
        if model is None:
            raise click.ClickException(f"no policy shipped for {spec.name!r}: pass --model DIR (from 'edgeplane traffic train')")
        try:
            policy = PolicyFiles(model)
        except FileNotFoundError as e:
            raise click.ClickException(str(e)) from None
        from edgeplane_traffic.layout import layout_from_net

        if policy.metadata.get("layout_fingerprint") != layout_from_net(spec.net, spec.tls).fingerprint():
            raise click.ClickException(f"policy {model} was trained on another intersection layout than {spec.net.name}: train one for this net")
    shield = ShieldConfig(min_green=TIMING["min_green"], yellow=TIMING["yellow_time"], all_red=all_red, max_green=TIMING["max_green"])
    results = []
    for seed in range(first_seed, first_seed + seeds):
        results.append(run_episode(spec, controller, seed=seed, model=model, shield=shield, deadline=deadline))
    summary = summarize(results)
    summary["net"] = spec.name
    rows = [
        ("net / controller", f"{spec.name} / {controller}"),
        ("seeds x seconds", f"{seeds} (from {first_seed}) x {spec.seconds} s ({summary['binding']})"),
        ("avg delay per vehicle", f"{summary['avg_delay_s']:.2f} s"),
        ("mean waiting", f"{summary['mean_waiting_s']:.2f} s"),
        ("mean queue", f"{summary['mean_queue']:.2f} veh"),
        ("throughput", f"{summary['throughput']:.0f} veh"),
        ("shield interventions", str(summary["shield_interventions"])),
        ("fallbacks", str(summary["fallbacks"])),
        ("decision p50 / p99", "n/a (the net's own program)" if summary["decision_p99_ms"] is None
         else f"{summary['decision_p50_ms']:.3f} / {summary['decision_p99_ms']:.3f} ms"),
    ]
    for name, value in rows:
        click.echo(f"{name:<24}{value}")
    if as_json:
        click.echo(json.dumps(summary))


@traffic.command("demo")
@click.option("--site", "site_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="site file (default: configs/intersection.yaml)")
@click.option("--seconds", type=float, default=None, help="simulated seconds (default: the site's)")
@click.option("--speed", type=float, default=None, help="simulated seconds per second (0: as fast as possible)")
@click.option("--kill-model-at", "kill_at", type=float, default=None, help="make the model unusable at this simulated second")
@click.option("--restore-at", type=float, default=None, help="restore it at this simulated second")
@click.option("--fault", type=click.Choice(["missing", "slow", "error"]), default="missing", show_default=True)
@click.option("--every", type=int, default=1, show_default=True, help="print every N-th decision")
@click.option("--json", "as_json", is_flag=True, help="print the summary as one JSON object last")
def demo_command(site_path: Path | None, seconds: float | None, speed: float | None, kill_at: float | None,
                 restore_at: float | None, fault: str, every: int, as_json: bool) -> None:
    """Run the reference deployment and narrate decisions, queues and delay vs fixed-time."""
    import asyncio

    from edgeplane_traffic.demo import default_site, run_demo

    path = site_path or default_site()
    if not path.is_file():
        raise click.ClickException(f"no site file at {path}: pass --site configs/intersection.yaml")
    summary = asyncio.run(run_demo(path, seconds=seconds, speed=speed, kill_at=kill_at, restore_at=restore_at,
                                   fault=fault, every=max(1, every)))
    if as_json:
        click.echo(json.dumps(summary))
