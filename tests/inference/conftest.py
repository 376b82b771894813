"""Fixtures for the inference service tests: a model registry built with onnx.helper, a service."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np
import pytest

from edgeplane.inference import InferenceConfig, InferenceService, ModelRegistry
from edgeplane.inference import testing as toy
from edgeplane.metrics import Metrics


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    """A site folder with a registry: mlp 1 and 2 (2 = 1 + 1.0), cnn 1, lookup 1."""
    registry = ModelRegistry(tmp_path / "models")
    sources = tmp_path / "sources"
    registry.add(toy.save(toy.mlp(seed=0), sources / "mlp1.onnx"), "mlp", "1")
    registry.add(toy.save(toy.mlp(seed=0, shift=1.0), sources / "mlp2.onnx"), "mlp", "2")
    registry.add(toy.save(toy.cnn1d(3, 256, (8, 16), (5, 3), 4), sources / "cnn.onnx"), "cnn", "1")
    registry.add(toy.save(toy.lookup(), sources / "lookup.onnx"), "lookup", "1")
    return tmp_path


@pytest.fixture
def make_service(site_dir: Path):
    """``async with make_service(**config) as service``: a started service over ``site_dir``."""

    @contextlib.asynccontextmanager
    async def factory(metrics: Metrics | None = None, **config: Any) -> AsyncIterator[InferenceService]:
        config.setdefault("providers", ["cpu"])
        service = InferenceService(InferenceConfig(**config), metrics or Metrics(), base_dir=site_dir)
        await service.start()
        try:
            yield service
        finally:
            await service.stop()

    return factory


def reference(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of a plain onnxruntime session, to compare the service against."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


class Gate:
    """Holds a model's runs in their worker thread until opened (to make overlap deterministic)."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.threads: set[int] = set()

    def hold(self, model: Any) -> None:
        original = model.run_batch

        def gated(*args: Any, **kwargs: Any) -> Any:
            self.threads.add(threading.get_ident())
            self.entered.set()
            if not self.opened.wait(30):
                raise RuntimeError("gate never opened")
            return original(*args, **kwargs)

        model.run_batch = gated

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def gate():
    """A :class:`Gate` factory; every gate is opened at teardown so no thread is left waiting."""
    gates: list[Gate] = []

    def factory() -> Gate:
        gates.append(Gate())
        return gates[-1]

    yield factory
    for g in gates:
        g.open()


@pytest.fixture
def run_reference():
    return reference
