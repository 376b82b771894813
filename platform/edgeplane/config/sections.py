"""The core's sections of a site file (``site``, ``http``, ``store``, ``clock``, ``log``, ``supervision``,
``simulators``, ``limits``) and :class:`CoreSite`, which also holds the ``inference``, ``sync`` and
``console`` sections defined next to the services that read them.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgeplane.config.base import ConfigModel, PointLimits
from edgeplane.config.units import Duration
from edgeplane.console.config import ConsoleConfig
from edgeplane.inference.config import InferenceConfig
from edgeplane.sync.config import SyncConfig

__all__ = ["ClockConfig", "CoreSite", "HttpConfig", "Location", "LogConfig", "SimulatorConfig", "SiteInfo",
           "StoreConfig", "SupervisionConfig"]

_SITE_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class Location(ConfigModel):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    alt: float = 0.0


class SiteInfo(ConfigModel):
    id: str = Field(pattern=_SITE_ID, description="lowercase letters, digits, '-' and '_': used in topic names")
    name: str | None = None
    timezone: str = "UTC"
    location: Location | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as 'Europe/Berlin'") from None
        return value


class HttpConfig(ConfigModel):
    """Metrics (``/metrics``), ``/healthz`` and ``/readyz`` on one port; off when port is None."""

    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=0, le=65535)


class StoreConfig(ConfigModel):
    path: str | None = Field(None, description="folder for the local store and audit log")


class ClockConfig(ConfigModel):
    mode: Literal["wall", "simulated"] = "wall"
    start: float | None = Field(None, description="simulated start time, seconds since the epoch")


class LogConfig(ConfigModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class SimulatorConfig(ConfigModel):
    """A companion process of the site (see :mod:`edgeplane.companions`)."""

    command: list[str] = Field(min_length=1, description='argv; "{python}" is the host\'s Python, "{site_dir}" the site folder')
    ready: str | None = Field(None, description="tcp://HOST:PORT that accepts connections once the simulator is up")
    ready_timeout: Duration = 30.0
    stop_timeout: Duration = 5.0
    env: dict[str, str] = Field(default_factory=dict, description="added to the host's environment")
    cwd: str | None = Field(None, description="working folder, relative to the site file (default: the site folder)")

    @field_validator("ready")
    @classmethod
    def _tcp_address(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        if value is None:
            return value
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme != "tcp" or not parts.hostname or not port:
            raise ValueError(f"{value!r} is not a tcp://HOST:PORT address")
        return value


class SupervisionConfig(ConfigModel):
    backoff_initial: Duration = 1.0
    backoff_max: Duration = 60.0
    stop_timeout: Duration = 10.0


class CoreSite(ConfigModel):
    """The core's view of a site file; devices and solutions are checked against plugins after."""

    site: SiteInfo
    profiles: list[str] = Field(default_factory=list, description="device-profile files, relative to the site file")
    devices: dict[str, dict[str, Any]] = Field(default_factory=dict)
    solutions: dict[str, dict[str, Any]] = Field(default_factory=dict)
    limits: dict[str, PointLimits] = Field(
        default_factory=dict, description="write guards by '<device>/<point>' pattern, e.g. 'inv*/WMaxLimPct'"
    )
    http: HttpConfig = Field(default_factory=HttpConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    supervision: SupervisionConfig = Field(default_factory=SupervisionConfig)
    inference: InferenceConfig | None = Field(None, description="the shared inference service; off when absent")
    sync: SyncConfig | None = Field(None, description="cloud sync: uplink policy, outbox, signed downlink; off when absent")
    simulators: dict[str, SimulatorConfig] = Field(
        default_factory=dict, description="companion processes started before the devices (simulators, a local broker)"
    )
    console: ConsoleConfig | None = Field(None, description="the site console on the HTTP port; off when absent")

    @model_validator(mode="after")
    def _console_tls_beyond_localhost(self) -> CoreSite:
        if self.console is not None:
            self.console.check_binding(self.http.host)
        return self

    @field_validator("devices", "solutions")
    @classmethod
    def _entries_are_mappings(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, entry in value.items():
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", str(name)):
                raise ValueError(f"{name!r} is not a valid name: use letters, digits, '_', '-', '.'")
            if not isinstance(entry, dict):
                raise ValueError(f"{name!r} must be a mapping of settings, got {type(entry).__name__}")
        return value
