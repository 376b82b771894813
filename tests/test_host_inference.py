"""The host runs the shared inference service for sites that configure it, and only for them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from edgeplane import Batch, Solution, SolutionConfig, hookimpl
from edgeplane.inference import ModelRegistry
from edgeplane.inference import testing as toy


class Scorer(Solution):
    """Feeds each batch's values to a model and emits the model's output."""

    class Config(SolutionConfig):
        model: str

    def subscriptions(self):
        return ["m1/#"]

    async def on_batch(self, batch: Batch):
        features = np.full((1, 32), float(batch.values[-1]), dtype=np.float32)
        outputs = await self.context.inference.infer(self.config.model, features)
        await self.context.emit("scores/scorer", "score", {"y": float(next(iter(outputs.values()))[0, 0])})


class ScorerPlugin:
    __name__ = "scorer"

    @hookimpl
    def edgeplane_register_solutions(self, register):
        register("scorer", Scorer)


async def test_solutions_reach_the_shared_inference_service(edgeplane_host, tmp_path):
    ModelRegistry(tmp_path / "models").add(toy.save(toy.mlp(seed=3), tmp_path / "src" / "mlp.onnx"), "mlp", "1")
    site = {
        "site": {"id": "inf"},
        "devices": {"m1": {"connector": "memory", "points": {"x": {"value": 1.0}}}},
        "solutions": {"s": {"type": "scorer", "model": "mlp"}},
        "inference": {"models": str(tmp_path / "models"), "providers": ["cpu"], "preload": ["mlp"]},
    }
    async with edgeplane_host(site, plugins=[ScorerPlugin()]) as host:
        assert host.inference is not None and host.inference.providers[0] == "CPUExecutionProvider"
        scores = host.bus.subscribe("scores/#")
        await host.device("m1").set("x", 2.0)
        event = await scores.get()
        assert np.isfinite(event.data["y"])
        assert host.metrics.value("edgeplane_inference_requests_total", model="mlp", priority="realtime") >= 1
        assert host.metrics.value("edgeplane_inference_provider", provider="CPUExecutionProvider") == 1


def test_a_site_without_inference_never_imports_onnxruntime(tmp_path):
    # a fresh interpreter: other tests in this process have imported onnxruntime already
    code = (
        "import asyncio, sys\n"
        "from edgeplane.testing import run_host\n"
        "async def main():\n"
        "    async with run_host({'site': {'id': 'lean'}}, store_dir=sys.argv[1]) as host:\n"
        "        assert host.inference is None\n"
        "asyncio.run(main())\n"
        "print('onnxruntime' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
