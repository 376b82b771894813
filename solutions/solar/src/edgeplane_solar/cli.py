"""``edgeplane solar ...``: fit, train, backtest, the reference demo and fault/curtailment injection."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from edgeplane_solar import reference


def _command(name: str) -> str:
    """The command line that reproduces this run, from the options it was given (recorded in provenance)."""
    ctx = click.get_current_context()
    parts = [f"edgeplane solar {name}"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value is False or not param.opts or value == param.default:
            continue
        flag = max(param.opts, key=len)
        parts.append(flag if value is True else f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def _fail(message: str) -> NoReturn:
    """Bad input: say what and how to fix it, exit 2."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)


def _power_options(f: Any) -> Any:
    options = [
        click.option("--power", type=click.Path(path_type=Path), default=None,
                     help="Power file (parquet/CSV). Default: system 50."),
        click.option("--power-column", default=None, help="Default: the plant file's, else the first *ac_power* column."),
        click.option("--power-unit", type=click.Choice(["W", "kW"]), default=None, help="Default: W."),
        click.option("--power-time", default=None,
                     help="Time base ZONE[,LABEL[,INTERVAL]], e.g. 'America/Denver,end,15min' (wall clock with daylight "
                          "saving, 15-min averages labelled at their end) or 'UTC-07:00,instant'. Default: the plant "
                          "file's, else the file's own offset."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _weather_options(f: Any) -> Any:
    options = [
        click.option("--weather", type=click.Path(path_type=Path), default=None,
                     help="Irradiance file (the plant's live sensor or station): a 'ghi' column or a '*poa*' column, W/m2. "
                          "Default: system 50 (PSM3)."),
        click.option("--irradiance-column", default=None, help="Default: 'ghi', else the first *poa* column."),
        click.option("--weather-time", default=None, help="Time base of the weather file, as --power-time."),
        click.option("--no-weather", is_flag=True, help="Forecast from power alone (the weather inputs say 'unknown')."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _load_inputs(described: Any, power: Path | None, power_column: str | None, power_unit: str | None,
                 power_time: str | None, weather: Path | None, irradiance_column: str | None, weather_time: str | None,
                 no_weather: bool) -> tuple[Any, Any]:
    """Read power and weather through their declared time bases; the plant file's data section fills what is not given."""
    from edgeplane_solar import dataset
    from edgeplane_solar.timebase import TimeBase, TimeBaseError

    data = described.data if described is not None else None
    if power is None:
        power = reference.default_power()
        if data is None:
            data = reference.system50().data
    if weather is None and not no_weather:
        weather = reference.default_weather()
    try:
        pt = TimeBase.parse(power_time or (data.power.time if data else None), what="--power-time")
        p = dataset.load_power(power, power_column or (data.power.column if data else None), pt,
                               power_unit or (data.power.unit if data else None))
        w = None
        if not no_weather and weather is not None:
            wt = TimeBase.parse(weather_time or (data.weather.time if data else None), what="--weather-time")
            w = dataset.load_weather(weather, wt, irradiance_column or (data.weather.column if data else None))
    except (dataset.DataError, TimeBaseError) as e:
        _fail(str(e))
    for note in p.notes + (w.notes if w is not None else []):
        click.echo(f"note: {note}", err=True)
    return p, w


def _plant_file(path: Path | None) -> Any:
    from edgeplane_solar import plantfile

    if path is None:
        return None
    try:
        return plantfile.load(path)
    except plantfile.PlantFileError as e:
        _fail(str(e))


def _override(described: Any, capacity: float | None, tilt: float | None, azimuth: float | None, lat: float | None,
              lon: float | None, alt: float | None) -> tuple[Any, float]:
    """The plant and capacity after command-line overrides."""
    from edgeplane_solar.plant import PlantConfig

    data = described.plant.model_dump()
    for key, value in (("lat", lat), ("lon", lon), ("alt", alt)):
        if value is not None:
            data["location"][key] = value
    for inv in data["inverters"].values():
        if tilt is not None:
            inv["tilt"] = tilt
        if azimuth is not None:
            inv["azimuth"] = azimuth % 360
    try:
        plant = PlantConfig.model_validate(data)
    except ValueError as e:
        _fail(f"plant description: {e}")
    return plant, capacity or described.capacity_w


@click.group()
def solar() -> None:
    """PV plant: forecasting (fit, train, backtest), the reference deployment (demo, inject)."""


@solar.command()
@_power_options
@click.option("--lat", type=float, required=True)
@click.option("--lon", type=float, required=True)
@click.option("--alt", type=float, default=0.0, show_default=True)
@click.option("--timezone", "zone", default="UTC", show_default=True, help="The plant's zone (for people; data is UTC).")
@click.option("--name", default="plant", show_default=True, help="The inverter/array name in the description.")
@click.option("--ac-kw", type=float, default=None, help="AC nameplate. Default: the largest measured power.")
@click.option("--start", required=True, help="Fit span start (UTC). Use the training span only.")
@click.option("--end", required=True, help="Fit span end (UTC, exclusive).")
@click.option("--tilt", type=float, default=None, help="Fix the tilt (fit the rest).")
@click.option("--azimuth", type=float, default=None, help="Fix the azimuth (fit the rest).")
@click.option("--orientation-column", default=None,
              help="A plane-of-array irradiance column of the --weather file to fit the orientation on (the sensor is "
                   "in the array's plane; it does not clip). Default: fit on power.")
@click.option("--weather", type=click.Path(path_type=Path), default=None,
              help="The plant's irradiance file (recorded in the plant file; read for --orientation-column).")
@click.option("--weather-column", default=None, help="Recorded in the plant file: the weather file's irradiance column.")
@click.option("--weather-time", default=None, help="The weather file's time base (recorded in the plant file).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Plant file to write (YAML).")
def fit(power: Path | None, power_column: str | None, power_unit: str | None, power_time: str | None, lat: float,
        lon: float, alt: float, zone: str, name: str, ac_kw: float | None, start: str, end: str, tilt: float | None,
        azimuth: float | None, orientation_column: str | None, weather: Path | None, weather_column: str | None,
        weather_time: str | None, out: Path) -> None:
    """Fit tilt, azimuth and size to measured power on [START, END) and write the plant description file.

    Also prints how far the daily centre of measured power sits from that of the fitted clear-sky
    power: more than 15 minutes means a time base is probably declared wrong.
    """
    from edgeplane_solar import dataset, fitting, plantfile
    from edgeplane_solar.timebase import TimeBase, TimeBaseError

    if power is None:
        _fail("--power is required: the plant's measured AC power")
    p, _ = _load_inputs(None, power, power_column, power_unit, power_time, None, None, None, True)
    sensor = None
    if orientation_column is not None:
        if weather is None:
            _fail("--orientation-column needs --weather (the file that holds the plane-of-array sensor)")
        try:
            sensor = dataset.load_power(weather, orientation_column, TimeBase.parse(weather_time, what="--weather-time"),
                                        "W")
        except (dataset.DataError, TimeBaseError) as err:
            _fail(str(err))
    s, e = dataset._utc(start), dataset._utc(end)
    try:
        result = fitting.fit(p, lat, lon, alt, s, e, ac_kw=ac_kw, timezone=zone, orientation_sensor=sensor, tilt=tilt,
                             azimuth=azimuth)
    except dataset.DataError as err:
        _fail(str(err))
    plant = fitting.plant_from_fit(result, lat, lon, alt, zone, name)
    offsets = fitting.centroid_offsets(p, plant, s, e)
    jumps = fitting.clock_change_jumps(offsets, zone) if zone.upper() != "UTC" else []
    offsets = offsets[(offsets.energy_ratio > 0.9) & (offsets.energy_ratio < 1.15)] if len(offsets) else offsets
    centre = float(offsets["offset_min"].median()) if len(offsets) else float("nan")
    command = _command("fit")
    described = plantfile.PlantFile(
        plant=plant, capacity_w=round(result.capacity_w, 1),
        data=plantfile.DataDescription(
            power=plantfile.InputDescription(column=p.source.split("'")[1], unit=power_unit or "W",
                                             time=power_time),
            weather=plantfile.InputDescription(column=weather_column, time=weather_time)),
        fit={"command": command, "file": Path(power).name, "span": [start, end], "clear_days": result.clear_days,
             "clear_steps": result.steps, "steps_from": result.selection, "cv": result.cv,
             "centroid_offset_min": round(centre, 1),
             "clock_change_jumps_min": {str(c.date()): round(j, 1) for c, j in jumps},
             "method": "orientation: least coefficient of variation of power / clear-sky POA on clear days (smooth "
                       "power); dc_kw: median ratio; capacity_w: largest power in the span"})
    plantfile.save(described, out, f"# plant description written by: {command}")
    click.echo(f"tilt {result.tilt:.0f}  azimuth {result.azimuth:.0f}  dc {result.dc_kw:.3f} kW  ac {result.ac_kw:.3f} kW  "
               f"capacity {result.capacity_w:.0f} W  from {result.steps} steps of {result.selection} ("
               f"cv {result.cv:.3f})")
    click.echo(f"daily centre of power minus that of clear-sky power: median {centre:+.1f} min over {len(offsets)} "
               "bright days")
    if result.cv > 0.15:
        click.echo(f"warning: on clear days power / clear-sky irradiance varies by {result.cv:.0%} through the day: the "
                   "time base (--power-time) or the given orientation is probably wrong", err=True)
    for change, jump in jumps:
        click.echo(f"daily centre moved {jump:+.1f} min at the clock change of {change.date()} ({zone})")
        if abs(jump) > 30:
            click.echo(f"warning: a {jump:+.0f} min jump at a clock change: the power file's clock and its declared "
                       f"time base disagree about daylight saving; declare --power-time {zone},<label> for a clock "
                       "that keeps it, or a fixed offset (UTC-07:00) for one that does not", err=True)
    if abs(centre) > 15:
        click.echo(f"warning: {centre:+.0f} min is more than 15: the power file's time base (--power-time) is probably "
                   "wrong (a whole hour: daylight saving or zone; minutes: the label)", err=True)
    click.echo(f"plant description written to {out}")


@solar.command()
@_power_options
@_weather_options
@click.option("--plant", "plant_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Plant description file (from 'edgeplane solar fit'). Default: system 50's.")
@click.option("--start", default=reference.TRAIN[0], show_default=True)
@click.option("--end", default=reference.TRAIN[1], show_default=True, help="Exclusive.")
@click.option("--epochs", type=int, default=None, help="Fix the epochs (no selection).")
@click.option("--hidden", type=int, default=None, help="Fix the hidden size (no selection).")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Model registry folder. Default: the plugin's shipped models.")
@click.option("--version", "version", default=reference.MODEL_VERSION, show_default=True)
@click.option("--day-ahead", "day_ahead", is_flag=True,
              help="Train the day-ahead model (solar-day-ahead) instead of the 15 min .. 4 h one.")
def train(power: Path | None, power_column: str | None, power_unit: str | None, power_time: str | None,
          weather: Path | None, irradiance_column: str | None, weather_time: str | None, no_weather: bool,
          plant_path: Path | None, start: str, end: str, epochs: int | None, hidden: int | None, seed: int,
          out: Path | None, version: str, day_ahead: bool) -> None:
    """Train the P10/P50/P90 forecaster (15 min .. 4 h, or --day-ahead) and add it to a model registry as ONNX.

    Size and epochs are chosen on every fourth ISO week of the span (validation), scored with
    weather on time and an hour late; the chosen setting is then trained on the whole span.
    """
    from edgeplane_solar import dataset, training

    described = _plant_file(plant_path) or reference.system50()
    p, w = _load_inputs(described if plant_path or power is None else None, power, power_column, power_unit,
                        power_time, weather, irradiance_column, weather_time, no_weather)
    plant, capacity = described.plant, described.capacity_w
    try:
        dataset.check_capacity(p, capacity)
        dataset.overlap(p, w)
    except dataset.DataError as e:
        _fail(str(e))
    command = _command("train")
    provenance = {"command": command, "plant_file": described.model_dump(mode="json", exclude_none=True),
                  "plant": plant.model_dump(), "capacity_w": capacity, "train_period": [start, end], "seed": seed,
                  "data": [f"{Path(p.source.split(':')[0]).name} [{start}, {end})"]
                  + ([f"{Path(w.source.split(':')[0]).name} [{start}, {end})"] if w is not None else [])}
    if day_ahead:
        _train_day_ahead(p.values, plant, capacity, start, end, epochs, hidden, seed, out, version, provenance)
        return
    try:
        chosen, net, report = training.select_and_fit(p, w, plant, capacity, start, end, seed=seed, epochs=epochs,
                                                      hidden=hidden, log=lambda m: click.echo(m, err=True))
    except ValueError as e:
        _fail(str(e))
    provenance.update(chosen)
    provenance["selection"] = report
    folder = training.INTRADAY.save(net, out or reference.shipped_models(), version, provenance)
    click.echo(f"chosen on validation weeks: {chosen}")
    click.echo(f"model written to {folder}")


def _train_day_ahead(p: Any, plant: Any, capacity: float, start: str, end: str, epochs: int | None,
                     hidden: int | None, seed: int, out: Path | None, version: str, provenance: dict[str, Any]) -> None:
    from edgeplane_solar import day_ahead

    data = day_ahead.prepare(p, plant, capacity, start, end)
    try:
        chosen, net, report = day_ahead.select_and_fit(data, seed=seed, epochs=epochs, hidden=hidden,
                                                       log=lambda m: click.echo(m, err=True))
    except ValueError as e:
        _fail(str(e))
    provenance = {**provenance, **chosen, "selection": report, "data": provenance["data"][:1],
                  "inputs": "no weather forecast: clear-sky power and sun at the target, yesterday's power and clear-sky index"}
    folder = day_ahead.DAY_AHEAD.save(net, out or reference.shipped_models(), version, provenance)
    r = day_ahead.score(data, day_ahead.DAY_AHEAD.run_onnx(folder / "model.onnx", data.x))
    click.echo(f"chosen on validation weeks: {chosen}")
    click.echo(f"in-sample (training period), day-ahead: n {r['n']}  nRMSE {r['nrmse']:.2%}  nMAE {r['nmae']:.2%}  "
               f"P10-P90 {r['coverage_p10_p90']:.1%}")
    click.echo(f"model written to {folder}")


@solar.command()
@_power_options
@_weather_options
@click.option("--plant", "plant_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Plant description file (from 'edgeplane solar fit'). Default: the model's plant.")
@click.option("--capacity", type=float, default=None, help="W that power is normalised by (default: the plant file's).")
@click.option("--tilt", type=float, default=None)
@click.option("--azimuth", type=float, default=None, help="Degrees from north, 180 = south.")
@click.option("--lat", type=float, default=None)
@click.option("--lon", type=float, default=None)
@click.option("--alt", type=float, default=None)
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Model folder (default: the model shipped with the plugin).")
@click.option("--day-ahead-model", "day_ahead_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Day-ahead model folder (default: --model's registry if it has one, else the shipped one).")
@click.option("--horizons", default="15min,1h,4h", show_default=True,
              help="Multiples of 15min up to 4h; 'day-ahead' adds the learned day-ahead model.")
@click.option("--start", default=None, help="UTC. Default: where the files start (system 50's default files: 2012).")
@click.option("--end", default=None, help="UTC, exclusive. Default: where the files end.")
@click.option("--weather-delay", default="0min", show_default=True,
              help="Score as if every weather value arrived this late (e.g. 1h): a late or slow weather link.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a PNG of forecast vs measured.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
def backtest(power: Path | None, power_column: str | None, power_unit: str | None, power_time: str | None,
             weather: Path | None, irradiance_column: str | None, weather_time: str | None, no_weather: bool,
             plant_path: Path | None, capacity: float | None, tilt: float | None, azimuth: float | None,
             lat: float | None, lon: float | None, alt: float | None, model_dir: Path | None, day_ahead_dir: Path | None,
             horizons: str, start: str | None, end: str | None, weather_delay: str, plot: Path | None,
             as_json: bool) -> None:
    """Score the forecaster against persistence and smart persistence on a period (every method on the same points)."""
    import pandas as pd

    from edgeplane_solar import dataset, evaluation, features, forecasting, plantfile, training

    labels = [h.strip() for h in horizons.split(",") if h.strip()]
    try:
        for label in labels:
            if label != "day-ahead":
                features.horizon_steps(label)
        delay = pd.Timedelta(weather_delay)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--horizons / --weather-delay") from None
    try:
        folder = training.INTRADAY.resolve(model_dir or reference.shipped_models())
    except FileNotFoundError as err:
        _fail(f"{err}; train one with 'edgeplane solar train'")
    prov = forecasting.read_provenance(folder)
    described = _plant_file(plant_path)
    if described is None:
        if prov.get("plant_file"):
            described = plantfile.PlantFile.model_validate(prov["plant_file"])
        else:  # a model from before plant files: its plant and capacity
            described = plantfile.PlantFile(plant=prov["plant"], capacity_w=prov.get("capacity_w") or 1.0)
    plant, cap = _override(described, capacity, tilt, azimuth, lat, lon, alt)
    defaults = power is None
    p, w = _load_inputs(described if plant_path or defaults else None, power, power_column, power_unit, power_time,
                        weather, irradiance_column, weather_time, no_weather)
    try:
        dataset.check_capacity(p, cap)
        first, last = dataset.overlap(p, w)
    except dataset.DataError as err:
        _fail(str(err))
    if start is None:
        start = reference.TEST[0] if defaults else str(first)
    if end is None:
        end = reference.TEST[1] if defaults else str(last + features.STEP)
    s, e = dataset._utc(start), dataset._utc(end)
    if s >= e or e <= first or s > last:
        _fail(f"the window {start} .. {end} misses the data ({first} .. {last} UTC); leave --start/--end out to use "
              "the files' span")
    train_period = prov.get("train_period")
    if train_period and dataset._utc(train_period[0]) < e and s < dataset._utc(train_period[1]):
        click.echo(f"warning: the window overlaps the model's training period {train_period[0]} .. {train_period[1]}: "
                   "these are not out-of-sample scores", err=True)
    day_ahead = "day-ahead" in labels
    labels = [label for label in labels if label != "day-ahead"]
    data = dataset.prepare(p, w, plant, cap, s, e, weather_delay=delay)
    try:
        q = training.INTRADAY.run_onnx(folder / "model.onnx", data.frame.x)
    except ValueError as err:
        _fail(str(err))
    results = evaluation.score(data, q, labels)
    empty = [label for label, r in results.items() if r["n"] == 0]
    if empty:
        _fail(f"nothing to score at {', '.join(empty)} in {start} .. {end}: no step has both complete inputs (the last "
              "hour of power) and a measured target in daylight; check the window, the time bases and the power "
              "column (see the notes above)")
    weather_note = "no weather" if w is None else f"weather {w.source} arriving {delay} late"
    click.echo(f"backtest {s} .. {e} UTC of {p.source}, {weather_note}, model {folder}, capacity {cap:.0f} W, daylight "
               f"only (sun above 5 deg)")
    summary = evaluation.summary_json(results)
    if labels:
        click.echo(evaluation.table(results))
    if day_ahead:
        d = _score_day_ahead(p.values, plant, cap, str(s), str(e), day_ahead_dir, model_dir)
        summary["day-ahead"] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in d.items()}
    if plot is not None and labels:
        evaluation.plot(data, q, "1h" if "1h" in labels else labels[0], plot)
        click.echo(f"plot written to {plot}")
    if as_json:
        click.echo(json.dumps(summary))


def _score_day_ahead(p: Any, plant: Any, capacity: float, start: str, end: str, day_ahead_dir: Path | None,
                     model_dir: Path | None) -> dict[str, Any]:
    """Score the learned day-ahead model (or, when none is found, the daily-index baseline) and print a line."""
    from edgeplane_solar import day_ahead

    candidates = [day_ahead_dir] if day_ahead_dir is not None else [model_dir, reference.shipped_models()]
    folder = None
    for candidate in candidates:
        if candidate is None:
            continue
        try:
            folder = day_ahead.DAY_AHEAD.resolve(candidate)
            if (folder / "model.onnx").exists() and folder.parent.name == day_ahead.MODEL_NAME:
                break
            folder = None
        except FileNotFoundError:
            if day_ahead_dir is not None:
                _fail(f"{day_ahead_dir}: no {day_ahead.MODEL_NAME} model here; train one with "
                      "'edgeplane solar train --day-ahead'")
    data = day_ahead.prepare(p, plant, capacity, start, end)
    try:
        q = day_ahead.DAY_AHEAD.run_onnx(folder / "model.onnx", data.x) if folder is not None else None
    except ValueError as err:
        _fail(str(err))
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
