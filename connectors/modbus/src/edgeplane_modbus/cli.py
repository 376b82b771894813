"""``edgeplane modbus ...``: commissioning and simulation commands.

* ``edgeplane modbus scan HOST[:PORT] [--unit U]``: the SunSpec device's common model (manufacturer,
  model, serial number, version) and the models it holds (or, with ``--range START:COUNT``, a raw
  register dump);
* ``edgeplane modbus read HOST[:PORT] 701.W 1.Mn ...``: SunSpec points by model and point name,
  scaled by their scale factors, with units; or ``read HOST[:PORT] ADDRESS [--count N] [--type
  float32] [--table input]`` for raw registers;
* ``edgeplane modbus simulate sunspec --port P``: a SunSpec inverter on this machine.
"""

from __future__ import annotations

import asyncio
import csv
import difflib
import json
import sys
from pathlib import Path
from typing import Any

import click

from edgeplane_modbus import codec, sunspec
from edgeplane_modbus.config import parse_url
from edgeplane_modbus.link import ModbusError, ModbusLink, Timing


def _address(target: str) -> Any:
    url = target if "://" in target else f"tcp://{target}"
    try:
        return parse_url(url)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


async def _with_link(target: str, timeout: float, body):
    link = ModbusLink(_address(target))
    try:
        await link.connect(timeout)
        return await body(link)
    finally:
        link.close()


#: the common model's (1) points that identify a device, and their labels
COMMON_FIELDS = {"Mn": "manufacturer", "Md": "model", "SN": "serial", "Vr": "version", "Opt": "options",
                 "DA": "device_address"}


@click.group()
def modbus() -> None:
    """Modbus devices: scan, read, and simulate a SunSpec inverter."""


@modbus.command()
@click.argument("target")
@click.option("--unit", default=1, show_default=True, help="Unit id.")
@click.option("--base", type=int, default=None, help="SunSpec base address (default: try 40000, 0, 50000).")
@click.option("--range", "span", default=None, help="Dump registers START:COUNT instead of scanning for SunSpec.")
@click.option("--table", type=click.Choice(["holding", "input"]), default="holding", show_default=True)
@click.option("--timeout", default=2.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def scan(target: str, unit: int, base: int | None, span: str | None, table: str, timeout: float, as_json: bool) -> None:
    """List the SunSpec models of the device at TARGET (HOST[:PORT] or a URL)."""
    timing = Timing(timeout, 1, 0.0)
    method = "read_holding_registers" if table == "holding" else "read_input_registers"

    async def body(link: ModbusLink) -> Any:
        async def read(address: int, count: int) -> list[int]:
            return (await link.request(timing, method, address, count=count, device_id=unit)).registers

        if span:
            start, _, count = span.partition(":")
            first, n = int(start), int(count or 1)
            regs: list[int] = []
            while len(regs) < n:
                regs += await read(first + len(regs), min(125, n - len(regs)))
            return {"registers": {first + i: r for i, r in enumerate(regs)}}
        found_base, models = await sunspec.discover(read, base)
        devices = []
        for common in (m for m in models if m.id == 1):
            fields = {}
            for key, label in COMMON_FIELDS.items():
                point = next((p for p in common.points if p.name.endswith(f".{key}")), None)
                if point is not None:
                    fields[label] = sunspec.decode_value(await read(point.address, point.size), point.type)
            devices.append(fields)
        return {"base": found_base, "devices": devices,
                "models": [{"id": m.id, "name": m.name, "address": m.address, "length": m.length,
                            "points": len(m.points)} for m in models]}

    try:
        result = asyncio.run(_with_link(target, timeout, body))
    except (ModbusError, sunspec.SunSpecError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(result))
    elif "registers" in result:
        for address, value in result["registers"].items():
            click.echo(f"{address:>6}  {value:>5}  0x{value:04x}")
    else:
        click.echo(f"SunSpec at {result['base']}:")
        for fields in result["devices"]:
            click.echo("  " + "  ".join(f"{label} {fields.get(label) or '-'}" for label in COMMON_FIELDS.values()))
        for m in result["models"]:
            click.echo(f"  model {m['id']:>4}  {m['name']:<28} address {m['address']:>5}  length {m['length']:>4}  "
                       f"{m['points']} points")


@modbus.command()
@click.argument("target")
@click.argument("what", nargs=-1, required=True)
@click.option("--count", default=None, type=int, help="Registers to read (default: what --type needs).")
@click.option("--type", "type_", default="uint16", show_default=True,
              type=click.Choice(["uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64",
                                 "string", "bool"]))
@click.option("--table", type=click.Choice(["holding", "input", "coil", "discrete"]), default="holding", show_default=True)
@click.option("--unit", default=1, show_default=True)
@click.option("--base", type=int, default=None, help="SunSpec base address (default: try 40000, 0, 50000).")
@click.option("--word-order", type=click.Choice(["big", "little"]), default="big", show_default=True)
@click.option("--byte-order", type=click.Choice(["big", "little"]), default="big", show_default=True)
@click.option("--timeout", default=2.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="SunSpec points: print one JSON object.")
def read(target: str, what: tuple[str, ...], count: int | None, type_: str, table: str, unit: int, base: int | None,
         word_order: str, byte_order: str, timeout: float, as_json: bool) -> None:
    """Read SunSpec points (``701.W 1.Mn 704.PFWInj.PF``, scaled) or one raw ADDRESS from TARGET."""
    if all(w.isdigit() for w in what):
        if len(what) != 1:
            raise click.BadParameter("give one register address, or SunSpec point names such as 701.W 1.Mn",
                                     param_hint="WHAT")
        _read_raw(target, int(what[0]), count, type_, table, unit, word_order, byte_order, timeout)
        return
    if any(w.isdigit() or "." not in w for w in what):
        raise click.BadParameter(f"{', '.join(w for w in what if w.isdigit() or '.' not in w)}: SunSpec points are "
                                 "<model>.<point>, e.g. 701.W or 1.Mn (or give one register address alone)",
                                 param_hint="WHAT")
    timing = Timing(timeout, 1, 0.0)

    async def body(link: ModbusLink) -> dict[str, Any]:
        async def reg(address: int, n: int) -> list[int]:
            return (await link.request(timing, "read_holding_registers", address, count=n, device_id=unit)).registers

        _, models = await sunspec.discover(reg, base)
        points = {p.name: p for m in models for p in m.points}
        out: dict[str, Any] = {}
        for name in what:
            point = points.get(name)
            if point is None:
                close = difflib.get_close_matches(name, list(points), n=3)
                have = ", ".join(str(m.id) for m in models)
                raise click.UsageError(f"no SunSpec point {name!r} on this device (models {have})"
                                       + (f"; did you mean {', '.join(close)}?" if close else "")
                                       + "; 'edgeplane modbus scan' lists the models")
            raw = sunspec.decode_value(await reg(point.address, point.size), point.type)
            exponent = point.sf if isinstance(point.sf, int) else None
            if isinstance(point.sf, str) and point.sf in points:
                sf = points[point.sf]
                exponent = sunspec.decode_value(await reg(sf.address, sf.size), sf.type)
            value = raw
            if raw is not None and exponent and not isinstance(raw, str):
                value = round(raw * 10.0**exponent, max(0, -exponent))
            out[name] = {"value": value, "raw": raw, "units": point.units, "sf": exponent}
        return out

    try:
        values = asyncio.run(_with_link(target, timeout, body))
    except (ModbusError, sunspec.SunSpecError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(values))
        return
    for name, v in values.items():
        shown = "not implemented" if v["value"] is None else f"{v['value']}{' ' + v['units'] if v['units'] else ''}"
        click.echo(f"{name} = {shown}")


def _read_raw(target: str, address: int, count: int | None, type_: str, table: str, unit: int, word_order: str,
              byte_order: str, timeout: float) -> None:
    timing = Timing(timeout, 1, 0.0)
    if table in ("coil", "discrete"):
        type_ = "bool"
    size = 1 if type_ in ("bool", "string") else codec.REGISTERS[type_]
    n = count or size
    methods = {"holding": "read_holding_registers", "input": "read_input_registers", "coil": "read_coils",
               "discrete": "read_discrete_inputs"}

    async def body(link: ModbusLink) -> list[Any]:
        response = await link.request(timing, methods[table], address, count=n, device_id=unit)
        if table in ("coil", "discrete"):
            return [bool(b) for b in response.bits[:n]]
        regs = response.registers
        if type_ == "string":
            return [codec.decode(regs, "string", byte_order=byte_order)]
        if type_ == "bool":
            return [r for r in regs]
        return [codec.decode(regs[i:i + size], type_, byte_order=byte_order, word_order=word_order)
                for i in range(0, len(regs) - size + 1, size)]

    try:
        values = asyncio.run(_with_link(target, timeout, body))
    except ModbusError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    for i, value in enumerate(values):
        click.echo(f"{table} {address + i * (1 if table in ('coil', 'discrete') else size)}: {value}")


@modbus.group()
def simulate() -> None:
    """Run a simulated Modbus device on this machine."""


@simulate.command("sunspec")
@click.option("--port", default=1502, show_default=True, help="TCP port (0 picks a free one, printed).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--unit", default=1, show_default=True)
@click.option("--rating", default=10_000.0, show_default=True, help="AC rating, W.")
@click.option("--strings", default=2, show_default=True, help="PV strings (model 160 modules).")
@click.option("--irradiance", default=800.0, show_default=True, help="Constant irradiance, W/m2.")
@click.option("--series", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV file whose first numeric column is irradiance in W/m2, one row per --step.")
@click.option("--step", default=1.0, show_default=True, help="Seconds between updates.")
@click.option("--trip-after", default=None, type=float, help="Trip offline after this many seconds.")
@click.option("--lose-string", default=None, type=int, help="Start with this string (1-based) lost.")
@click.option("--clip", default=None, type=float, help="Cap AC output at this many W.")
@click.option("--family", type=click.Choice(["default", "legacy", "der"]), default="default", show_default=True,
              help="Models served: legacy (1, 103, 120, 123, 160), der (IEEE 1547-2018: 1, 701, 702, 704, 160), "
                   "default (legacy and 704).")
def simulate_sunspec(port: int, host: str, unit: int, rating: float, strings: int, irradiance: float,
                     series: Path | None, step: float, trip_after: float | None, lose_string: int | None,
                     clip: float | None, family: str) -> None:
    """A SunSpec inverter following irradiance; Ctrl-C stops it. Limits revert on their own timers."""
    from edgeplane_modbus.simulator import FAMILIES, SunSpecInverterSimulator

    source: Any = irradiance
    if series is not None:
        source = _read_series(series)
    chosen = None if family == "default" else family
    sim = SunSpecInverterSimulator(rating_w=rating, strings=strings, irradiance=source, unit=unit, interval=step,
                                   family=chosen)
    models = ", ".join(map(str, FAMILIES[chosen]))
    if lose_string:
        sim.lose_string(lose_string)
    if clip:
        sim.clip(clip)

    async def main() -> None:
        bound = await sim.start(host, port)
        click.echo(f"SunSpec inverter simulator on tcp://{host}:{bound} unit {unit} (models {models})", err=True)
        try:
            if trip_after is not None:
                await asyncio.sleep(trip_after)
                sim.trip()
                click.echo("tripped offline", err=True)
            await asyncio.Event().wait()
        finally:
            await sim.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def _read_series(path: Path) -> list[float]:
    values = []
    with path.open(newline="") as f:
        for row in csv.reader(f):
            for cell in row:
                try:
                    values.append(float(cell))
                    break
                except ValueError:
                    continue
    if not values:
        raise click.BadParameter(f"{path}: no numeric column found", param_hint="--series")
    return values
