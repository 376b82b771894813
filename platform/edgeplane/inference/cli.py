"""``edgeplane models``: add, list, remove, bench and quantize models in a site's registry.

The registry is the site file's ``inference.models`` folder (``--site site.yaml``), or a folder
given with ``--models DIR`` (default: ``$EDGEPLANE_MODELS`` or ``./models``). onnxruntime is
imported only when a command needs it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from edgeplane.inference.errors import InferenceError

__all__ = ["models"]


class _Target:
    def __init__(self, models_dir: Path, config: Any, base_dir: Path):
        self.models_dir = models_dir
        self.config = config
        self.base_dir = base_dir

    def registry(self) -> Any:
        from edgeplane.inference.registry import ModelRegistry

        return ModelRegistry(self.models_dir)

    def trust(self) -> Any:
        from edgeplane.inference.trust import TrustPolicy

        return TrustPolicy.from_files(self.config.key_files(self.base_dir), self.config.trust.required)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group()
@click.option("--site", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Use this site file's inference section.")
@click.option("--models", "models_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The registry folder (default: $EDGEPLANE_MODELS or ./models).")
@click.pass_context
def models(ctx: click.Context, site: Path | None, models_dir: Path | None) -> None:
    """Manage the models the inference service serves."""
    from edgeplane.inference.config import InferenceConfig

    if site is not None:
        import yaml

        try:
            section = (yaml.safe_load(site.read_text()) or {}).get("inference") or {}
            config = InferenceConfig.model_validate(section)
        except Exception as e:  # noqa: BLE001 - any problem with the file is the user's to fix
            _fail(f"{site}: inference section is invalid: {e} (check it with `edgeplane validate {site}`)")
        base = site.resolve().parent
        target = _Target(models_dir or config.models_dir(base), config, base)
    else:
        folder = models_dir or Path(os.environ.get("EDGEPLANE_MODELS", "models"))
        target = _Target(folder, InferenceConfig(models=str(folder)), Path.cwd())
    ctx.obj = target


def _parse_metric(values: tuple[str, ...]) -> dict[str, float]:
    metrics = {}
    for item in values:
        key, sep, value = item.partition("=")
        try:
            metrics[key.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: write NAME=NUMBER, e.g. f1=0.93", param_hint="--metric") from None
        if not sep:
            raise click.BadParameter(f"{item!r}: write NAME=NUMBER", param_hint="--metric")
    return metrics


@models.command("add")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--name", required=True, help="Model name (what solutions ask for).")
@click.option("--version", "version", required=True, help="Version (a new one each time; versions are immutable).")
@click.option("--command", "command", help="Provenance: the training command that made it.")
@click.option("--data", multiple=True, help="Provenance: data it was trained on (repeatable).")
@click.option("--metric", multiple=True, help="Provenance: evaluation metric NAME=VALUE (repeatable).")
@click.option("--sign-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="ed25519 private key to sign the manifest with.")
@click.pass_obj
def add(target: _Target, file: Path, name: str, version: str, command: str | None, data: tuple[str, ...],
        metric: tuple[str, ...], sign_key: Path | None) -> None:
    """Add an ONNX FILE to the registry with a manifest (sha256, signature, provenance)."""
    from edgeplane.inference.manifest import Provenance
    from edgeplane.inference.trust import load_private_key

    provenance = Provenance(command=command, data=list(data), metrics=_parse_metric(metric))
    try:
        key = load_private_key(sign_key) if sign_key else None
        manifest = target.registry().add(file, name, version, provenance, sign_key=key)
    except (InferenceError, ValueError) as e:
        _fail(str(e))
    signed = f", signed by {manifest.signature.key_id}" if manifest.signature else ""
    click.echo(f"added {name} {version} ({manifest.size:,} bytes, sha256 {manifest.sha256[:12]}{signed}) to {target.models_dir}")


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.option("--no-verify", is_flag=True, help="Skip the sha256 and signature checks.")
@click.pass_obj
def list_models(target: _Target, as_json: bool, no_verify: bool) -> None:
    """Every model version, its signature, integrity under the site's trust policy, and the provider."""
    from edgeplane.inference.runtime import choose_providers

    report = choose_providers(tuple(target.config.providers))
    rows = []
    registry = target.registry()
    trust = None if no_verify else target.trust()
    for entry in registry.entries():
        row: dict[str, Any] = {"name": entry.name, "version": entry.version}
        try:
            manifest = entry.manifest()
            row.update(size=manifest.size, sha256=manifest.sha256, inputs=[s.describe() for s in manifest.inputs],
                       outputs=[s.describe() for s in manifest.outputs], provenance=manifest.provenance.model_dump(exclude_none=True))
            row["status"] = "not checked" if trust is None else "ok, " + registry.verify(entry.name, entry.version, trust).trust
        except InferenceError as e:
            row["status"] = f"REFUSED: {e}"
        rows.append(row)
    if as_json:
        click.echo(json.dumps({"providers": list(report.providers), "not_used": report.rejected, "models": rows}, indent=2))
        return
    click.echo(report.summary())
    if not rows:
        click.echo(f"no models in {target.models_dir} (add one with `edgeplane models add FILE --name N --version 1`)")
    for row in rows:
        click.echo(f"{row['name']} {row['version']}: {row['status']}")
        if "sha256" in row:
            click.echo(f"    {row['size']:,} bytes, sha256 {row['sha256'][:12]}; in {', '.join(row['inputs'])}; out {', '.join(row['outputs'])}")
            command = row["provenance"].get("command")
            if command:
                click.echo(f"    made by: {command}")


@models.command("remove")
@click.argument("name")
@click.option("--version", "version", help="Remove only this version (default: every version).")
@click.pass_obj
def remove(target: _Target, name: str, version: str | None) -> None:
    """Remove a model (or one version of it) from the registry."""
    try:
        removed = target.registry().remove(name, version)
    except InferenceError as e:
        _fail(str(e))
    click.echo(f"removed {name} version{'s' if len(removed) > 1 else ''} {', '.join(removed)}")


def _session(path_or_bytes: Any, threads: int) -> Any:
    from edgeplane.inference.runtime import choose_providers, onnxruntime, session_options

    ort = onnxruntime()
    providers = list(choose_providers(("cuda", "cpu")).providers)
    return ort.InferenceSession(path_or_bytes, session_options(threads), providers=providers)


def _time_runs(session: Any, feeds: dict[str, Any], seconds: float) -> list[float]:
    names = [o.name for o in session.get_outputs()]
    session.run(names, feeds)
    times: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(times) < 5:
        began = time.perf_counter()
        session.run(names, feeds)
        times.append(time.perf_counter() - began)
    return times


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _loaded(target: _Target, name: str, version: str | None) -> Any:
    from edgeplane.inference.runtime import LoadedModel

    try:
        verified = target.registry().verify(name, version, target.trust())
    except InferenceError as e:
        _fail(str(e))
    return verified, LoadedModel(verified.manifest, _session(verified.model_bytes, 1), verified.trust)


@models.command("bench")
@click.argument("name")
@click.option("--version", "version", help="Version (default: the newest).")
@click.option("--batch", "batches", default="1,8,64", show_default=True, help="Batch sizes, comma separated.")
@click.option("--seconds", default=1.0, show_default=True, help="Time per batch size.")
@click.option("--threads", type=int, help="Intra-op threads (default: the usable cores).")
@click.pass_obj
def bench(target: _Target, name: str, version: str | None, batches: str, seconds: float, threads: int | None) -> None:
    """Latency and throughput of one model at several batch sizes (plain session.run, no service)."""
    from edgeplane.inference.runtime import usable_cpus

    verified, model = _loaded(target, name, version)
    session = _session(verified.model_bytes, threads or usable_cpus())
    click.echo(f"{name} {verified.manifest.version} on {session.get_providers()[0]}, {threads or usable_cpus()} threads")
    click.echo(f"{'batch':>6} {'p50 ms':>10} {'p99 ms':>10} {'rows/s':>12}")
    for size in (int(b) for b in batches.split(",")):
        feeds = model.zeros(size if model.batchable else 1)
        times = _time_runs(session, feeds, seconds)
        click.echo(f"{size:>6} {1000 * _pct(times, 50):>10.3f} {1000 * _pct(times, 99):>10.3f} {size * len(times) / sum(times):>12,.0f}")


@models.command("quantize")
@click.argument("name")
@click.option("--version", "version", help="Version to quantize (default: the newest).")
@click.option("--data", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="An .npz of inputs (by input name) to measure the accuracy change on.")
@click.option("--as-version", help="Version of the quantized model (default: <version>-int8).")
@click.option("--sign-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="ed25519 private key to sign it with.")
@click.option("--seconds", default=1.0, show_default=True, help="Time for each speed measurement.")
@click.pass_obj
def quantize(target: _Target, name: str, version: str | None, data: Path, as_version: str | None,
             sign_key: Path | None, seconds: float) -> None:
    """int8 dynamic quantization (onnxruntime's quantize_dynamic) as a new version; reports size, speed, accuracy."""
    import logging

    import numpy as np

    from edgeplane.inference.manifest import Provenance
    from edgeplane.inference.runtime import usable_cpus
    from edgeplane.inference.trust import load_private_key

    verified, model = _loaded(target, name, version)
    source_version = verified.manifest.version
    new_version = as_version or f"{source_version}-int8"
    with np.load(data) as archive:
        arrays = {k: archive[k] for k in archive.files}
    if len(model.inputs) == 1 and len(arrays) == 1:
        arrays = {model.inputs[0].name: next(iter(arrays.values()))}
    missing = [s.name for s in model.inputs if s.name not in arrays]
    if missing:
        _fail(f"{data} lacks inputs {missing}; it has {sorted(arrays)} (expected: {model.signature_text})")
    feeds = {s.name: arrays[s.name].astype(s.dtype, copy=False) for s in model.inputs}
    with tempfile.TemporaryDirectory() as tmp:
        original = Path(tmp) / "model.onnx"
        original.write_bytes(verified.model_bytes)
        quantized = Path(tmp) / "model.int8.onnx"
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_dynamic logs advice about pre-processing on the root logger
        try:
            quantize_dynamic(original, quantized, weight_type=QuantType.QInt8)
        except Exception as e:  # noqa: BLE001
            _fail(f"quantize_dynamic failed on {name} {source_version}: {type(e).__name__}: {e}")
        finally:
            root.setLevel(level)
        threads = usable_cpus()
        try:
            before_session, after_session = _session(str(original), threads), _session(str(quantized), threads)
            names = [o.name for o in before_session.get_outputs()]
            before, after = before_session.run(names, feeds), after_session.run(names, feeds)
        except Exception as e:  # noqa: BLE001
            _fail(f"the quantized model of {name} {source_version} does not run here: {str(e).splitlines()[0]}")
        rows = min(64, len(next(iter(feeds.values()))))
        sample = {k: v[:rows] for k, v in feeds.items()}
        t_before = _pct(_time_runs(before_session, sample, seconds), 50)
        t_after = _pct(_time_runs(after_session, sample, seconds), 50)
        report: dict[str, Any] = {
            "size_bytes_before": original.stat().st_size,
            "size_bytes_after": quantized.stat().st_size,
            "batch": rows,
            "p50_ms_before": 1000 * t_before,
            "p50_ms_after": 1000 * t_after,
        }
        for out_name, b, a in zip(names, before, after):
            diff = np.abs(b.astype(np.float64) - a.astype(np.float64))
            report[f"{out_name}_max_abs_diff"] = float(diff.max())
            report[f"{out_name}_mean_abs_diff"] = float(diff.mean())
            if b.ndim == 2 and b.shape[1] > 1:
                report[f"{out_name}_argmax_agreement"] = float(np.mean(b.argmax(1) == a.argmax(1)))
        provenance = Provenance(
            command=f"edgeplane models quantize {name} --version {source_version} --data {data}",
            data=[str(data)],
            metrics={k: round(float(v), 6) for k, v in report.items()},
            source=f"int8 dynamic quantization of {name} {source_version} (sha256 {verified.manifest.sha256[:12]})",
        )
        try:
            private_key = load_private_key(sign_key) if sign_key else None
            target.registry().add(quantized, name, new_version, provenance, sign_key=private_key)
        except InferenceError as e:
            _fail(str(e))
    click.echo(f"quantized {name} {source_version} -> {new_version} (int8 dynamic), measured on {len(next(iter(feeds.values())))} rows of {data.name}")
    click.echo(f"  size   {report['size_bytes_before']:>12,} -> {report['size_bytes_after']:,} bytes "
               f"({report['size_bytes_after'] / report['size_bytes_before']:.0%})")
    click.echo(f"  speed  {report['p50_ms_before']:>12.3f} -> {report['p50_ms_after']:.3f} ms p50 at batch {rows} "
               f"({report['p50_ms_before'] / report['p50_ms_after']:.2f}x)")
    for key, value in report.items():
        if key.endswith(("_diff", "_agreement")):
            click.echo(f"  {key:<28} {value:.6g}")
