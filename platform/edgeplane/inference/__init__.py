"""The shared inference service: ONNX Runtime on GPU or CPU, dynamic batching, hot swap.

Public surface::

    from edgeplane.inference import InferenceConfig, InferenceService, ModelRegistry

Importing this package does not import onnxruntime (host start time matters): that happens
when the service starts. ``InferenceConfig`` (the site file's ``inference:`` section) is light
and may be imported by the core's config.
"""

from __future__ import annotations

from edgeplane.lazy import lazy_attributes
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
from edgeplane.inference.settings import BatchingConfig, InferenceConfig, ModelSettings, TrustConfig

__all__ = [
    "BatchingConfig",
    "InferenceClient",
    "InferenceConfig",
    "InferenceError",
    "InferenceService",
    "InputError",
    "IntegrityError",
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

# name -> module; resolved on first use so that `import edgeplane.inference` stays light
_LAZY = {
    "InferenceClient": "edgeplane.inference.service",
    "InferenceService": "edgeplane.inference.service",
    "ModelRegistry": "edgeplane.inference.registry",
    "ModelManifest": "edgeplane.inference.manifest",
    "Provenance": "edgeplane.inference.manifest",
    "TrustPolicy": "edgeplane.inference.trust",
}


__getattr__, __dir__ = lazy_attributes("edgeplane.inference", globals(), _LAZY)
