"""What an NTCIP device entry and each of its points may hold, validated before anything starts.

A device entry::

    ctl1:
      connector: ntcip
      host: 10.0.7.21
      port: 161
      version: 2c                  # or 3 (USM): user, auth_protocol/auth_key, priv_protocol/priv_key
      community: ${env:NTCIP_COMMUNITY}
      timeout: 1s
      retries: 1
      poll: 1s                     # wall time between polls (default 1 s; 0: back to back)
      time_source: host            # controller: stamp readings with the controller's globalTime
      signal:                      # optional: the phase-table point a signal solution commands
        name: t                    # points t.phase (rw) and t.phase_time
        stages: [[2, 6], [4, 8]]   # green k of the phase table = these NTCIP phases green together
      points:
        sb1_occupancy: {object: detectorOccupancy, index: 1, scale: 0.5, unit: "%"}
        sb1_count:     {object: detectorVolume, index: 1}
        greens:        {object: phaseStatusGroupGreens, index: 1}
        hold:          {object: phaseControlGroupHold, index: 1, access: rw}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeplane import DeviceConfig, Duration, PointSpec
from edgeplane_ntcip.mib import OBJECTS, object_named

__all__ = ["NtcipConfig", "NtcipPoint", "SignalSpec"]


class NtcipPoint(PointSpec):
    """One point: an NTCIP object instance (``object`` + ``index``), or a raw numeric ``oid``."""

    object: str | None = Field(None, description=f"NTCIP object name, one of: {', '.join(OBJECTS)}")
    index: int = Field(0, ge=0, description="row of a table object (phase group, detector number); 0 for scalars")
    oid: str | None = Field(None, description="a full numeric OID instead of object/index (vendor objects)")

    @model_validator(mode="after")
    def _addressed(self) -> NtcipPoint:
        if (self.object is None) == (self.oid is None):
            raise ValueError("give either 'object' (an NTCIP object name, with 'index' for table objects) or 'oid'")
        if self.object is not None:
            obj = object_named(self.object)
            obj.instance(self.index)  # raises with the valid rows
            if self.writable and obj.access != "rw":
                raise ValueError(f"{self.object} is read-only in NTCIP 1202: use access: r")
        elif not all(part.isdigit() for part in self.oid.strip(".").split(".")):  # type: ignore[union-attr]
            raise ValueError(f"oid {self.oid!r} is not a numeric OID such as 1.3.6.1.4.1.1206.4.2.1.1.4.1.4.1")
        return self

    @property
    def address(self) -> str:
        return self.oid.strip(".") if self.oid else object_named(self.object).instance(self.index)  # type: ignore[arg-type]


class SignalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="point prefix: <name>.phase (the phase-table index, writable) and <name>.phase_time")
    stages: list[list[int]] = Field(description="green k of the phase table: the NTCIP phases (1-16) it shows green together")

    @model_validator(mode="after")
    def _valid(self) -> SignalSpec:
        if len(self.stages) < 2:
            raise ValueError("signal.stages needs at least two greens to choose between")
        for k, stage in enumerate(self.stages):
            if not stage or any(not 1 <= p <= 16 for p in stage):
                raise ValueError(f"signal.stages[{k}] = {stage}: list the NTCIP phases (1..16) this green shows")
        if len({frozenset(s) for s in self.stages}) != len(self.stages):
            raise ValueError("signal.stages has the same phase set twice: each green must be told apart by its phases")
        return self


class NtcipConfig(DeviceConfig):
    host: str = Field(description="the controller's address")
    port: int = Field(161, ge=1, le=65535)
    version: Literal["2c", "3"] = "2c"
    community: str = Field("public", description="SNMPv2c community (read-write, to command); use ${env:...}")
    user: str | None = Field(None, description="SNMPv3 USM user name")
    auth_protocol: Literal["none", "md5", "sha", "sha224", "sha256", "sha384", "sha512"] = "sha"
    auth_key: str | None = None
    priv_protocol: Literal["none", "des", "3des", "aes128", "aes192", "aes256"] = "aes128"
    priv_key: str | None = None
    timeout: Duration = Field(1.0, gt=0, description="per request")
    retries: int = Field(1, ge=0, le=10)
    max_varbinds: int = Field(40, ge=1, le=200, description="objects per GET request")
    time_source: Literal["host", "controller"] = Field(
        "host", description="controller: stamp readings with globalTime (and drive a simulated host clock with it)")
    confirm_timeout: Duration = Field(1.5, gt=0, description="how long a phase command waits for the controller to show it")
    refresh: Duration = Field(2.0, gt=0, description="rewrite the control words this often (controllers drop stale ones)")
    reconnect_initial: Duration = 0.5
    reconnect_max: Duration = 5.0
    signal: SignalSpec | None = None
    points: dict[str, NtcipPoint] = Field(default_factory=dict)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _credentials(self) -> NtcipConfig:
        if self.version == "3":
            if not self.user:
                raise ValueError("version 3 needs 'user' (the controller's USM user name)")
            if self.priv_key and not self.auth_key:
                raise ValueError("SNMPv3 privacy needs authentication too: give auth_key")
            for key, name in ((self.auth_key, "auth_key"), (self.priv_key, "priv_key")):
                if key is not None and len(key) < 8:
                    raise ValueError(f"{name} must be at least 8 characters (RFC 3414)")
        if self.signal is not None:
            taken = {f"{self.signal.name}.phase", f"{self.signal.name}.phase_time"} & set(self.points)
            if taken:
                raise ValueError(f"points {sorted(taken)} are made by 'signal:'; rename them")
        return self
