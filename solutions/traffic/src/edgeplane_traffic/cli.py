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


def _timing_options(f):  # type: ignore[no-untyped-def]
    """--yellow/--all-red/--min-green/--max-green: the one timing every controller runs under."""
    for option in reversed([
        click.option("--yellow", type=float, default=3.0, show_default=True, help="yellow clearance, s (every controller)"),
        click.option("--all-red", type=float, default=2.0, show_default=True, help="all-red clearance, s (every controller)"),
        click.option("--min-green", type=float, default=5.0, show_default=True, help="minimum green, s"),
        click.option("--max-green", type=float, default=50.0, show_default=True, help="maximum green, s"),
    ]):
        f = option(f)
    return f


def _timing(yellow: float, all_red: float, min_green: float, max_green: float):  # type: ignore[no-untyped-def]
    from edgeplane_traffic.shield import ShieldConfig

    try:
        return ShieldConfig(min_green=min_green, yellow=yellow, all_red=all_red, max_green=max_green)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--yellow/--all-red/--min-green/--max-green") from None


@traffic.command("train")
@click.option("--net", required=True, help="scenario name (single-intersection, cologne1, ingolstadt1) or a .net.xml file")
@click.option("--route", default=None, help="reference route file the demand generator learns routes from (default: the scenario's)")
@click.option("--algo", type=click.Choice(["ppo", "dqn"]), default="dqn", show_default=True)
@click.option("--steps", type=int, default=20_000, show_default=True, help="decisions (one every --decision-period s of green)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="output folder")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--episode-seconds", type=int, default=None, help="simulated seconds per training episode (default: the scenario's)")
@click.option("--checkpoints", type=int, default=4, show_default=True, help="checkpoints compared on validation demand")
@click.option("--validation-patterns", type=int, default=2, show_default=True, help="validation demand patterns per checkpoint")
@click.option("--shared", is_flag=True, help="multi-signal nets: one PPO policy for every signal (steps count all signals' decisions)")
@click.option("--per-signal", is_flag=True,
              help="multi-signal nets whose signals differ: one policy per signal, imitating the gap-out-pressure detector "
                   "teacher (--teacher-gap vehicles in the --detector-window extend a green) with --dagger rounds")
@click.option("--fine-tune-from", default=None, metavar="VERSION",
              help="with --per-signal: fine-tune the shipped traffic-<net>-<tls>/VERSION policies with one PPO per signal in "
                   "one simulation of the net (--steps simulated s in --checkpoints rounds, --fine-tune-lr)")
@click.option("--warm-start", type=click.Choice(["actuated", "max-pressure", "max-pressure-lanes"]), default=None,
              help="PPO: first clone this controller from train-demand demonstrations (checkpoint 0), then fine-tune "
                   "(max-pressure-lanes: whole-lane counts, seen by the recording only)")
@click.option("--teacher-gap", type=float, default=1.0, show_default=True,
              help="warm start: actuated = vehicles per served lane in the detector window that extend a green; max-pressure = hold ratio")
@click.option("--demonstrations", type=int, default=8, show_default=True, help="warm start: teacher episodes recorded")
@click.option("--bc-epochs", type=int, default=30, show_default=True, help="warm start: behaviour-cloning epochs")
@click.option("--fine-tune-lr", type=float, default=5e-5, show_default=True,
              help="warm start: PPO's learning rate when fine-tuning the clone (single-signal training)")
@click.option("--dagger", type=int, default=0, show_default=True,
              help="warm start: DAgger rounds (the clone drives, the teacher labels, the clone is refitted)")
@click.option("--decision-period", type=float, default=5.0, show_default=True,
              help="s between the policy's decisions (1-2: extend or end the green every second or two); kept in the metadata")
@click.option("--detector-window", type=int, default=None,
              help="s of detector readings the counts span, sliding (default: since the previous decision at 5 s or more, 5 below)")
@_timing_options
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def train_command(net: str, route: str | None, algo: str, steps: int, out: Path, seed: int, episode_seconds: int | None,
                  checkpoints: int, validation_patterns: int, shared: bool, per_signal: bool, fine_tune_from: str | None,
                  warm_start: str | None, teacher_gap: float,
                  demonstrations: int, bc_epochs: int, fine_tune_lr: float, dagger: int, decision_period: float,
                  detector_window: int | None, yellow: float, all_red: float, min_green: float, max_green: float,
                  as_json: bool) -> None:
    """Train a policy on generated demand, select it on validation demand, export ONNX plus metadata."""
    try:
        from edgeplane_traffic.training import train
    except ImportError as e:
        raise click.ClickException(f"training needs the [training] extra: pip install 'edgeplane-traffic[training]' ({e})")
    spec = _resolve(net, route)
    timing = _timing(yellow, all_red, min_green, max_green)
    if fine_tune_from is not None:
        if not per_signal:
            raise click.BadParameter("fine-tuning per-signal policies: add --per-signal", param_hint="--fine-tune-from")
        from edgeplane_traffic.training_per_signal_rl import fine_tune_per_signal_command

        fine_tune_per_signal_command(spec, out, start_version=fine_tune_from, timing=timing, steps=steps,
                                     checkpoints=checkpoints, learning_rate=fine_tune_lr,
                                     validation_patterns=validation_patterns, seed=seed, as_json=as_json)
        return
    if per_signal:
        from edgeplane_traffic.training_per_signal import train_per_signal_command

        train_per_signal_command(spec, out, timing=timing, teacher_gap=teacher_gap, decision_period=decision_period,
                                 detector_window=detector_window, demonstrations=demonstrations, dagger=dagger,
                                 epochs=bc_epochs, validation_patterns=validation_patterns, seed=seed, as_json=as_json)
        return
    if warm_start is not None and algo != "ppo":
        raise click.BadParameter("--warm-start fine-tunes a PPO policy: add --algo ppo", param_hint="--algo")
    if warm_start is not None and demonstrations < 1:
        raise click.BadParameter(f"{demonstrations}: record at least one demonstration episode", param_hint="--demonstrations")
    warm = {"warm_start": warm_start, "teacher_gap": teacher_gap, "demonstrations": demonstrations, "bc_epochs": bc_epochs}
    if dagger:
        if shared:
            raise click.BadParameter("DAgger is implemented for single-signal training; drop --dagger with --shared",
                                     param_hint="--dagger")
        warm["dagger"] = dagger
    if fine_tune_lr != 5e-5:
        if shared:
            raise click.BadParameter("--fine-tune-lr is for single-signal training; drop it with --shared", param_hint="--fine-tune-lr")
        warm["fine_tune_lr"] = fine_tune_lr
    if decision_period != 5.0 or detector_window is not None:
        if shared:
            raise click.BadParameter("a shared policy decides every 5 s; drop --decision-period/--detector-window with --shared",
                                     param_hint="--decision-period")
        if not 1.0 <= decision_period <= max_green:
            raise click.BadParameter(f"{decision_period:g}: give 1 s (SUMO's step) up to the maximum green ({max_green:g} s)",
                                     param_hint="--decision-period")
        if detector_window is not None and detector_window < 1:
            raise click.BadParameter(f"{detector_window}: give 1 s or more", param_hint="--detector-window")
        warm["decision_period"] = decision_period
        warm["detector_window"] = detector_window if detector_window is not None else "auto"
    command = "edgeplane traffic train " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if len(sys.argv) > 3 else None
    if shared:
        from edgeplane_traffic.training_shared import train_shared

        if algo != "ppo":
            raise click.BadParameter("a shared policy is trained with PPO: add --algo ppo", param_hint="--algo")
        try:
            meta = train_shared(spec, steps, out, seed=seed, timing=timing, episode_seconds=episode_seconds,
                                checkpoints=checkpoints, validation_patterns=validation_patterns, command=command, **warm)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--net") from None
        curve = [{"return": row["mean_return"]} for row in meta["training_curve"]]
    else:
        meta = train(spec, algo, steps, out, seed=seed, timing=timing, episode_seconds=episode_seconds, checkpoints=checkpoints,
                     validation_patterns=validation_patterns, command=command, **warm)
        curve = meta["training_curve"]
    click.echo(f"{'net':<22}{meta['net']}")
    click.echo(f"{'algo / steps / seed':<22}{algo} / {steps} / {seed}")
    click.echo(f"{'episodes':<22}{len(curve)}")
    if curve:
        click.echo(f"{'first / last return':<22}{curve[0]['return']:.1f} / {curve[-1]['return']:.1f}")
    for row in meta["validation"]:
        click.echo(f"{'validation @' + str(row['timestep']):<22}{row['validation_avg_delay_s']:.2f} s")
    click.echo(f"{'selected':<22}step {meta['selected_timestep']}")
    click.echo(f"{'train time':<22}{meta['train_seconds']} s")
    click.echo(f"{'output':<22}{out}/model.onnx, metadata.json")
    if as_json:
        click.echo(json.dumps({"episodes": len(curve), "train_s": meta["train_seconds"], "selected_timestep": meta["selected_timestep"],
                               "validation": meta["validation"], "out": str(out)}))


@traffic.command("demand")
@click.option("--net", required=True, help="scenario name or a .net.xml file")
@click.option("--route", default=None, help="reference route file (default: the scenario's)")
@click.option("--split", type=click.Choice(["train", "validation", "evaluation"]), default="evaluation", show_default=True)
@click.option("--index", type=int, default=0, show_default=True, help="pattern number within the split")
@click.option("--seconds", type=int, default=None, help="length of the demand window (default: the scenario's)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="route file to write")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def demand_command(net: str, route: str | None, split: str, index: int, seconds: int | None, out: Path, as_json: bool) -> None:
    """Write one generated demand pattern (time-varying flows, turning ratios, surge, incident)."""
    from dataclasses import asdict

    from edgeplane_traffic.demand import demand_seed, generate_demand
    from edgeplane_traffic.layout import layout_from_net

    spec = _resolve(net, route, seconds)
    try:
        seed = demand_seed(split, index)  # type: ignore[arg-type]
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--index") from None
    lanes = [lane for tls in _signals(spec) for lane in layout_from_net(spec.net, tls).lanes]
    pattern = generate_demand(spec.net, spec.route, out, begin=spec.begin, seconds=spec.seconds, seed=seed, signal_lanes=lanes)
    summary = {"net": spec.name, "split": split, "index": index, "begin": spec.begin, "seconds": spec.seconds,
               "out": str(out), **asdict(pattern)}
    for key, value in summary.items():
        click.echo(f"{key:<12}{value}")
    if as_json:
        click.echo(json.dumps(summary))


def _signals(spec) -> list[str]:  # type: ignore[no-untyped-def]
    from edgeplane_traffic.layout import layout_from_net, tls_ids

    found = []
    for tls in tls_ids(spec.net):
        try:
            layout_from_net(spec.net, tls)
            found.append(tls)
        except ValueError:
            continue
    return found


@traffic.command("evaluate")
@click.option("--net", required=True, help="scenario name (single-intersection, cologne1, ingolstadt1, cologne8, grid4x4, ...) or a .net.xml file")
@click.option("--route", default=None, help="any SUMO route file for the net (demand the model never saw)")
@click.option("--controller", type=click.Choice(["webster", "actuated", "max-pressure", "rl", "fixed"]), required=True)
@click.option("--model", type=click.Path(path_type=Path), default=None, help="policy folder (default: the one shipped for --net)")
@click.option("--seconds", type=int, default=None, help="simulated seconds from the net's begin time (default: the scenario's; RESCO: 3600)")
@click.option("--seeds", type=int, default=1, show_default=True, help="SUMO seeds FIRST..FIRST+K-1; figures are means")
@click.option("--first-seed", type=int, default=1000, show_default=True, help="first SUMO seed")
@_timing_options
@click.option("--decision-period", type=float, default=None, help="s between decisions (max-pressure: its tuned value; rl: the policy's own, from its metadata)")
@click.option("--warmup", type=float, default=900.0, show_default=True, help="webster: seconds of counting under the fixed program")
@click.option("--counts", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="webster: JSON {lane id: veh/h} instead of a warm-up")
@click.option("--all-signals", is_flag=True, help="one controller per signal of the net (multi-signal nets)")
@click.option("--deadline", type=float, default=0.05, show_default=True, help="RL decision deadline in seconds; later answers fall back")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")
def evaluate_command(net: str, route: str | None, controller: str, model: Path | None, seconds: int | None, seeds: int,
                     first_seed: int, yellow: float, all_red: float, min_green: float, max_green: float,
                     decision_period: float | None, warmup: float, counts: Path | None, all_signals: bool, deadline: float,
                     as_json: bool) -> None:
    """Evaluate a controller: delay over every vehicle due (undeparted included), waiting, throughput, shield, latency."""
    from edgeplane_traffic.evaluate import run_episode, summarize
    from edgeplane_traffic.layout import layout_from_net
    from edgeplane_traffic.models import PolicyFiles, shipped_policy
    from edgeplane_traffic.programs import tuned_max_pressure_period

    spec = _resolve(net, route, seconds)
    timing = _timing(yellow, all_red, min_green, max_green)
    signals = _signals(spec) if all_signals else [layout_from_net(spec.net, spec.tls).tls]
    infer_for = None
    observation = "detectors"
    window = None
    given_period = decision_period
    if controller == "rl":
        from edgeplane_traffic.evaluate import onnx_infer

        infer_for = {}
        for tls in signals:
            layout = layout_from_net(spec.net, tls)
            folder = model or shipped_policy(spec.name if len(signals) == 1 else f"{spec.name}-{tls}")
            if folder is None:
                raise click.ClickException(f"no policy shipped for {spec.name!r} signal {tls!r}: pass --model DIR (from 'edgeplane traffic train')")
            try:
                policy = PolicyFiles(folder)
            except FileNotFoundError as e:
                raise click.ClickException(str(e)) from None
            if policy.metadata.get("layout_fingerprint") != layout.fingerprint():
                raise click.ClickException(f"policy {folder} was trained on another intersection layout than signal {tls!r} of "
                                           f"{spec.net.name}: train one for this net")
            observation = policy.metadata.get("observation_kind", "lanes")
            if decision_period is not None and decision_period != policy.decision_period:
                hint = "drop --decision-period" if given_period is not None else "use policies trained with one decision period"
                raise click.BadParameter(f"policy {folder} decides every {policy.decision_period:g} s (it was trained so), "
                                         f"not {decision_period:g} s: {hint}", param_hint="--decision-period")
            decision_period, window = policy.decision_period, policy.detector_window
            infer_for[tls] = onnx_infer(policy.onnx)
    counts_map = None
    if counts is not None:
        try:
            counts_map = {str(k): float(v) for k, v in json.loads(counts.read_text()).items()}
        except (ValueError, AttributeError) as e:
            raise click.BadParameter(f"{counts}: expected a JSON object {{lane id: veh/h}} ({e})", param_hint="--counts") from None
    period = decision_period or (tuned_max_pressure_period(spec.name) if controller == "max-pressure" else 5.0)
    results = []
    try:
        for seed in range(first_seed, first_seed + seeds):
            results.append(run_episode(spec, controller, seed=seed, timing=timing, deadline=deadline, infer_for=infer_for,
                                       observation=observation, decision_period=period, detector_window=window, warmup=warmup,
                                       counts=counts_map, all_signals=all_signals))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--net/--route/--seconds") from None
    summary = summarize(results)
    summary |= {"net": spec.name, "yellow_s": yellow, "all_red_s": all_red, "min_green_s": min_green, "max_green_s": max_green,
                "decision_period_s": period if controller in ("max-pressure", "rl") else None}
    if results[0].plans:
        summary["plans"] = results[0].plans
    rows = [
        ("net / controller", f"{spec.name} / {controller} ({summary['signals']} signal(s))"),
        ("seeds x seconds", f"{seeds} (from {first_seed}) x {spec.seconds} s from {spec.begin} s ({summary['binding']})"),
        ("timing", f"yellow {yellow:g} s, all-red {all_red:g} s, green {min_green:g}-{max_green:g} s"),
        ("avg delay per vehicle", f"{summary['avg_delay_s']:.2f} s (over {summary['due']:.0f} due, {summary['undeparted']:.0f} never entered)"),
        ("mean waiting", f"{summary['mean_waiting_s']:.2f} s"),
        ("throughput", f"{summary['throughput']:.0f} veh"),
        ("shield interventions", str(summary["shield_interventions"])),
        ("fallbacks", str(summary["fallbacks"])),
        ("decision p50 / p99", "n/a (SUMO runs the program)" if summary["decision_p99_ms"] is None
         else f"{summary['decision_p50_ms']:.3f} / {summary['decision_p99_ms']:.3f} ms"),
        ("CPU per signal", f"{summary['cpu_s_per_signal_hour']:.3f} s per simulated hour"),
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


@traffic.command("cabinet")
@click.option("--net", required=True, help="scenario name or a .net.xml file")
@click.option("--route", default=None, help="SUMO route file (default: the scenario's)")
@click.option("--tls", default=None, help="the signal (default: the first)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address the SNMP agent listens on")
@click.option("--port", type=click.IntRange(0, 65535), default=1161, show_default=True, help="UDP port (0: a free one)")
@click.option("--community", default="public", show_default=True, help="SNMPv2c read-write community")
@click.option("--seconds", type=int, default=3600, show_default=True, help="simulated seconds, then it exits")
@click.option("--speed", type=float, default=1.0, show_default=True, help="simulated seconds per wall second")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--start-time", type=float, default=None, help="the controller's globalTime at the start (default: now)")
@click.option("--ready-port", type=click.IntRange(1, 65535), default=None,
              help="also listen on this TCP port once the agent answers (a host's simulators: ready: probe)")
@click.option("--linger", is_flag=True, help="after the run, keep answering (sim.state finished) until stopped")
@click.option("--entry/--no-entry", default=True, show_default=True, help="print the ntcip device entry (YAML) at start")
@click.option("--binding", type=click.Choice(["auto", "libsumo", "traci"]), default="auto", show_default=True,
              help="SUMO binding (auto: libsumo when installed)")
def cabinet_command(net: str, route: str | None, tls: str | None, host: str, port: int, community: str, seconds: int,
                    speed: float, seed: int, start_time: float | None, ready_port: int | None, linger: bool,
                    entry: bool, binding: str) -> None:
    """Run a SUMO intersection behind an NTCIP 1202 controller simulator (an SNMP agent); print its device entry."""
    import asyncio
    import time

    from edgeplane_traffic.cabinet import SumoCabinet, serve_cabinet

    if speed <= 0:
        raise click.BadParameter("the cabinet runs in real time or faster: give a speed > 0", param_hint="--speed")
    _resolve(net, route)  # a clear error for an unknown net or route (exit 2)
    try:
        cabinet = SumoCabinet(net, route=route, tls=tls, seconds=seconds, speed=speed, seed=seed, community=community,
                              start_time=time.time() if start_time is None else start_time, binding=binding)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--tls") from None
    cabinet.agent.host, cabinet.agent.port = host, port

    async def run() -> None:
        try:
            await serve_cabinet(cabinet, ready_port=ready_port, linger=linger, poll=1.0 / speed, entry=entry,
                                echo=lambda line: click.echo(line))
        except OSError as e:
            raise click.ClickException(f"cannot listen on {host} port {port} (udp) or {ready_port} (tcp) ({e}): "
                                       f"choose another --port/--ready-port") from None

    asyncio.run(run())
