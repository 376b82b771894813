"""Commissioning from the console: browse an OPC UA server, scan a Modbus/SunSpec device, save a profile.

The work is done by the same code as ``edgeplane opcua browse`` and ``edgeplane modbus scan``,
imported from the connector distributions (installed with them; a clear error says which to
install when one is missing). Addresses come from an operator, but answers come from the network:
every walk is bounded in depth, rows and time.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import yaml

from edgeplane.errors import EdgeplaneError

__all__ = ["CommissioningError", "modbus_scan", "opcua_browse", "save_profile"]

_MAX_ROWS = 2000
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_POINT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class CommissioningError(EdgeplaneError):
    """A request the console cannot carry out; the message says why and what to do."""


def _needs(distribution: str, command: str) -> CommissioningError:
    return CommissioningError(f"{command} needs the {distribution} distribution: pip install {distribution}")


async def opcua_browse(endpoint: str, *, depth: int = 3, timeout: float = 5.0) -> dict[str, Any]:
    """The variables and objects under Objects, as ``edgeplane opcua browse`` shows them."""
    if not endpoint.startswith("opc.tcp://"):
        raise CommissioningError(f"endpoint {endpoint!r}: write it as opc.tcp://HOST:PORT[/path]")
    try:
        from asyncua import ua

        from edgeplane_opcua.cli import _POINT_TYPES, _open, _walk
    except ImportError as e:
        raise _needs("edgeplane-opcua", "OPC UA browsing") from e
    depth = max(1, min(int(depth), 6))
    opts = {"timeout": timeout, "policy": "None", "mode": "None", "cert": None, "key": None,
            "server_thumbprint": None, "username": None, "password": None}

    async def walk() -> list[dict[str, Any]]:
        client = await _open(endpoint, opts)
        try:
            rows: list[dict[str, Any]] = []
            await _walk(client, client.nodes.objects, [], depth, rows, False)
            return rows
        finally:
            await client.disconnect()

    try:
        rows = await asyncio.wait_for(walk(), timeout * 4)
    except (OSError, asyncio.TimeoutError, ua.UaError) as e:
        raise CommissioningError(f"cannot browse {endpoint}: {type(e).__name__}: {e or 'no answer'}; check the "
                                 "endpoint URL and that the server runs (secured servers: use `edgeplane opcua browse`)") from e
    points = []
    for row in rows[:_MAX_ROWS]:
        item = {"path": "/".join(row["path"]), "node": row["node"], "class": row["class"]}
        if row["class"] == "Variable":
            item.update(type=_POINT_TYPES.get(getattr(ua.VariantType, row.get("type", "?"), None), "auto"),
                        writable=row.get("writable", False), status=row.get("status"), value=_short(row.get("value")))
        points.append(item)
    return {"endpoint": endpoint, "connector": "opcua", "rows": points, "truncated": len(rows) > _MAX_ROWS}


async def modbus_scan(target: str, *, unit: int = 1, timeout: float = 2.0) -> dict[str, Any]:
    """The SunSpec models and points a device holds, as ``edgeplane modbus scan`` finds them."""
    try:
        from edgeplane_modbus import sunspec
        from edgeplane_modbus.cli import _address
        from edgeplane_modbus.link import ModbusError, ModbusLink, Timing
    except ImportError as e:
        raise _needs("edgeplane-modbus", "Modbus scanning") from e
    import click

    try:
        address = _address(target)
    except click.BadParameter as e:
        raise CommissioningError(f"target {target!r}: {e.message}; write HOST:PORT or tcp://HOST:PORT") from None
    if not 0 <= int(unit) <= 255:
        raise CommissioningError(f"unit {unit}: a Modbus unit id is 0..255")
    timing = Timing(timeout, 1, 0.0)
    link = ModbusLink(address)

    async def read(start: int, count: int) -> list[int]:
        return (await link.request(timing, "read_holding_registers", start, count=count, device_id=int(unit))).registers

    try:
        await link.connect(timeout)
        base, models = await asyncio.wait_for(sunspec.discover(read), timeout * 20)
    except (ModbusError, sunspec.SunSpecError, OSError, asyncio.TimeoutError) as e:
        raise CommissioningError(f"cannot scan {target} unit {unit}: {type(e).__name__}: {e or 'no answer'}; check the "
                                 "address, the unit id and that the device speaks SunSpec") from e
    finally:
        link.close()
    rows = []
    for model in models:
        for p in model.points:
            rows.append({"path": f"{model.id} {model.name}/{p.name}", "sunspec": p.name, "class": "Variable",
                         "model": model.id, "address": p.address, "type": p.type, "unit": p.units,
                         "writable": p.access.upper() == "RW"})
    return {"target": target, "connector": "modbus", "base": base,
            "models": [{"id": m.id, "name": m.name, "address": m.address, "length": m.length} for m in models],
            "rows": rows[:_MAX_ROWS], "truncated": len(rows) > _MAX_ROWS}


def save_profile(folder: Path, name: str, connector: str, points: list[dict[str, Any]], source: str,
                 *, overwrite: bool = False) -> Path:
    """Write the chosen points as a device profile ``<folder>/<name>.yaml``; returns its path."""
    if not _PROFILE_NAME.match(name or ""):
        raise CommissioningError(f"profile name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
    if connector not in ("opcua", "modbus"):
        raise CommissioningError(f"connector {connector!r}: profiles are saved for opcua or modbus")
    if not points:
        raise CommissioningError("no points chosen: tick the points the profile should hold")
    if len(points) > _MAX_ROWS:
        raise CommissioningError(f"{len(points)} points: a profile holds at most {_MAX_ROWS}")
    out: dict[str, dict[str, Any]] = {}
    for p in points:
        point = str(p.get("name", ""))
        if not _POINT_NAME.match(point):
            raise CommissioningError(f"point name {point!r}: use letters, digits, '_', '.', '-'")
        if point in out:
            raise CommissioningError(f"point name {point!r} is chosen twice: rename one")
        if connector == "opcua":
            if not isinstance(p.get("node"), str):
                raise CommissioningError(f"point {point!r} has no OPC UA node id")
            spec: dict[str, Any] = {"node": p["node"], "type": str(p.get("type") or "auto")}
        else:
            if not isinstance(p.get("sunspec"), str):
                raise CommissioningError(f"point {point!r} has no SunSpec name")
            spec = {"sunspec": p["sunspec"]}
            if p.get("unit"):
                spec["unit"] = str(p["unit"])
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


def _short(value: Any) -> Any:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (bool, int, float, str)) or value is None:
        text = value
    else:
        text = repr(value)
    if isinstance(text, str) and len(text) > 60:
        return text[:57] + "..."
    return text
