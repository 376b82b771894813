"""``edgeplane solar ...``: train, backtest, the reference demo and fault/curtailment injection."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from edgeplane_solar import reference


def _plant(path: Path | None, lat: float | None, lon: float | None, base: dict[str, Any] | None = None):
    import yaml

    from edgeplane_solar.plant import PlantConfig

    if path is not None:
        data = yaml.safe_load(path.read_text())
        data = data.get("plant", data)
    else:
        data = base if base is not None else reference.SYSTEM_50.model_dump()
    data = json.loads(json.dumps(data))
    if lat is not None:
        data["location"]["lat"] = lat
    if lon is not None:
        data["location"]["lon"] = lon
    try:
        return PlantConfig.model_validate(data)
    except ValueError as e:
        raise click.BadParameter(f"plant description: {e}") from None


@click.group()
def solar() -> None:
    """PV plant: forecasting (train, backtest), the reference deployment (demo, inject)."""


@solar.command()
@click.option("--power", type=click.Path(path_type=Path), default=None, help="Power file (parquet/CSV). Default: system 50.")
@click.option("--weather", type=click.Path(path_type=Path), default=None, help="Weather file with ghi. Default: system 50 PSM3.")
@click.option("--power-column", default=None)
@click.option("--plant", "plant_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="YAML with a 'plant:' section (PlantConfig). Default: the system 50 reference plant.")
@click.option("--start", default=reference.TRAIN[0], show_default=True)
@click.option("--end", default=reference.TRAIN[1], show_default=True, help="Exclusive.")
@click.option("--capacity", type=float, default=None, help="W for normalising. Default: the largest power in the training period.")
@click.option("--epochs", type=int, default=None, help="Default: 40 (15 min .. 4 h), 30 (--day-ahead).")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Model registry folder. Default: the plugin's shipped models.")
@click.option("--version", "version", default=reference.MODEL_VERSION, show_default=True)
@click.option("--day-ahead", "day_ahead", is_flag=True,
              help="Train the day-ahead model (solar-day-ahead) instead of the 15 min .. 4 h one.")
def train(power: Path | None, weather: Path | None, power_column: str | None, plant_file: Path | None, start: str,
          end: str, capacity: float | None, epochs: int | None, seed: int, out: Path | None, version: str,
          day_ahead: bool) -> None:
    """Train the P10/P50/P90 forecaster (15 min .. 4 h, or --day-ahead) and add it to a model registry as ONNX."""
    from edgeplane_solar import dataset, evaluation, training

    power = power or reference.default_power()
    weather = weather or reference.default_weather()
    plant = _plant(plant_file, None, None)
    try:
        p = dataset.load_power(power, power_column)
        w = dataset.load_weather(weather)
    except dataset.DataError as e:
        raise click.ClickException(str(e)) from None
    span = p[(p.index >= dataset._utc(start)) & (p.index < dataset._utc(end))]
    if span.dropna().empty:
        raise click.ClickException(f"{power}: no power between {start} and {end}")
    capacity = capacity or float(span.max())
    command = "edgeplane solar train " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if len(sys.argv) > 3 \
        else "edgeplane solar train"
    if day_ahead:
        _train_day_ahead(p, power, plant, capacity, start, end, epochs or 30, seed, out, version, command)
        return
    epochs = epochs or 40
    data = dataset.prepare(p, w, plant, capacity, start, end)
    net = training.fit(data, epochs=epochs, seed=seed, log=lambda m: click.echo(m, err=True))
    folder = training.save(net, out or reference.shipped_models(), version, {
        "command": command, "data": [f"{power.name} [{start}, {end})", f"{weather.name} [{start}, {end})"],
        "plant": plant.model_dump(), "capacity_w": capacity, "train_period": [start, end], "epochs": epochs, "seed": seed,
    })
    q = evaluation.run_onnx(folder / "model.onnx", data.frame.x)
    results = evaluation.score(data, q, ["15min", "1h", "4h"])
    click.echo("in-sample (training period):")
    click.echo(evaluation.table(results))
    click.echo(f"model written to {folder}")


def _train_day_ahead(p: Any, power: Path, plant: Any, capacity: float, start: str, end: str, epochs: int, seed: int,
                     out: Path | None, version: str, command: str) -> None:
    from edgeplane_solar import day_ahead

    data = day_ahead.prepare(p, plant, capacity, start, end)
    try:
        net = day_ahead.fit(data, epochs=epochs, seed=seed, log=lambda m: click.echo(m, err=True))
    except ValueError as e:
        raise click.ClickException(f"{power}: {e}") from None
    folder = day_ahead.save(net, out or reference.shipped_models(), version, {
        "command": command, "data": [f"{power.name} [{start}, {end})"], "plant": plant.model_dump(),
        "capacity_w": capacity, "train_period": [start, end], "epochs": epochs, "seed": seed,
        "inputs": "no weather forecast: clear-sky power and sun at the target, yesterday's power and clear-sky index",
    })
    r = day_ahead.score(data, day_ahead.run_onnx(folder / "model.onnx", data.x))
    click.echo(f"in-sample (training period), day-ahead: n {r['n']}  nRMSE {r['nrmse']:.2%}  nMAE {r['nmae']:.2%}  "
               f"P10-P90 {r['coverage_p10_p90']:.1%}")
    click.echo(f"model written to {folder}")


@solar.command()
@click.option("--power", type=click.Path(path_type=Path), default=None, help="Power file (parquet/CSV). Default: system 50.")
@click.option("--weather", type=click.Path(path_type=Path), default=None, help="Weather file with ghi. Default: system 50 PSM3.")
@click.option("--power-column", default=None)
@click.option("--lat", type=float, default=None, help="Latitude (default: the model's plant).")
@click.option("--lon", type=float, default=None, help="Longitude (default: the model's plant).")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Model folder (default: the model shipped with the plugin).")
@click.option("--day-ahead-model", "day_ahead_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Day-ahead model folder (default: --model's registry if it has one, else the shipped one).")
@click.option("--horizons", default="15min,1h,4h", show_default=True,
              help="Multiples of 15min up to 4h; 'day-ahead' adds the learned day-ahead model.")
@click.option("--start", default=reference.TEST[0], show_default=True)
@click.option("--end", default=reference.TEST[1], show_default=True, help="Exclusive.")
@click.option("--capacity", type=float, default=None, help="W for normalising (default: the model's).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a PNG of forecast vs measured.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
def backtest(power: Path | None, weather: Path | None, power_column: str | None, lat: float | None, lon: float | None,
             model_dir: Path | None, day_ahead_dir: Path | None, horizons: str, start: str, end: str, capacity: float | None, plot: Path | None,
             as_json: bool) -> None:
    """Score the forecaster against persistence and smart persistence on a test period."""
    from edgeplane_solar import dataset, evaluation, training

    power = power or reference.default_power()
    weather = weather or reference.default_weather()
    labels = [h.strip() for h in horizons.split(",") if h.strip()]
    try:
        from edgeplane_solar import features

        for label in labels:
            if label != "day-ahead":
                features.horizon_steps(label)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--horizons") from None
    try:
        folder = training.resolve_model_folder(model_dir or reference.shipped_models())
    except FileNotFoundError as e:
        raise click.ClickException(f"{e}; train one with 'edgeplane solar train'") from None
    prov = training.read_provenance(folder)
    plant = _plant(None, lat, lon, prov.get("plant"))
    capacity = capacity or float(prov.get("capacity_w") or plant.ac_capacity_w)
    try:
        p = dataset.load_power(power, power_column)
        w = dataset.load_weather(weather)
    except dataset.DataError as e:
        raise click.ClickException(str(e)) from None
    day_ahead = "day-ahead" in labels
    labels = [label for label in labels if label != "day-ahead"]
    data = dataset.prepare(p, w, plant, capacity, start, end)
    q = evaluation.run_onnx(folder / "model.onnx", data.frame.x)
    results = evaluation.score(data, q, labels)
    click.echo(f"backtest {start} .. {end} of {power.name}, model {folder}, capacity {capacity:.0f} W, daylight only "
               f"(sun above 5 deg)")
    summary = evaluation.summary_json(results)
    if labels:
        click.echo(evaluation.table(results))
    if day_ahead:
        d = _score_day_ahead(p, plant, capacity, start, end, day_ahead_dir, model_dir)
        summary["day-ahead"] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in d.items()}
    if plot is not None and labels:
        evaluation.plot(data, q, "1h" if "1h" in labels else labels[0], plot)
        click.echo(f"plot written to {plot}")
    if as_json:
        click.echo(json.dumps(summary))


def _score_day_ahead(p: Any, plant: Any, capacity: float, start: str, end: str, day_ahead_dir: Path | None,
                     model_dir: Path | None) -> dict[str, Any]:
    """Score the learned day-ahead model (or, when none is found, the daily-index baseline) and print a line."""
    from edgeplane_solar import day_ahead, training

    candidates = [day_ahead_dir] if day_ahead_dir is not None else [model_dir, reference.shipped_models()]
    folder = None
    for candidate in candidates:
        if candidate is None:
            continue
        try:
            folder = training.resolve_model_folder(candidate, day_ahead.MODEL_NAME)
            if (folder / "model.onnx").exists() and folder.parent.name == day_ahead.MODEL_NAME:
                break
            folder = None
        except FileNotFoundError:
            if day_ahead_dir is not None:
                raise click.ClickException(f"{day_ahead_dir}: no {day_ahead.MODEL_NAME} model here; train one with "
                                           "'edgeplane solar train --day-ahead'") from None
    data = day_ahead.prepare(p, plant, capacity, start, end)
    q = day_ahead.run_onnx(folder / "model.onnx", data.x) if folder is not None else None
    d = day_ahead.score(data, q)
    what = f"model {folder}" if folder is not None else "no day-ahead model found: the daily-index baseline"
    cover = f"  P10-P90 {d['coverage_p10_p90']:.1%}" if q is not None else ""
    click.echo(f"day-ahead ({what}; issued at 00:00 UTC for the UTC day, no weather forecast): n {d['n']}  "
               f"nRMSE {d['nrmse']:.2%}  nMAE {d['nmae']:.2%}  skill vs 24 h persistence {d['skill_persistence']:.3f} "
               f"(its nRMSE {d['nrmse_persistence']:.2%})  vs smart persistence {d['skill_smart_persistence']:.3f} "
               f"(its nRMSE {d['nrmse_smart_persistence']:.2%})  vs daily-index baseline {d['skill_daily_index']:.3f} "
               f"(its nRMSE {d['nrmse_daily_index']:.2%}){cover}")
    return d


@solar.command()
@click.option("--site", "site_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Site file (default: configs/solar-plant.yaml of this repository).")
@click.option("--duration", default=None, help="Stop after this long (e.g. 5min). Default: until Ctrl-C.")
@click.option("--every", default="5s", show_default=True, help="How often the state is printed.")
@click.option("--inject", "injects", multiple=True,
              help="WHEN:ACTION:INVERTER[:ARG], e.g. 40s:trip:inv2, 60s:lose-string:inv1:2, 80s:restore:inv2.")
@click.option("--curtail", "curtails", multiple=True, help="WHEN:LIMIT[:EXPIRY], e.g. 20s:50%, 30s:9kW:2min, 90s:off.")
def demo(site_path: Path | None, duration: str | None, every: str, injects: tuple[str, ...], curtails: tuple[str, ...]) -> None:
    """Run the reference PV plant and print live forecast, diagnosis and dispatch state."""
    import asyncio
    import logging

    from edgeplane.config import parse_duration
    from edgeplane.errors import EdgeplaneError

    from edgeplane_solar import demo as demo_module

    site_path = site_path or demo_module.default_site()
    if not site_path.exists():
        raise click.ClickException(f"{site_path}: no such site file; pass --site configs/solar-plant.yaml")
    try:
        schedule = [demo_module.parse_fault(t) for t in injects] + [demo_module.parse_limit(t) for t in curtails]
        seconds = parse_duration(duration) if duration else None
        period = parse_duration(every)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    # the host's own log stays at warnings, so the state table is readable; alerts print as they come
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("edgeplane.solution").setLevel(logging.ERROR)  # their alerts are printed by the demo
    try:
        asyncio.run(demo_module.run_demo(site_path, duration=seconds, every=period, schedule=schedule, echo=click.echo))
    except EdgeplaneError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        pass


@solar.command()
@click.argument("action", type=click.Choice(["trip", "restore", "lose-string", "clip", "freeze", "unfreeze",
                                             "freeze-irradiance", "unfreeze-irradiance"]))
@click.argument("inverter", default="inv1")
@click.argument("argument", default=None, required=False, type=int)
@click.option("--station", default="127.0.0.1:15020", show_default=True, help="The plant simulator's weather station.")
def inject(action: str, inverter: str, argument: int | None, station: str) -> None:
    """Inject a fault into a running plant simulator: e.g. `trip inv2`, `lose-string inv1 2`, `clip inv3 6000`."""
    import asyncio
    import re

    from edgeplane_solar.demo import send_fault

    host, _, port = station.rpartition(":")
    number = int(re.sub(r"\D", "", inverter) or 0)
    if action == "clip" and argument:
        argument = argument // 10  # the register holds watts / 10
    try:
        asyncio.run(send_fault(host or "127.0.0.1", int(port), number, action, argument or 0))
    except (ConnectionError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"injected {action} on {inverter}")
