"""Errors of the inference service, as one tree (all are :class:`~edgeplane.errors.EdgeplaneError`).

::

    InferenceError              anything the inference service raises on purpose
    ├── ModelNotFoundError      no such model or version in the registry
    ├── ManifestError           a model's manifest is missing, unreadable or disagrees with its ONNX file
    ├── IntegrityError          the ONNX file's sha256 does not match its manifest
    ├── TrustError              a signature is missing, invalid, or made by a key the site does not trust
    ├── ModelLoadError          onnxruntime cannot load or warm up a model
    │   └── SwapError           a hot swap failed: the previous version keeps serving
    ├── InputError              wrong input names, shapes or dtypes (names model, input, expected signature)
    ├── QueueFullError          a caller has too many requests waiting (its own queue limit)
    ├── ModelRunError           the model raised while running this request (other requests are unaffected)
    └── ServiceStoppedError     the service is not running (not started yet, or stopping)

Each message names the model (and version, input, file) and the way out.
"""

from __future__ import annotations

from edgeplane.errors import EdgeplaneError

__all__ = [
    "InferenceError",
    "IntegrityError",
    "InputError",
    "ManifestError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelRunError",
    "QueueFullError",
    "ServiceStoppedError",
    "SwapError",
    "TrustError",
]


class InferenceError(EdgeplaneError):
    """Base of every error the inference service raises on purpose."""


class ModelNotFoundError(InferenceError, KeyError):
    """No such model, or no such version of it, in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ManifestError(InferenceError):
    """A manifest is missing or invalid, or disagrees with the ONNX file next to it."""


class IntegrityError(InferenceError):
    """The ONNX file's sha256 does not match the one recorded in its manifest."""


class TrustError(InferenceError):
    """A manifest signature is required but missing, invalid, or made by an untrusted key."""


class ModelLoadError(InferenceError):
    """onnxruntime could not load a model, or the model failed its warm-up run."""


class SwapError(ModelLoadError):
    """A hot swap failed and was rolled back: the previous version is still serving."""


class InputError(InferenceError, ValueError):
    """The inputs of a request do not match the model's signature."""


class QueueFullError(InferenceError):
    """A caller already has its maximum number of requests waiting for this model."""


class ModelRunError(InferenceError):
    """The model raised while running this request; other requests were not affected."""


class ServiceStoppedError(InferenceError):
    """The inference service is not running."""
