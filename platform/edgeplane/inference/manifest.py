"""A model's manifest: what the ONNX file is, where it came from, and how to check it.

It lives next to the model as ``<registry>/<name>/<version>/manifest.json``. The optional
``signature`` is an ed25519 signature over :meth:`ModelManifest.signed_bytes` (the manifest
without its signature, as canonical JSON), so it covers the sha256 and thus the model bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ModelManifest", "Provenance", "Signature", "TensorSpec", "file_sha256", "read_onnx_signature"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MANIFEST_FORMAT = 1


class TensorSpec(BaseModel):
    """One input or output: its name, numpy dtype name, and shape (a str or None is a free axis)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


class Provenance(BaseModel):
    """Where a model came from: the training command, its data and its evaluation metrics."""

    model_config = ConfigDict(extra="allow")

    command: str | None = None
    data: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    source: str | None = Field(None, description="what it was derived from, e.g. 'quantized from rul 3'")
    notes: str | None = None


class Signature(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algorithm: str = "ed25519"
    key_id: str = Field(description="first 16 hex digits of the sha256 of the raw public key")
    value: str = Field(description="base64 signature over the manifest without this field")


class ModelManifest(BaseModel):
    """The manifest of one model version."""

    model_config = ConfigDict(extra="forbid")

    format: int = MANIFEST_FORMAT
    name: str
    version: str
    file: str = "model.onnx"
    sha256: str
    size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    provenance: Provenance = Field(default_factory=Provenance)
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    signature: Signature | None = None

    @field_validator("name", "version")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(f"{value!r} is not a valid model name or version: use letters, digits, '_', '-', '.'")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return value

    def signed_bytes(self) -> bytes:
        """The bytes a signature covers: this manifest without ``signature``, as canonical JSON."""
        data = self.model_dump(mode="json", exclude={"signature"})
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> ModelManifest:
        from edgeplane.inference.errors import ManifestError

        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ManifestError(f"no manifest at {path}: add the model with `edgeplane models add`") from None
        except (OSError, ValueError) as e:
            raise ManifestError(f"cannot read manifest {path}: {e}; re-add the model with `edgeplane models add`") from None
        try:
            return cls.model_validate(data)
        except ValueError as e:
            raise ManifestError(f"manifest {path} is invalid: {e}") from None


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_onnx_signature(model: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an ONNX model (a path or a ModelProto), initializers excluded."""
    import onnx
    from onnx import helper

    proto = onnx.load(str(model), load_external_data=False) if not isinstance(model, onnx.ModelProto) else model
    initializers = {init.name for init in proto.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor = value.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "unknown"
        dims: list[int | str | None] = []
        for dim in tensor.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        return TensorSpec(name=value.name, dtype=dtype, shape=tuple(dims))

    inputs = [spec(v) for v in proto.graph.input if v.name not in initializers]
    outputs = [spec(v) for v in proto.graph.output]
    return inputs, outputs
