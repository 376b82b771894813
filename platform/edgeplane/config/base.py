"""The one base of every config model, and the models plugins extend (points, devices, solutions, profiles).

Every section of a site file, in the core and in every plugin, is a :class:`ConfigModel`: unknown
keys are errors (reported with a "did you mean"). Connectors subclass :class:`DeviceConfig` and
:class:`PointSpec`; solutions subclass :class:`SolutionConfig`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeplane.config.units import Duration, Rate

__all__ = ["ConfigModel", "DeviceConfig", "PointLimits", "PointSpec", "PointType", "Profile", "SolutionConfig"]


class ConfigModel(BaseModel):
    """Base of every config model: unknown keys are errors (with a "did you mean").

    A model that renamed a field lists the old spelling in ``renamed_fields`` (old -> new): a
    site file that still writes the old name gets an error that names the new one.
    """

    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True)

    renamed_fields: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _old_field_names(cls, data: Any) -> Any:
        if cls.renamed_fields and isinstance(data, dict):
            for old, new in cls.renamed_fields.items():
                if old in data:
                    section, _, leaf = new.rpartition(".")
                    where = f"write it as '{section}: {{{leaf}: ...}}'" if section else "rename it"
                    raise ValueError(f"'{old}' is now called '{new}': {where} (same meaning)")
        return data


PointType = Literal["bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string", "auto"]


class PointLimits(ConfigModel):
    """Guards on writes to a point, enforced before any connector writes.

    With ``min``, ``max`` or ``max_rate`` set, a write must be a finite number (not a bool, not a
    string), whatever the point's type. NaN and infinities are refused on every point unless one
    of its limits says ``allow_non_finite: true``. A limit itself must be finite: ``.nan`` or
    ``.inf`` would switch the guard off.
    """

    min: float | None = Field(None, allow_inf_nan=False, description="smallest value a write may carry (finite)")
    max: float | None = Field(None, allow_inf_nan=False, description="largest value a write may carry (finite)")
    max_rate: Rate | None = Field(None, gt=0, allow_inf_nan=False,
                                  description="largest change per second between two commanded values")
    allowed: list[float | str | bool] | None = Field(None, description="the only values a write may carry")
    allow_non_finite: bool = Field(False, description="NaN and infinities may be written (a device's 'no limit' sentinel)")

    @model_validator(mode="after")
    def _min_below_max(self) -> PointLimits:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max}): swap them")
        return self


class PointSpec(ConfigModel):
    """One point of a device: what it is, how raw values become engineering values, who may write.

    Connectors subclass it with their address fields (a Modbus register, an OPC UA NodeId).
    The engineering value is ``raw * scale + offset``.
    """

    type: PointType = "auto"
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    access: Literal["r", "rw", "w"] = "r"
    limits: PointLimits | None = None
    description: str | None = None

    @property
    def writable(self) -> bool:
        return self.access in ("rw", "w")


class DeviceConfig(ConfigModel):
    """A device entry in the site file. Connectors subclass it with their link fields."""

    connector: str = Field(description="connector type that talks to this device")
    profile: str | None = Field(None, description="name of a device profile whose points this device has")
    points: dict[str, PointSpec] = Field(default_factory=dict, description="points, added to the profile's")
    poll: Duration | None = Field(None, description="polling period, for connectors that poll")
    enabled: bool = True


class SolutionConfig(ConfigModel):
    """A solution entry in the site file. Solutions subclass it with their own fields."""

    type: str = Field(description="solution type")
    enabled: bool = True
    queue_size: int | None = Field(None, ge=1, description="bound of its input queue (default: the solution's own)")
    overflow: Literal["block", "drop_oldest"] | None = Field(
        None, description="when its queue is full: make publishers wait, or drop the oldest (counted)"
    )


class Profile(ConfigModel):
    """A reusable point map: the points a kind of device has."""

    profile: str = Field(description="the name devices use to refer to this profile")
    connector: str | None = Field(None, description="the connector type whose point fields these are")
    description: str | None = None
    points: dict[str, dict[str, Any]]
    source: str | None = Field(None, exclude=True)  # where it was read from, for messages
