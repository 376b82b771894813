"""The shared inference service: ONNX Runtime on GPU or CPU, dynamic batching, hot swap.

Public surface::

    from edgeplane.inference import InferenceConfig, InferenceService, ModelRegistry

Importing this package does not import onnxruntime (host start time matters): that happens
when the service starts. ``InferenceConfig`` (the site file's ``inference:`` section) imports
only the bottom of :mod:`edgeplane.config`, which imports it for the site model.
"""

from __future__ import annotations

from edgeplane.inference.batching import ItemOutputs
from edgeplane.inference.config import BatchingConfig, InferenceConfig, ModelSettings, TrustConfig
from edgeplane.inference.errors import (
    InferenceError,
    InputError,
    IntegrityError,
    ManifestError,
    ModelLoadError,
    ModelNotFoundError,
    ModelRunError,
    QueueFullError,
    ServiceStoppedError,
    SwapError,
    TrustError,
)
from edgeplane.inference.manifest import ModelManifest, Provenance
from edgeplane.inference.registry import ModelRegistry
from edgeplane.inference.service import InferenceClient, InferenceService
from edgeplane.inference.trust import TrustPolicy

__all__ = [
    "BatchingConfig",
    "InferenceClient",
    "InferenceConfig",
    "InferenceError",
    "InferenceService",
    "InputError",
    "IntegrityError",
    "ItemOutputs",
    "ManifestError",
    "ModelLoadError",
    "ModelManifest",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelRunError",
    "ModelSettings",
    "Provenance",
    "QueueFullError",
    "ServiceStoppedError",
    "SwapError",
    "TrustConfig",
    "TrustError",
    "TrustPolicy",
]
