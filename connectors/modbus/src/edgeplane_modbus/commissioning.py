"""The site console's Modbus commissioning: scan a SunSpec device (``edgeplane modbus scan``'s
discovery) and turn a chosen point into a profile point. Registered through
``edgeplane_register_console_scanners``; answers come from the network, so a scan is bounded in
rows and time."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from edgeplane.console.commissioning import MAX_ROWS, CommissioningError, Scanner
from edgeplane_modbus import sunspec
from edgeplane_modbus.cli import _address
from edgeplane_modbus.link import ModbusError, ModbusLink, Timing

__all__ = ["SCANNER", "point_spec", "scan"]


async def scan(params: dict[str, Any]) -> dict[str, Any]:
    """The SunSpec models and points of ``params["target"]`` (HOST:PORT), unit ``params["unit"]`` (default 1)."""
    return await modbus_scan(str(params.get("target", "")), unit=int(params.get("unit", 1)))


def point_spec(row: dict[str, Any]) -> dict[str, Any]:
    """A profile point for a scanned SunSpec point: its SunSpec name and unit."""
    if not isinstance(row.get("sunspec"), str):
        raise CommissioningError(f"point {row.get('name')!r} has no SunSpec name")
    spec: dict[str, Any] = {"sunspec": row["sunspec"]}
    if row.get("unit"):
        spec["unit"] = str(row["unit"])
    return spec


async def modbus_scan(target: str, *, unit: int = 1, timeout: float = 2.0) -> dict[str, Any]:
    """The SunSpec models and points a device holds, as ``edgeplane modbus scan`` finds them."""
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
    except (TimeoutError, ModbusError, sunspec.SunSpecError, OSError) as e:
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
            "rows": rows[:MAX_ROWS], "truncated": len(rows) > MAX_ROWS}


SCANNER = Scanner("modbus", scan, point_spec)
