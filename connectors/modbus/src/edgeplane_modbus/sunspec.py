"""SunSpec over Modbus: discovery of the model chain and point layouts from pysunspec2's models.

A SunSpec device holds 'SunS' (0x5375 0x6e53) at a base address (40000, 0 or 50000), then a
chain of models, each ``ID, L`` followed by ``L`` registers, ended by ``0xFFFF, 0``. The layout
of every model (points, types, sizes, scale-factor references, access, groups) comes from
pysunspec2's JSON model definitions, so any model it ships (1, 101-103, 120-124, 160, 701-713
...) decodes without hand-written maps.

Point names (and so bus topics ``<device>/<name>``)::

    <model id>.<point id>                 103.W, 123.WMaxLimPct, 1.Mn
    <model id>.<group>.<point id>         704.PFWInj.PF           (a group that occurs once)
    <model id>.<group>.<n>.<point id>     160.module.2.DCW         (repeating group, n from 1)
    <model id>_<k>.<...>                  160_2.module.1.DCW       (k-th instance of a model, k >= 2)

Scale factors (``*_SF`` points) are applied, not published: a value is ``raw * 10**sf``.
Points a device does not implement (0x8000, 0xFFFF, NaN ... per the SunSpec rules) are skipped.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from dataclasses import dataclass
from importlib import resources
from typing import Any, Awaitable, Callable, Sequence

from edgeplane.errors import ConnectorError

SUNS = (0x5375, 0x6E53)
BASES = (40000, 0, 50000)
END_ID = 0xFFFF

# registers per SunSpec type; unlisted types (eui48, ipv6addr) are skipped when decoding
TYPE_SIZE = {
    "int16": 1, "uint16": 1, "count": 1, "acc16": 1, "enum16": 1, "bitfield16": 1, "pad": 1, "sunssf": 1,
    "int32": 2, "uint32": 2, "acc32": 2, "enum32": 2, "bitfield32": 2, "ipaddr": 2, "float32": 2,
    "int64": 4, "uint64": 4, "acc64": 4, "float64": 4,
}
_FORMAT = {
    "int16": "h", "sunssf": "h", "uint16": "H", "count": "H", "acc16": "H", "enum16": "H", "bitfield16": "H",
    "int32": "i", "uint32": "I", "acc32": "I", "enum32": "I", "bitfield32": "I", "ipaddr": "I",
    "int64": "q", "uint64": "Q", "acc64": "Q", "float32": "f", "float64": "d",
}
# the raw value that means "not implemented" for each type
_UNIMPLEMENTED = {
    "int16": -0x8000, "sunssf": -0x8000, "uint16": 0xFFFF, "count": 0xFFFF, "enum16": 0xFFFF, "bitfield16": 0xFFFF,
    "acc16": 0, "int32": -0x80000000, "uint32": 0xFFFFFFFF, "enum32": 0xFFFFFFFF, "bitfield32": 0xFFFFFFFF,
    "acc32": 0, "ipaddr": 0, "int64": -0x8000000000000000, "uint64": 0xFFFFFFFFFFFFFFFF, "acc64": 0,
}
#: the edgeplane point type a SunSpec type is published as (before its scale factor)
POINT_TYPE = {
    "int16": "int16", "sunssf": "int16", "uint16": "uint16", "count": "uint16", "acc16": "uint16", "enum16": "uint16",
    "bitfield16": "uint16", "int32": "int32", "uint32": "uint32", "acc32": "uint32", "enum32": "uint32",
    "bitfield32": "uint32", "ipaddr": "uint32", "int64": "int64", "uint64": "uint64", "acc64": "uint64",
    "float32": "float32", "float64": "float64", "string": "string",
}


class SunSpecError(ConnectorError):
    """No SunSpec device found, or a model chain that does not parse."""


@functools.lru_cache(maxsize=None)
def model_definition(model_id: int) -> dict[str, Any] | None:
    """pysunspec2's definition of ``model_id`` (its ``model_<id>.json``), or None if it ships none."""
    try:
        path = resources.files("sunspec2") / "models" / "json" / f"model_{model_id}.json"
        return json.loads(path.read_text())
    except (FileNotFoundError, OSError):
        return None


@dataclass
class SunSpecPoint:
    """One point of a discovered model instance."""

    name: str  # full name, e.g. "123.WMaxLimPct"
    address: int
    size: int  # registers
    type: str  # SunSpec type
    sf: str | int | None  # full name of its scale-factor point, a fixed exponent, or None
    access: str  # "R" or "RW"
    units: str | None
    model: int

    @property
    def writable(self) -> bool:
        return self.access == "RW"


@dataclass
class ModelInstance:
    """A model found in the chain: where it is and its points."""

    id: int
    address: int  # address of its ID register
    length: int  # L: registers after ID and L
    prefix: str  # "103" or "160_2"
    name: str  # the model's group name, e.g. "inverter_three_phase"
    points: list[SunSpecPoint]

    @property
    def end(self) -> int:
        return self.address + self.length + 1


def decode_value(registers: Sequence[int], type_: str) -> Any:
    """The raw value of a SunSpec point, or None if the device marks it not implemented."""
    if type_ == "string":
        data = struct.pack(f">{len(registers)}H", *registers).rstrip(b"\x00")
        return data.decode("utf-8", errors="replace") if data else None
    fmt = _FORMAT.get(type_)
    if fmt is None or type_ == "pad":
        return None
    value = struct.unpack(">" + fmt, struct.pack(f">{len(registers)}H", *registers))[0]
    if type_ in ("float32", "float64"):
        return None if math.isnan(value) else value
    if value == _UNIMPLEMENTED.get(type_):
        return None
    if type_ == "sunssf" and not -10 <= value <= 10:
        return None  # the standard's range; a device sending 309 must not overflow 10**sf (treated as unknown)
    return value


def encode_value(raw: Any, type_: str, size: int) -> list[int]:
    """Registers for a raw SunSpec value (ints for integer types, str for strings)."""
    if type_ == "string":
        data = str(raw).encode("utf-8")
        if len(data) > size * 2:
            raise ValueError(f"{raw!r} is longer than the point's {size * 2} bytes")
        data = data.ljust(size * 2, b"\x00")
        return list(struct.unpack(f">{size}H", data))
    fmt = _FORMAT[type_]
    try:
        data = struct.pack(">" + fmt, raw)
    except struct.error:
        raise ValueError(f"raw value {raw} does not fit SunSpec type {type_}") from None
    return list(struct.unpack(f">{len(data) // 2}H", data))


def layout(model_id: int, address: int, length: int, prefix: str,
           registers: Sequence[int] | None = None) -> ModelInstance:
    """The points of a model instance whose ID register is at ``address``.

    ``registers`` (the model's registers from ID on) resolve repeating-group counts that refer
    to a point; without them such a count, like a count of 0, means "as many as fit in L".
    """
    definition = model_definition(model_id)
    if definition is None:
        return ModelInstance(model_id, address, length, prefix, f"model_{model_id}", [])
    top = definition["group"]
    points: list[SunSpecPoint] = []
    end = address + length + 2
    values: dict[str, Any] = {}

    def group_size(group: dict[str, Any]) -> int:
        size = sum(p.get("size", TYPE_SIZE.get(p["type"], 1)) * p.get("count", 1) for p in group["points"])
        return size + sum(group_size(g) * (g.get("count") or 1 if isinstance(g.get("count"), int) else 1)
                          for g in group.get("groups", []))

    def walk(group: dict[str, Any], offset: int, path: str, scopes: list[dict[str, str]]) -> int:
        scope: dict[str, str] = {}
        local: list[tuple[dict[str, Any], SunSpecPoint]] = []
        for p in group["points"]:
            size = p.get("size", TYPE_SIZE.get(p["type"], 1))
            full = f"{path}.{p['name']}"
            scope[p["name"]] = full
            if offset + size <= end:
                point = SunSpecPoint(full, offset, size, p["type"], None, p.get("access", "R"), p.get("units"), model_id)
                local.append((p, point))
                if registers is not None and p["type"] in ("count", "uint16"):
                    i = offset - address
                    if i + size <= len(registers):
                        values[p["name"]] = decode_value(registers[i:i + size], p["type"])
            offset += size
        chain = [scope, *scopes]
        for p, point in local:
            sf = p.get("sf")
            if isinstance(sf, str):
                point.sf = next((s[sf] for s in chain if sf in s), None)
            elif isinstance(sf, int):
                point.sf = sf
            points.append(point)
        for sub in group.get("groups", []):
            count = sub.get("count", 1)
            if isinstance(count, str) and registers is not None:
                count = values.get(count) or 0
            elif isinstance(count, str) or count == 0:  # a count point with no registers to read it from: fill L
                size = group_size(sub)
                count = max(0, (end - offset) // size) if size else 0
            if count == 1 and "count" not in sub:
                offset = walk(sub, offset, f"{path}.{sub['name']}", chain)
            else:
                for n in range(1, count + 1):
                    offset = walk(sub, offset, f"{path}.{sub['name']}.{n}", chain)
        return offset

    walk(top, address, prefix, [])
    return ModelInstance(model_id, address, length, prefix, top.get("name", f"model_{model_id}"), points)


ReadFn = Callable[[int, int], Awaitable[Sequence[int]]]


async def find_base(read: ReadFn, bases: Sequence[int] = BASES) -> int:
    """The address of the 'SunS' marker; raises SunSpecError if none of ``bases`` holds it."""
    tried = []
    for base in bases:
        try:
            regs = await read(base, 2)
        except Exception as e:  # noqa: BLE001 - an address the device lacks answers with an exception
            tried.append(f"{base}: {type(e).__name__}")
            continue
        if tuple(regs) == SUNS:
            return base
        tried.append(f"{base}: {' '.join(f'{r:#06x}' for r in list(regs)[:2]) or 'no registers'}")
    raise SunSpecError(f"no 'SunS' marker found ({'; '.join(tried)}); is this a SunSpec device? "
                       f"set sunspec.base if it uses another address")


async def discover(read: ReadFn, base: int | None = None, max_span: int = 125) -> tuple[int, list[ModelInstance]]:
    """Find the marker and walk the model chain; returns the base and every model's layout."""
    asked = read

    async def read(address: int, count: int) -> Sequence[int]:
        # a device that answers fewer (or more) registers than asked breaks the chain: say so
        regs = list(await asked(address, count))
        if len(regs) != count:
            raise SunSpecError(f"the device answered {len(regs)} registers at {address} where {count} were asked")
        return regs

    if base is None:
        base = await find_base(read)
    else:
        regs = await read(base, 2)
        if tuple(regs) != SUNS:
            raise SunSpecError(f"no 'SunS' marker at {base} (found {regs[0]:#06x} {regs[1]:#06x})")
    models: list[ModelInstance] = []
    seen: dict[int, int] = {}
    address = base + 2
    while address < 65535 - 1:
        model_id, length = await read(address, 2)
        if model_id == END_ID or (model_id == 0 and length == 0):
            break
        if address + length + 1 > 65535:
            raise SunSpecError(f"model {model_id} at {address} claims length {length}, past the address space")
        registers = [model_id, length]
        pos = address + 2
        while pos < address + 2 + length:
            chunk = min(max_span, address + 2 + length - pos)
            registers += list(await read(pos, chunk))
            pos += chunk
        seen[model_id] = seen.get(model_id, 0) + 1
        prefix = str(model_id) if seen[model_id] == 1 else f"{model_id}_{seen[model_id]}"
        models.append(layout(model_id, address, length, prefix, registers))
        address += length + 2
        if len(models) > 200:
            raise SunSpecError("more than 200 models in the chain; the chain is probably broken")
    return base, models
