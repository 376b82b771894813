"""The onnxruntime boundary: which execution providers really work here, sessions, model runs.

onnxruntime is imported here only, and only when first needed, so ``import edgeplane`` stays
fast. Every function in this module blocks: the service calls them from worker threads.

Provider choice is made from a real attempt, not from ``get_available_providers()`` (the GPU
build lists CUDA even on a machine without a GPU or without the CUDA libraries). The attempt
runs with onnxruntime's own logging silenced, and the outcome is reported as one line.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeplane.inference.errors import ManifestError, ModelLoadError, ModelRunError
from edgeplane.inference.manifest import ModelManifest

__all__ = ["LoadedModel", "ProviderReport", "choose_providers", "load_model", "onnxruntime", "usable_cpus"]

log = logging.getLogger("edgeplane.inference")

ORT_NAMES = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
SHORT_NAMES = {v: k for k, v in ORT_NAMES.items()}
# onnxruntime severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
QUIET = 3
SILENT = 4

_import_lock = threading.Lock()


def onnxruntime() -> Any:
    """The onnxruntime module, imported on first use with its default logger set to errors only."""
    with _import_lock:
        import onnxruntime as ort

        if not getattr(ort, "_edgeplane_quiet", False):
            ort.set_default_logger_severity(QUIET)
            ort._edgeplane_quiet = True
        return ort


def usable_cpus() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota if any."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    return max(1, count)


# -- providers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderReport:
    """What runs: onnxruntime provider names in order, and why each preferred one was not taken."""

    providers: tuple[str, ...]
    rejected: dict[str, str] = field(default_factory=dict)
    gpu_present: bool = False

    @property
    def primary(self) -> str:
        return self.providers[0]

    def summary(self) -> str:
        text = f"inference runs on {self.primary}"
        for name, reason in self.rejected.items():
            text += f"; {name} not used: {reason}"
        return text


def _gpu_device_present() -> bool:
    return any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")) or bool(
        list(Path("/proc/driver/nvidia/gpus").glob("*")) if Path("/proc/driver/nvidia/gpus").is_dir() else []
    )


def _tiny_model_bytes() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


def _probe_cuda(ort: Any) -> str | None:
    """None if a CUDA session really works here, else the reason it does not."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA support (install onnxruntime-gpu)"
    gpu = _gpu_device_present()
    # The pip CUDA/cuDNN wheels (onnxruntime-gpu[cuda,cudnn]) are found only after preloading.
    if hasattr(ort, "preload_dlls") and _has_nvidia_wheels():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            with contextlib.suppress(Exception):
                ort.preload_dlls(msvc=False)
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if library.exists():
        try:
            ctypes.CDLL(str(library))
        except OSError as e:
            missing = str(e).split(":")[0]
            hint = "no NVIDIA GPU on this node" if not gpu else "install CUDA 13 and cuDNN 9 (pip install 'onnxruntime-gpu[cuda,cudnn]')"
            return f"{hint} ({missing} cannot be loaded)"
    if not gpu:
        return "no NVIDIA GPU on this node"
    options = ort.SessionOptions()
    options.log_severity_level = SILENT
    previous = QUIET
    ort.set_default_logger_severity(SILENT)  # the failed attempt's own [E]/[W] lines are replaced by ours
    try:
        session = ort.InferenceSession(_tiny_model_bytes(), options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        session.run(None, {"x": np.ones((1, 4), np.float32)})
        providers = session.get_providers()
    except Exception as e:  # noqa: BLE001 - any failure means CUDA is not usable
        return f"a CUDA session failed: {str(e).splitlines()[0][:200]}"
    finally:
        ort.set_default_logger_severity(previous)
    if "CUDAExecutionProvider" not in providers:
        return "onnxruntime could not create a CUDA session (driver, CUDA 13 or cuDNN 9 missing)"
    return None


def _has_nvidia_wheels() -> bool:
    import importlib.util

    return importlib.util.find_spec("nvidia") is not None


@functools.lru_cache(maxsize=8)
def choose_providers(preferred: tuple[str, ...]) -> ProviderReport:
    """The providers to run with, from ``preferred`` short names ('cuda', 'cpu'), by real attempt.

    CPU is always appended last as the fallback for operators a GPU provider does not cover.
    """
    ort = onnxruntime()
    chosen: list[str] = []
    rejected: dict[str, str] = {}
    for name in preferred:
        if name == "cpu":
            continue
        if name == "cuda":
            reason = _probe_cuda(ort)
            if reason is None:
                chosen.append(ORT_NAMES[name])
            else:
                rejected[name] = reason
        else:
            rejected[name] = "unknown provider"
    if "cpu" not in preferred and not chosen:
        rejected["cpu"] = "not in inference.providers, but nothing else works; using it anyway"
    chosen.append("CPUExecutionProvider")
    return ProviderReport(tuple(chosen), rejected, _gpu_device_present())


def session_options(intra_op_threads: int, *, spinning: bool = False) -> Any:
    """Options for a session: quiet logs, ``intra_op_threads`` threads per run, full optimization.

    Idle intra-op threads sleep unless ``spinning``: on a 2-4 core edge node shared with
    connectors and solutions, a spinning pool burns the cores the next run (or the other class's
    session) needs; measured here, a 2-thread spinning session cost twice the CPU per run of a
    sleeping one at the same speed. With one thread there is no pool: the run is on the caller.
    """
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = QUIET
    options.intra_op_num_threads = intra_op_threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # one model run uses intra-op threads; parallel branches inside a graph are rare in these models
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


# -- loaded models ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]  # None: free axis


def _fixed(dim: int | str | None) -> int | None:
    """An ONNX dimension's size, or None for a free one (a name, unknown, or negative)."""
    return dim if isinstance(dim, int) and dim >= 0 else None


class LoadedModel:
    """One model version with its onnxruntime session, ready to run. Runs are thread-safe."""

    def __init__(self, manifest: ModelManifest, session: Any, trust: str, bulk_session: Any = None):
        self.manifest = manifest
        self.name = manifest.name
        self.version = manifest.version
        self.session = session
        # the bulk class's own session (own intra-op threads), or the same one
        self.bulk_session = bulk_session if bulk_session is not None else session
        self.trust = trust
        self.providers: list[str] = list(session.get_providers())
        self.inputs = [InputSpec(s.name, np.dtype(s.dtype), tuple(_fixed(d) for d in s.shape)) for s in manifest.inputs]
        self.output_names = [s.name for s in manifest.outputs]
        # Batching concatenates along axis 0, so every input and output needs a free first axis.
        self.batchable = all(len(s.shape) >= 1 and _fixed(s.shape[0]) is None for s in (*manifest.inputs, *manifest.outputs))
        # (name, dtype, shape after the batch axis) of a batchable one-input model whose other axes are fixed:
        # the request check's fast path is one tuple compare
        self.single_input: tuple[str, np.dtype, tuple[int, ...]] | None = None
        if self.batchable and len(self.inputs) == 1 and all(d is not None for d in self.inputs[0].shape[1:]):
            spec = self.inputs[0]
            self.single_input = (spec.name, spec.dtype, tuple(d for d in spec.shape[1:] if d is not None))
        self.signature_text = "; ".join(
            ["inputs " + ", ".join(s.describe() for s in manifest.inputs), "outputs " + ", ".join(s.describe() for s in manifest.outputs)]
        )
        self.label = f"model {self.name!r} version {self.version!r}"

    def _error(self, e: BaseException) -> ModelRunError:
        message = str(e)
        # "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code ..." -> the useful tail
        if message.startswith("[ONNXRuntimeError]"):
            message = message.split(" : ", 3)[-1]
        return ModelRunError(f"{self.label} failed on this request: {message}")

    def run(self, feeds: dict[str, np.ndarray], *, bulk: bool = False) -> list[np.ndarray]:
        outputs: list[np.ndarray] = (self.bulk_session if bulk else self.session).run(self.output_names, feeds)
        return outputs

    def run_batch(self, requests: list[dict[str, np.ndarray]], rows: list[int], bulk: bool = False,
                  max_rows: int | None = None) -> list[list[np.ndarray] | ModelRunError]:
        """Run requests as one batch and split the outputs back; a failed batch is retried one by one.

        A single request of more than ``max_rows`` rows runs in slices of ``max_rows``, so one
        large request costs many bounded runs rather than one unbounded one.

        Errors come back as values (never raised) so that one bad request fails alone and no
        traceback keeps this model (and its session memory) alive after a swap.
        """
        session = self.bulk_session if bulk else self.session
        if len(requests) == 1:
            if max_rows is not None and self.batchable and rows[0] > max_rows:
                return [self._run_sliced(session, requests[0], rows[0], max_rows)]
            return [self._run_one(session, requests[0])]
        feeds = {spec.name: np.concatenate([r[spec.name] for r in requests], axis=0) for spec in self.inputs}
        try:
            outputs: list[np.ndarray] = session.run(self.output_names, feeds)
        except Exception:  # noqa: BLE001 - find out which request made it fail
            return [self._run_one(session, r) for r in requests]
        total = sum(rows)
        if any(o.ndim == 0 or o.shape[0] != total for o in outputs):
            # the model does not keep rows apart (e.g. it reduces over the batch): run each alone
            return [self._run_one(session, r) for r in requests]
        results: list[list[np.ndarray] | ModelRunError] = []
        start = 0
        for n in rows:
            results.append([o[start : start + n] for o in outputs])
            start += n
        return results

    def _run_sliced(self, session: Any, feeds: dict[str, np.ndarray], rows: int, step: int) -> list[np.ndarray] | ModelRunError:
        parts = []
        for start in range(0, rows, step):
            part = self._run_one(session, {name: value[start : start + step] for name, value in feeds.items()})
            if isinstance(part, ModelRunError):
                return part
            parts.append(part)
        return [np.concatenate([p[i] for p in parts], axis=0) for i in range(len(self.output_names))]

    def _run_one(self, session: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray] | ModelRunError:
        try:
            outputs: list[np.ndarray] = session.run(self.output_names, feeds)
            return outputs
        except Exception as e:  # noqa: BLE001 - reported to that request only
            return self._error(e)

    def zeros(self, rows: int) -> dict[str, np.ndarray]:
        """Inputs of ``rows`` rows, zero-filled (free axes other than the first get size 1)."""
        feeds = {}
        for spec in self.inputs:
            shape = [rows if (i == 0 and d is None) else (1 if d is None else d) for i, d in enumerate(spec.shape)]
            feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
        return feeds

    def warm_up(self, max_batch: int) -> float:
        """Run once at batch 1 and once at ``max_batch``; returns seconds taken. Raises ModelLoadError."""
        began = time.perf_counter()
        sessions = [False] if self.bulk_session is self.session else [False, True]
        for rows, bulk in ((r, b) for r in ([1, max_batch] if self.batchable and max_batch > 1 else [1]) for b in sessions):
            try:
                self.run(self.zeros(rows), bulk=bulk)
            except Exception as e:  # noqa: BLE001
                raise ModelLoadError(
                    f"{self.label} failed its warm-up run on zeros (batch {rows}): {self._error(e).args[0].split(': ', 1)[-1]}; "
                    f"the model is not served"
                ) from None
        return time.perf_counter() - began


def load_model(
    manifest: ModelManifest,
    model_bytes: bytes,
    trust: str,
    providers: Sequence[str],
    intra_op_threads: int,
    warm_rows: int | None = None,
    bulk_threads: int | None = None,
    *,
    spinning: bool = False,
    in_bulk_thread: Callable[[Callable[[], Any]], Any] | None = None,
) -> LoadedModel:
    """Create a session for verified model bytes, check it against the manifest, warm it up.

    With ``bulk_threads``, a second session with that many non-spinning threads serves the bulk
    class. ``in_bulk_thread(fn)`` runs ``fn`` in one of the bulk class's (lower-priority) threads
    and returns its result: the bulk session is created there, so the intra-op threads
    onnxruntime starts for it inherit that thread's lower priority.
    """
    ort = onnxruntime()
    label = f"model {manifest.name!r} version {manifest.version!r}"
    try:
        session = ort.InferenceSession(model_bytes, session_options(intra_op_threads, spinning=spinning), providers=list(providers))
        bulk_session = None
        if bulk_threads is not None:
            def make_bulk() -> Any:
                return ort.InferenceSession(model_bytes, session_options(bulk_threads), providers=list(providers))

            bulk_session = in_bulk_thread(make_bulk) if in_bulk_thread is not None else make_bulk()
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
        raise ModelLoadError(f"onnxruntime cannot load {label}: {str(e).splitlines()[0][:300]}") from None
    actual = [i.name for i in session.get_inputs()]
    declared = [s.name for s in manifest.inputs]
    if sorted(actual) != sorted(declared):
        raise ManifestError(f"{label}: the manifest lists inputs {declared} but the ONNX file has {actual}; re-add the model")
    outputs = [o.name for o in session.get_outputs()]
    if sorted(outputs) != sorted(s.name for s in manifest.outputs):
        raise ManifestError(f"{label}: the manifest lists outputs {[s.name for s in manifest.outputs]} but the ONNX file has {outputs}")
    model = LoadedModel(manifest, session, trust, bulk_session)
    if warm_rows is not None:
        model.warm_up(warm_rows)
    return model
