"""``edgeplane pdm``: train and evaluate the three models, run the line simulator and the demo.

Every train/evaluate command prints a table; with ``--json`` one JSON object is the last line
(keys: ``accuracy``, ``rmse``, ``score``, ``lead_time_hours``, ``false_alerts`` as they apply).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgeplane.errors import EdgeplaneError

from edgeplane_pdm.datasets import shared_data
from edgeplane_pdm.onset import OnsetRules

MODELS = Path(__file__).parent / "models"
FAULTS, RUL, ANOMALY = "pdm-faults", "pdm-rul", "pdm-anomaly"


def _latest(folder: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """(model.onnx path, manifest) of the newest version of ``name`` in a registry folder."""
    from edgeplane.inference import ModelRegistry

    registry = ModelRegistry(folder)
    versions = registry.versions(name)
    if not versions:
        raise click.ClickException(f"no model {name!r} in {folder}: train one with `edgeplane pdm train` or pass --model")
    home = folder / name / versions[-1]
    manifest = json.loads((home / "manifest.json").read_text())
    return home / manifest.get("file", "model.onnx"), manifest


def _rel(path: Path) -> str:
    """``path`` relative to the working folder when it is below or beside it (commands in manifests stay portable)."""
    import os

    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _add(out: Path, onnx_bytes: bytes, name: str, command: str, data: list[str], metrics: dict[str, float], **extra: Any) -> str:
    from edgeplane.inference import ModelRegistry, Provenance

    registry = ModelRegistry(out)
    versions = registry.versions(name)
    version = str(int(versions[-1]) + 1) if versions and versions[-1].isdigit() else "1"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onnx_bytes)
        registry.add(path, name, version, Provenance(command=command, data=data, metrics=metrics, **extra))
    return version


def _table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [[str(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, r in enumerate(cells):
        click.echo("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if j == 0:
            click.echo("  ".join("-" * w for w in widths))


def _json(as_json: bool, obj: dict[str, Any]) -> None:
    if as_json:
        click.echo(json.dumps(obj))


class BadInput(EdgeplaneError, click.ClickException):
    """Bad input data (a missing file, an unknown column layout, a name that matches nothing): exit status 2."""

    exit_code = 2


class _Group(click.Group):
    """Turns the data readers' errors (a missing file, a misnamed record) into one-line CLI errors, exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (FileNotFoundError, ValueError) as e:
            raise BadInput(str(e)) from None


@click.group(name="pdm", cls=_Group)
def pdm() -> None:
    """Predictive maintenance: models, evaluations, the factory line simulator and demo."""


@pdm.group(cls=_Group)
def train() -> None:
    """Train a model and add it to a model registry folder."""


@pdm.group(cls=_Group)
def evaluate() -> None:
    """Evaluate a model on public data, without leaks."""


_json_opt = click.option("--json", "as_json", is_flag=True, help="print one JSON object as the last line")


# -- faults ---------------------------------------------------------------------------------------

@train.command("faults")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="CWRU .mat folder (default ../shared/data/cwru)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="model registry folder")
@_json_opt
def train_faults(data_dir: Path | None, out: Path, as_json: bool) -> None:
    """Fault classifier: leave-one-load-out validation (whole recordings held out), then a model on
    segments 0..3 of every record (the last segment stays out for `evaluate faults` and the demo)."""
    from edgeplane_pdm import faults
    from edgeplane_pdm.datasets import load_cwru

    data_dir = data_dir or shared_data("cwru")
    records = load_cwru(data_dir)
    data = faults.featurize(records)
    result: dict[str, Any] = {"windows": int(len(data.x))}
    loads = sorted(set(data.load.tolist()))
    if len(loads) > 1:
        folds = faults.leave_one_load_out(data)
        _table([[f["load"], f"{f['accuracy']:.4f}", f"{f['family_accuracy']:.4f}", f["windows"], ", ".join(f["split_records"]) or "-",
                 "; ".join(f"{t}->{p} {n}" for t, p, n in f["confusion"][:4]) or "-"] for f in folds],
               ["held-out load (hp)", "accuracy", "defect location", "windows", "split (only at this load)", "top confusions"])
        accuracy = float(np.mean([f["accuracy"] for f in folds]))
        # baselines under the same folds: log RMS alone, and the 18 window features (absolute level included)
        window_data = faults.window_feature_data(records, data)
        baselines = {"log RMS only": faults.FaultData(window_data.x[:, :1], data.label, data.record, data.segment, data.load),
                     "18 window features (with level)": window_data}
        baseline_folds = {name: faults.leave_one_load_out(d) for name, d in baselines.items()}
        _table([[name, *(f"{f['accuracy']:.4f}" for f in bf)] for name, bf in
                [("fault features (this model)", folds), *baseline_folds.items()]],
               ["inputs", *(f"held-out load {f['load']}" for f in folds)])
        result["baselines"] = {name: {str(f["load"]): f["accuracy"] for f in bf} for name, bf in baseline_folds.items()}
        result.update(validation="leave-one-load-out", accuracy_by_held_out_load={str(f["load"]): f["accuracy"] for f in folds},
                      family_accuracy_by_held_out_load={str(f["load"]): f["family_accuracy"] for f in folds})
        metrics = {f"lolo_accuracy_load{f['load']}": f["accuracy"] for f in folds}
    else:
        accuracy, classes, confusion, seg_folds = faults.cross_validate(data)
        _confusion_table(classes, confusion)
        _table([[k, f"{a:.4f}"] for k, a in enumerate(seg_folds)], ["held-out segment", "accuracy"])
        click.echo(f"only load {loads[0]} in {data_dir}: no recording can be held out, so this is segment-held-out "
                   f"(it mostly measures recognising the recording)")
        result.update(validation="segment-held-out")
        metrics = {"segment_cv_accuracy": accuracy}
    holdout = faults.SEGMENTS - 1
    train_rows = data.segment != holdout
    model = faults.fit(data.x[train_rows], data.label[train_rows])
    version = _add(out, faults.to_onnx(model, data.x.shape[1]), FAULTS,
                   f"edgeplane pdm train faults --data {_rel(data_dir)} --out {_rel(out)}", [str(p.name) for p in sorted(data_dir.glob('*.mat'))],
                   metrics, holdout_segment=holdout, segments=faults.SEGMENTS, validation=result["validation"],
                   records=sorted(set(data.record.tolist())), classes=list(model.classes_), features="fault_features")
    click.echo(f"{result['validation']} accuracy {accuracy:.4f} (mean over folds) over {len(data.x)} windows; {FAULTS} version {version} in {out}")
    result.update(accuracy=accuracy, version=version)
    _json(as_json, result)


def _confusion_table(classes: list[str], confusion: np.ndarray) -> None:
    _table([[c, *row.tolist()] for c, row in zip(classes, confusion)], ["true \\ predicted", *classes])


@evaluate.command("faults")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), default=MODELS, help="model registry folder (default: shipped)")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="CWRU .mat folder")
@_json_opt
def evaluate_faults(model_dir: Path, data_dir: Path | None, as_json: bool) -> None:
    """Accuracy and confusion matrix: records the model saw are scored on their held-out segment only."""
    from edgeplane_pdm import faults
    from edgeplane_pdm.datasets import load_cwru

    path, manifest = _latest(model_dir, FAULTS)
    prov = manifest.get("provenance", {})
    seen, holdout = set(prov.get("records", [])), prov.get("holdout_segment", faults.SEGMENTS - 1)
    data = faults.featurize(load_cwru(data_dir or shared_data("cwru")))
    keep = np.array([(r not in seen) or (s == holdout) for r, s in zip(data.record, data.segment)])
    labels, _ = faults.predict_onnx(path, data.x[keep])
    truth, loads = data.label[keep], data.load[keep]
    classes = sorted(set(truth.tolist()) | set(labels.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    for t, p in zip(truth, labels):
        confusion[index[t], index[p]] += 1
    _confusion_table(classes, confusion)
    per_load = {int(l): float(np.mean(labels[loads == l] == truth[loads == l])) for l in np.unique(loads)}
    _table([[l, f"{a:.4f}", int(np.sum(loads == l))] for l, a in per_load.items()], ["load (hp)", "accuracy", "windows"])
    accuracy = float(np.mean(labels == truth))
    click.echo(f"accuracy {accuracy:.4f} on {len(truth)} held-out windows ({path})")
    _json(as_json, {"accuracy": accuracy, "windows": int(len(truth)), "accuracy_by_load": per_load})


# -- remaining useful life -------------------------------------------------------------------------

@train.command("rul")
@click.option("--data", "data_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="train_FD001.txt")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="model registry folder")
@click.option("--folds", default=5, show_default=True)
@_json_opt
def train_rul(data_file: Path | None, out: Path, folds: int, as_json: bool) -> None:
    """RUL regressor: nested engine-grouped cross-validation (the history length H is chosen inside
    each outer fold on its training engines only), then a model on every engine with the majority H."""
    from edgeplane_pdm import rul
    from edgeplane_pdm.datasets import load_cmapss

    data_file = data_file or shared_data("cmapss", "train_FD001.txt")
    data = load_cmapss(data_file)
    cv = rul.nested_cross_validate(data, folds, log=click.echo)
    _table([[k, h, f"{r:.2f}"] for k, (h, r) in enumerate(zip(cv["chosen"], cv["folds"]))], ["outer fold (held-out engines)", "chosen H", "RMSE"])
    history = cv["history"]
    windows = rul.windows_for(history)
    mean, std = rul.normaliser(data)
    x, y, _ = rul.training_set(data, mean, std, windows=windows, stride=rul.TRAIN_STRIDE)
    model = rul.fit(x, y)
    metrics = {"cv_rmse": cv["rmse"], "cv_rmse_capped_truth": cv["rmse_capped_truth"], "cv_score_per_100": cv["score"]}
    version = _add(out, rul.to_onnx(model, mean, std), RUL, f"edgeplane pdm train rul --data {_rel(data_file)} --out {_rel(out)}",
                   [data_file.name], metrics, sensor_mean=mean.tolist(), sensor_std=std.tolist(), sensors=list(rul.SENSORS),
                   history=history, windows=list(windows), chosen_per_fold=cv["chosen"],
                   inner_rmse=[{str(h): r for h, r in d.items()} for d in cv["inner_rmse"]], rul_cap=rul.RUL_CAP)
    click.echo(f"nested engine-grouped CV: RMSE {cv['rmse']:.2f} (vs capped truth {cv['rmse_capped_truth']:.2f}), "
               f"PHM08 score {cv['score']:.0f} per 100 engines, {cv['cuts']} cut points; H chosen per fold {cv['chosen']}; "
               f"{RUL} version {version} in {out}")
    _json(as_json, {"rmse": cv["rmse"], "rmse_capped_truth": cv["rmse_capped_truth"], "score": cv["score"],
                    "history": history, "chosen_per_fold": cv["chosen"], "version": version})


@evaluate.command("rul")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), default=MODELS)
@click.option("--test", "test_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="official test_FD00x.txt")
@click.option("--rul", "rul_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="official RUL_FD00x.txt")
@click.option("--data", "data_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="without --test: re-run the engine-grouped cross-validation on this training file")
@_json_opt
def evaluate_rul(model_dir: Path, test_file: Path | None, rul_file: Path | None, data_file: Path | None, as_json: bool) -> None:
    """RMSE and PHM08 score on the official test format (test file + RUL file), or engine-grouped CV."""
    from edgeplane_pdm import rul
    from edgeplane_pdm.datasets import load_cmapss

    if test_file is None:
        cv = rul.cross_validate(load_cmapss(data_file or shared_data("cmapss", "train_FD001.txt")))
        _table([[k, f"{r:.2f}"] for k, r in enumerate(cv["folds"])], ["fold", "RMSE"])
        click.echo(f"engine-grouped CV: RMSE {cv['rmse']:.2f}, PHM08 score {cv['score']:.0f} per 100 engines")
        _json(as_json, {"rmse": cv["rmse"], "score": cv["score"], "rmse_capped_truth": cv["rmse_capped_truth"]})
        return
    if rul_file is None:
        raise click.UsageError("--test needs --rul (the official RUL_FD00x.txt with one true RUL per test engine)")
    import onnxruntime as ort

    path, manifest = _latest(model_dir, RUL)
    windows = rul.model_windows(manifest.get("provenance", {}))
    x, truth = rul.test_set(load_cmapss(test_file), np.loadtxt(rul_file).ravel(), rul.RAW_MEAN, rul.RAW_STD, windows)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pred = np.clip(sess.run(None, {"features": x.astype(np.float32)})[0].ravel(), 0, rul.RUL_CAP)
    rmse, score = float(np.sqrt(np.mean((pred - truth) ** 2))), rul.phm08_score(truth, pred)
    _table([["RMSE", f"{rmse:.2f}"], ["PHM08 score", f"{score:.0f}"], ["engines", len(truth)]], ["metric", "value"])
    _json(as_json, {"rmse": rmse, "score": score, "engines": int(len(truth))})


# -- anomaly ---------------------------------------------------------------------------------------

@evaluate.command("anomaly")
@click.option("--data", "data_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="IMS-style CSV: a time column, then 'Bearing <n>' or 'Bearing <n> <channel>' columns (default: IMS test 2)")
@click.option("--failed", default=None, help='bearings that failed at the end of the run, comma-separated: "Bearing 3,Bearing 4"')
@click.option("--baseline-hours", default=OnsetRules.baseline_hours, show_default=True, help="healthy reference window after break-in")
@click.option("--break-in-hours", default=OnsetRules.break_in_hours, show_default=True, help="first hours never used as baseline")
@_json_opt
def evaluate_anomaly(data_file: Path | None, failed: str | None, baseline_hours: float, break_in_hours: float, as_json: bool) -> None:
    """Degradation onset per bearing: lead time before the end of the run and false alerts (with
    --failed), data-quality alerts apart. Nothing is fitted to the run's failure (see the README)."""
    from edgeplane_pdm.datasets import load_ims
    from edgeplane_pdm.onset import evaluate_run

    run = load_ims(data_file or shared_data("ims", "merged_dataset_BearingTest_2.csv"))
    names = [n for n in failed.split(",") if n.strip()] if failed is not None else None
    if names is not None and not names:
        raise BadInput('--failed is empty: name the bearings that failed, e.g. --failed "Bearing 3,Bearing 4"')
    result = evaluate_run(run, names, OnsetRules(break_in_hours=break_in_hours, baseline_hours=baseline_hours))
    rows = []
    for r in result["bearings"]:
        dq = ", ".join(f"{d['channel']} {d['reason']} @{d['raised_h']} h" for d in r["data_quality_alerts"]) or "-"
        times = ", ".join(f"{t:g}" for t in r["alert_times_h"]) or "-"
        if names is None:
            rows.append([r["bearing"], len(r["channels"]), r["alerts"], times, dq])
        else:
            lead = "-" if r["lead_time_hours"] is None else r["lead_time_hours"]
            rows.append([r["bearing"], "failed" if r["failed"] else "healthy", len(r["channels"]), times, lead, r["false_alerts"], dq])
    if names is None:
        _table(rows, ["bearing", "channels", "degradation alerts", "raised at (h)", "data-quality alerts"])
    else:
        _table(rows, ["bearing", "state", "channels", "degradation alerts at (h)", "lead time (h)", "false alerts", "data-quality alerts"])
    summary = f"run length {result['run_hours']:.1f} h; baseline hours {break_in_hours:g}..{break_in_hours + baseline_hours:g}"
    if names is not None:
        summary += f"; lead time {result['lead_time_hours']} h; false alerts {result['false_alerts']}"
    click.echo(summary)
    _json(as_json, result)


@train.command("anomaly")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def train_anomaly(out: Path) -> None:
    """Export the baseline scorer (its parameters are learned per asset at commissioning)."""
    from edgeplane_pdm.anomaly import scorer_onnx

    version = _add(out, scorer_onnx(), ANOMALY, f"edgeplane pdm train anomaly --out {_rel(out)}", [], {},
                   notes="inputs features, center, scale (batch x features); outputs z and score = rms(z)")
    click.echo(f"{ANOMALY} version {version} in {out}")


# -- simulator and demo ----------------------------------------------------------------------------

@pdm.command("simulate")
@click.option("--port", default=4850, show_default=True)
@click.option("--machines", default=3, show_default=True)
@click.option("--degrade-after", default=60.0, show_default=True, help="seconds before the last machine starts to degrade")
@click.option("--degrade-over", default=240.0, show_default=True, help="seconds from onset to a severe fault")
@click.option("--period", default=1.0, show_default=True, help="seconds between waveform snapshots")
def simulate(port: int, machines: int, degrade_after: float, degrade_over: float, period: float) -> None:
    """Serve the factory line on OPC UA (waveform and temperature nodes per machine)."""
    import asyncio

    from edgeplane_pdm.linesim import serve

    asyncio.run(serve(port, machines=machines, degrade_after=degrade_after, degrade_over=degrade_over, period=period))


@pdm.command("demo")
@click.option("--site", type=click.Path(dir_okay=False, path_type=Path), default=None, help="default: configs/factory.yaml")
@click.option("--duration", default=300.0, show_default=True, help="seconds to run")
@click.option("--until-alert", is_flag=True, help="stop at the first alert")
@_json_opt
def demo(site: Path | None, duration: float, until_alert: bool, as_json: bool) -> None:
    """Run the reference factory site with its cloud end; show health per machine and the alerts."""
    import asyncio

    from edgeplane_pdm.demo import run_demo

    result = asyncio.run(run_demo(site, duration, until_alert=until_alert))
    _json(as_json, result)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pdm())
