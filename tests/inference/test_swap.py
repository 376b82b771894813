"""Hot swap: beside, atomic, in-flight finish on the old version, rollback, memory released."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgeplane.inference import ModelRegistry, SwapError
from edgeplane.inference import testing as toy
from edgeplane.metrics import Metrics
from edgeplane.testing import wait_for

X = np.ones((1, 32), np.float32)


async def test_in_flight_requests_finish_on_the_old_version(make_service, gate):
    async with make_service(per_model={"mlp": {"version": "1"}}) as service:
        v1_out = (await service.infer("mlp", X))["y"]
        old = service.loaded()["mlp"]
        held = gate()
        held.hold(old)
        in_flight = asyncio.create_task(service.infer("mlp", X))
        await wait_for(held.entered.is_set, timeout=10)
        new = await asyncio.wait_for(service.swap("mlp", "2"), 10)  # does not wait for the held run
        assert service.loaded()["mlp"] is new and new.version == "2"
        after = await asyncio.wait_for(service.infer("mlp", X), 10)
        np.testing.assert_allclose(after["y"], v1_out + 1.0, rtol=1e-5, atol=1e-5)
        held.open()
        np.testing.assert_allclose((await in_flight)["y"], v1_out)  # finished on version 1


async def test_swap_under_load_loses_no_request(make_service):
    metrics = Metrics()
    async with make_service(metrics, per_model={"mlp": {"version": "1"}}) as service:
        base = (await service.infer("mlp", X))["y"]
        stop = asyncio.Event()
        seen: list[float] = []

        async def caller(i: int) -> None:
            while not stop.is_set():
                out = (await service.infer("mlp", np.ones((1 + i % 3, 32), np.float32), caller=f"c{i}"))["y"]
                shift = float(np.mean(out - base))
                assert abs(shift) < 1e-4 or abs(shift - 1.0) < 1e-4, "a request saw a mix of versions"
                assert np.allclose(out, out[:1])  # every row of one request from one version
                seen.append(shift)

        callers = [asyncio.create_task(caller(i)) for i in range(16)]
        await wait_for(lambda: len(seen) > 200, timeout=20)
        for version in ("2", "1", "2"):
            await service.swap("mlp", version)
            count = len(seen)
            await wait_for(lambda: len(seen) > count + 100, timeout=20)
        stop.set()
        await asyncio.gather(*callers)  # any assertion or request error in a caller fails here
        assert round(seen[-1]) == 1  # the last swap went to version 2
        assert metrics.value("edgeplane_inference_swaps_total", model="mlp", result="ok") == 3
        assert metrics.value("edgeplane_inference_model_loaded", model="mlp", version="2", provider="CPUExecutionProvider") == 1
        assert metrics.value("edgeplane_inference_model_loaded", model="mlp", version="1", provider="CPUExecutionProvider") == 0


async def test_a_version_that_fails_warm_up_is_rolled_back(make_service, site_dir):
    ModelRegistry(site_dir / "models").add(toy.save(toy.reshape_broken(), site_dir / "sources" / "broken.onnx"), "mlp", "3")
    metrics = Metrics()
    async with make_service(metrics, per_model={"mlp": {"version": "1"}}) as service:
        before = (await service.infer("mlp", X))["y"]
        with pytest.raises(SwapError, match=r"to version '3' failed and was rolled back \(version '1' keeps serving\).*warm-up"):
            await service.swap("mlp", "3")
        assert service.loaded()["mlp"].version == "1"
        np.testing.assert_array_equal((await service.infer("mlp", X))["y"], before)
        assert metrics.value("edgeplane_inference_swaps_total", model="mlp", result="rolled_back") == 1
        assert metrics.value("edgeplane_inference_errors_total", model="mlp", kind="swap") == 1


async def test_a_tampered_or_missing_version_is_rolled_back(make_service, site_dir):
    (site_dir / "models" / "mlp" / "2" / "model.onnx").write_bytes(
        toy.mlp(seed=5).SerializeToString()  # a valid model, but not the one the manifest describes
    )
    async with make_service(per_model={"mlp": {"version": "1"}}) as service:
        await service.load("mlp")
        with pytest.raises(SwapError, match="sha256"):
            await service.swap("mlp", "2")
        with pytest.raises(SwapError, match="has no version '7'"):
            await service.swap("mlp", "7")
        assert service.loaded()["mlp"].version == "1"


async def test_memory_of_a_swapped_out_version_is_released(make_service, site_dir):
    # a model of ~12 MB of weights, so that a leak of one session per swap would show in RSS
    registry = ModelRegistry(site_dir / "models")
    for version, shift in (("1", 0.0), ("2", 1.0)):
        registry.add(toy.save(toy.mlp(512, (2048, 1024), 16, shift=shift), site_dir / "sources" / f"big{version}.onnx"), "big", version)
    x = np.ones((4, 512), np.float32)
    async with make_service(per_model={"big": {"version": "1"}}) as service:
        await service.infer("big", x)
        first = service.loaded()["big"]
        import weakref

        sessions = [weakref.ref(first.session), weakref.ref(first.bulk_session)]
        del first
        await service.swap("big", "2")
        await service.infer("big", x)
        gc.collect()
        assert all(ref() is None for ref in sessions), "the swapped-out version's sessions are still alive"
        assert service.retired_sessions_alive() == 0



RSS_SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, sys, numpy as np, psutil
    from pathlib import Path
    from edgeplane.metrics import Metrics
    from edgeplane.inference import InferenceConfig, InferenceService

    async def main():
        service = InferenceService(InferenceConfig(providers=["cpu"], per_model={"big": {"version": "1"}}), Metrics(),
                                   base_dir=Path(sys.argv[1]))
        await service.start()
        x = np.ones((4, 512), np.float32)
        process = psutil.Process()

        async def swaps(n):
            for i in range(n):
                await service.swap("big", "2" if i % 2 == 0 else "1")
                await service.infer("big", x, priority="bulk" if i % 3 else "realtime")
            gc.collect()

        await swaps(20)  # let the allocator reach its steady state
        before = process.memory_info().rss
        await swaps(40)
        print(process.memory_info().rss - before)
        await service.stop()

    asyncio.run(main())
    """
)


def test_rss_does_not_grow_over_many_swaps(tmp_path):
    # in a fresh process, so that what earlier tests left in the allocator does not count
    registry = ModelRegistry(tmp_path / "models")
    for version, shift in (("1", 0.0), ("2", 1.0)):
        registry.add(toy.save(toy.mlp(512, (2048, 1024), 16, shift=shift), tmp_path / f"big{version}.onnx"), "big", version)
    model_bytes = (tmp_path / "models" / "big" / "1" / "model.onnx").stat().st_size
    result = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    growth = int(result.stdout.split()[-1])
    # keeping each swapped-out version (two sessions) would add more than 40 x 2 x the model size;
    # the allocator's own ups and downs stay well under 10 x
    assert growth < 10 * model_bytes, f"RSS grew by {growth / 1e6:.1f} MB over 40 swaps (model {model_bytes / 1e6:.1f} MB)"
