"""Commissioning from the console: scan a device with a connector's scanner, save a device profile.

A connector plugin that can discover what a device holds registers a :class:`Scanner` through
``edgeplane_register_console_scanners`` (the OPC UA connector browses a server, the Modbus one
scans a SunSpec device, each with the code of its own CLI); the console only routes requests to
them and writes the profile, so the core imports no connector. Addresses come from an operator,
but answers come from the network: a scanner bounds its walk in depth, rows (:data:`MAX_ROWS`)
and time.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgeplane.errors import EdgeplaneError

__all__ = ["MAX_ROWS", "CommissioningError", "Scanner", "save_profile", "short_value"]

MAX_ROWS = 2000  # rows a scan returns, and points a profile holds
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_POINT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class CommissioningError(EdgeplaneError):
    """A request the console cannot carry out; the message says why and what to do."""


@dataclass(frozen=True)
class Scanner:
    """How the console discovers a device for one connector and writes profile points for it."""

    connector: str
    """The connector type the saved profile is for ("opcua", "modbus")."""
    scan: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
    """``await scan(request)`` -> ``{"connector", "rows": [{"path", "class", ...}], "truncated", ...}``;
    the request is the console form's fields; raises :class:`CommissioningError` with the fix."""
    point_spec: Callable[[dict[str, Any]], dict[str, Any]]
    """A chosen row -> the connector's point settings in the profile (``{"node": ..., "type": ...}``)."""


def save_profile(folder: Path, name: str, connector: str, points: list[dict[str, Any]], source: str,
                 *, scanners: dict[str, Scanner], overwrite: bool = False) -> Path:
    """Write the chosen points as a device profile ``<folder>/<name>.yaml``; returns its path."""
    if not _PROFILE_NAME.match(name or ""):
        raise CommissioningError(f"profile name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
    scanner = scanners.get(connector)
    if scanner is None:
        raise CommissioningError(f"connector {connector!r}: profiles are saved for {', '.join(sorted(scanners)) or 'none'} "
                                 "(the connectors installed with a console scanner)")
    if not points:
        raise CommissioningError("no points chosen: tick the points the profile should hold")
    if len(points) > MAX_ROWS:
        raise CommissioningError(f"{len(points)} points: a profile holds at most {MAX_ROWS}")
    out: dict[str, dict[str, Any]] = {}
    for p in points:
        point = str(p.get("name", ""))
        if not _POINT_NAME.match(point):
            raise CommissioningError(f"point name {point!r}: use letters, digits, '_', '.', '-'")
        if point in out:
            raise CommissioningError(f"point name {point!r} is chosen twice: rename one")
        spec = dict(scanner.point_spec({**p, "name": point}))
        if p.get("writable"):
            spec["access"] = "rw"
        if p.get("path"):
            spec["description"] = str(p["path"])[:200]
        out[point] = spec
    path = folder / f"{name}.yaml"
    if path.exists() and not overwrite:
        raise CommissioningError(f"profile file {str(path)!r} exists: choose another name or tick 'overwrite'")
    profile = {"profile": name, "connector": connector, "description": f"saved from the site console ({source})",
               "points": out}
    from edgeplane.config import Profile

    Profile.model_validate(profile)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def short_value(value: Any) -> Any:
    """A value as a scan row shows it: a number, bool or text of at most 60 characters."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (bool, int, float, str)) or value is None:
        text = value
    else:
        text = repr(value)
    if isinstance(text, str) and len(text) > 60:
        return text[:57] + "..."
    return text
