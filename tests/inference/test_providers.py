"""Provider selection from a real attempt, quiet onnxruntime, threads sized to the node, metrics."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgeplane.inference.runtime import _gpu_device_present, _probe_cuda, choose_providers, onnxruntime, usable_cpus
from edgeplane.metrics import Metrics

SCRIPT = textwrap.dedent(
    """
    import asyncio, logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    from pathlib import Path
    import numpy as np
    from edgeplane.inference import InferenceConfig, InferenceService, ModelRegistry
    from edgeplane.inference import testing as toy
    from edgeplane.metrics import Metrics

    async def main():
        base = Path(sys.argv[1])
        ModelRegistry(base / "models").add(toy.save(toy.mlp(), base / "m.onnx"), "m", "1")
        service = InferenceService(InferenceConfig(providers=["cuda", "cpu"]), Metrics(), base_dir=base)
        await service.start()
        out = await service.infer("m", np.ones((2, 32), np.float32))
        print("PROVIDERS", service.providers, out["y"].shape)
        await service.stop()

    asyncio.run(main())
    """
)


def cuda_works() -> bool:
    return "cuda" not in choose_providers(("cuda", "cpu")).rejected


@pytest.mark.skipif(cuda_works(), reason="this node has a working CUDA: the fallback path cannot be seen here")
def test_cuda_that_cannot_load_falls_back_to_cpu_with_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "PROVIDERS ['CPUExecutionProvider'] (2, 8)" in result.stdout
    output = result.stdout + result.stderr
    # none of onnxruntime's own [E]/[W] lines (they name libraries the user did not ask about)
    assert "onnxruntime:" not in output and "[E:" not in output and "[W:" not in output, output
    lines = [line for line in result.stderr.splitlines() if "inference runs on" in line]
    assert len(lines) == 1, result.stderr
    assert "edgeplane.inference INFO inference runs on CPUExecutionProvider; cuda not used: " in lines[0]
    assert "intra-op threads" in lines[0]


@pytest.mark.skipif(not cuda_works(), reason="needs an NVIDIA GPU with CUDA 13 and cuDNN 9 (GPU-only test)")
def test_cuda_is_chosen_where_it_really_works():
    report = choose_providers(("cuda", "cpu"))
    assert report.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")


def gpu_build() -> bool:
    """onnxruntime-gpu (x86-64 Linux) lists CUDA as compiled in; plain onnxruntime (aarch64 gateways) does not."""
    return "CUDAExecutionProvider" in onnxruntime().get_available_providers()


def test_the_reason_cuda_is_not_used_is_specific():
    report = choose_providers(("cuda", "cpu"))
    if "cuda" in report.rejected:
        reason = report.rejected["cuda"]
        if not gpu_build():
            assert reason.startswith("this onnxruntime build has no CUDA support"), reason
        elif not _gpu_device_present():
            assert reason.startswith("no NVIDIA GPU on this node"), reason
        else:
            assert "cannot be loaded" in reason or "CUDA session" in reason or "could not create" in reason, reason


def test_a_build_without_cuda_runs_on_cpu_and_says_why(monkeypatch):
    """What plain onnxruntime does (aarch64 edge gateways), on whichever build is installed here:
    that build lists no CUDA provider, so CUDA is refused by name before any attempt."""
    ort = onnxruntime()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert _probe_cuda(ort) == "this onnxruntime build has no CUDA support (install onnxruntime-gpu)"
    report = choose_providers.__wrapped__(("cuda", "cpu"))
    assert report.providers == ("CPUExecutionProvider",)
    assert report.rejected == {"cuda": "this onnxruntime build has no CUDA support (install onnxruntime-gpu)"}


def test_cpu_only_is_taken_without_probing():
    report = choose_providers(("cpu",))
    assert report.providers == ("CPUExecutionProvider",) and report.rejected == {}


async def test_threads_are_sized_to_the_node_and_the_provider_is_in_metrics(make_service):
    metrics = Metrics()
    cpus = usable_cpus()
    async with make_service(metrics) as service:
        # on CPU the two classes split the cores: bulk takes half (at least one), realtime the rest
        bulk = max(1, cpus // 2)
        assert service.intra_op_threads == max(1, cpus - bulk) >= 1
        await service.infer("mlp", np.ones((1, 32), np.float32))
        model = service.loaded()["mlp"]
        assert model.bulk_session is not model.session
        assert model.session.get_session_options().intra_op_num_threads == service.intra_op_threads
        assert model.bulk_session.get_session_options().intra_op_num_threads == bulk
        for session in (model.session, model.bulk_session):  # idle pool threads sleep: no core burnt between runs
            assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert model.providers == service.providers == ["CPUExecutionProvider"]
        assert metrics.value("edgeplane_inference_provider", provider="CPUExecutionProvider") == 1
    async with make_service(intra_op_threads=1, bulk_session="shared") as service:
        await service.load("mlp")
        model = service.loaded()["mlp"]
        assert model.session.get_session_options().intra_op_num_threads == 1
        assert model.bulk_session is model.session
    async with make_service(bulk_session="shared") as service:  # one session: realtime keeps every core
        assert service.intra_op_threads == cpus


def test_import_edgeplane_does_not_import_onnxruntime():
    code = (
        "import sys, edgeplane, edgeplane.inference\n"
        "from edgeplane.inference import InferenceConfig, InferenceService, ModelRegistry\n"
        "import edgeplane.inference.cli\n"
        "print('onnxruntime' in sys.modules, 'onnx' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


async def test_latency_queue_and_error_metrics(make_service):
    metrics = Metrics()
    async with make_service(metrics) as service:
        for _ in range(5):
            await service.infer("mlp", np.ones((2, 32), np.float32))
        await service.infer("mlp", np.ones((3, 32), np.float32), priority="bulk")
        with pytest.raises(Exception):
            await service.infer("mlp", np.ones((1, 3), np.float32))
        text = metrics.exposition().decode()
    assert metrics.value("edgeplane_inference_latency_seconds_count", model="mlp", priority="realtime") == 5
    assert metrics.value("edgeplane_inference_latency_seconds_count", model="mlp", priority="bulk") == 1
    assert metrics.value("edgeplane_inference_batch_size_sum", model="mlp") == 13
    assert metrics.value("edgeplane_inference_run_seconds_count", model="mlp") == 6
    assert metrics.value("edgeplane_inference_errors_total", model="mlp", kind="input") == 1
    assert 'edgeplane_inference_queue_depth{model="mlp",priority="bulk"} 0.0' in text
    assert 'edgeplane_inference_latency_seconds_bucket{le="+Inf",model="mlp",priority="realtime"} 5.0' in text
