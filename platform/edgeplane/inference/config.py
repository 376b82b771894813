"""The ``inference:`` section of a site file.

::

    inference:
      providers: [cuda, cpu]          # in order of preference; what really loads is used
      models: models/                 # the registry folder, relative to the site file
      intra_op_threads: auto          # or a number; auto = the cores this process may use
      preload: [policy, rul]          # loaded at start (others on first use)
      batching: {max_batch: 64, max_delay: 2ms, max_queue_per_caller: 256}
      per_model:
        policy: {version: "3", max_batch: 8, max_delay: 0ms}
      trust: {keys: [keys/models.pub], required: true}

It imports only the bottom of the config package (units, base), so the site model can import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from edgeplane.config.base import ConfigModel
from edgeplane.config.units import Duration

__all__ = ["BatchingConfig", "InferenceConfig", "ModelSettings", "TrustConfig"]

ProviderName = Literal["cuda", "cpu"]
DEFAULT_PROVIDERS: tuple[ProviderName, ...] = ("cuda", "cpu")


class BatchingConfig(ConfigModel):
    """How requests to one model are coalesced into batches."""

    max_batch: int = Field(64, ge=1, le=65536, description="most rows (samples) in one session.run")
    max_delay: Duration = Field(
        0.002, description="how long a batch that is not full may wait for more requests (0: take what is queued)"
    )
    realtime_max_delay: Duration = Field(
        0.0, description="the same for the realtime class; 0 keeps realtime latency at one model run"
    )
    bulk_max_batch: int | None = Field(
        None, ge=1, le=65536, description="most rows in a bulk batch (default max_batch); bounds how long realtime can be slowed"
    )
    max_queue_per_caller: int = Field(256, ge=1, description="requests one caller may have waiting per model; more are refused")
    max_queue: int = Field(10000, ge=1, description="requests all callers together may have waiting per model")
    concurrency: int = Field(2, ge=1, le=16, description="batches of one class that may run at once (overlaps a run with batching the next)")


class ModelSettings(ConfigModel):
    """Settings for one model by name; unset batching fields come from ``inference.batching``."""

    version: str | None = Field(None, description="pin this version (default: the newest in the registry)")
    max_batch: int | None = Field(None, ge=1, le=65536)
    max_delay: Duration | None = None
    realtime_max_delay: Duration | None = None
    bulk_max_batch: int | None = Field(None, ge=1, le=65536)
    max_queue_per_caller: int | None = Field(None, ge=1)
    max_queue: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1, le=16)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        # YAML reads `version: 3` as an int; versions are folder names
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class TrustConfig(ConfigModel):
    """Which ed25519 keys may sign model manifests, and whether a signature is required."""

    keys: list[str] = Field(default_factory=list, description="public key files (PEM, OpenSSH or raw base64), relative to the site file")
    required: bool = Field(False, description="refuse models whose manifest is not signed by one of the keys")

    @field_validator("required")
    @classmethod
    def _keys_when_required(cls, value: bool, info: ValidationInfo) -> bool:
        if value and not info.data.get("keys"):
            raise ValueError("trust.required is true but trust.keys is empty: list the public key files that sign models")
        return value


class InferenceConfig(ConfigModel):
    """The shared inference service: providers, model registry, batching, trust."""

    providers: list[ProviderName] = Field(
        default_factory=lambda: list(DEFAULT_PROVIDERS), min_length=1, description="execution providers in order of preference"
    )
    models: str = Field("models", description="the model registry folder, relative to the site file")
    intra_op_threads: int | Literal["auto"] = Field(
        "auto", description="threads one realtime model run may use; auto = the usable cores the bulk class does not take "
        "(with a separate bulk session) or all of them"
    )
    bulk_session: Literal["auto", "separate", "shared"] = Field(
        "auto", description="give the bulk class its own session and threads so it cannot slow realtime runs "
        "(auto: separate on CPU, shared on GPU where memory is scarce)"
    )
    bulk_threads: int | Literal["auto"] = Field(
        "auto", description="intra-op threads of a separate bulk session; auto = half the usable cores (at least 1), "
        "so a realtime run finds a core bulk work does not hold"
    )
    bulk_nice: int = Field(10, ge=0, le=19, description="OS niceness of the threads that run bulk batches (Linux), so realtime runs get the cores first; 0: off")
    bulk_switch_interval: Duration = Field(
        0.0001, ge=0, description="the interpreter's GIL switch interval while bulk batches run (process-wide, only ever "
        "shortened, restored after): how long a realtime thread back from onnxruntime may wait for the GIL; 0: leave it alone. "
        "Measured under bulk load: p99 of taking the GIL back 50-75 us at 0.5 ms, 23-26 us at 0.1 ms, bulk rows/s unchanged"
    )
    spin_wait: bool = Field(
        False, description="let idle intra-op threads spin for the next run: a little lower latency on cores nothing else "
        "needs, a core's worth of CPU burnt on a shared edge node"
    )
    workers: int | Literal["auto"] = Field("auto", description="model runs that may be in flight at once (thread pool size)")
    preload: list[str] | Literal["all"] = Field(default_factory=list, description="models loaded at start ('all': every model in the registry)")
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    per_model: dict[str, ModelSettings] = Field(default_factory=dict)
    trust: TrustConfig = Field(default_factory=TrustConfig)
    warmup: bool = Field(True, description="run every model once on zeros before it serves (catches broken models early)")

    @field_validator("providers")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"providers lists one twice: {value}")
        return value

    @field_validator("intra_op_threads", "workers", "bulk_threads")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1, or 'auto'")
        return value

    def models_dir(self, base_dir: Path) -> Path:
        return (Path(base_dir) / self.models).expanduser()

    def key_files(self, base_dir: Path) -> list[Path]:
        return [(Path(base_dir) / key).expanduser() for key in self.trust.keys]

    def batching_for(self, name: str) -> BatchingConfig:
        """The batching settings of one model: ``batching`` overridden by ``per_model[name]``."""
        override = self.per_model.get(name)
        if override is None:
            return self.batching
        fields = override.model_dump(exclude={"version"}, exclude_none=True)
        return self.batching.model_copy(update=fields)
