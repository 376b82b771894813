"""Raw Modbus registers <-> typed values: the data types, byte order and word order.

A register is 16 bits sent big-endian on the wire. Devices disagree about how wider values are
laid over several registers, so every point says:

* ``word_order``: ``big`` (most significant register first, "ABCD") or ``little`` ("CDAB");
* ``byte_order``: ``big`` (as the standard says) or ``little`` (bytes swapped inside each
  register, "BADC").

Strings are ``length`` bytes (two per register, first character in the high byte unless
``byte_order: little``), trailing NULs stripped.

:func:`decode` decodes one value; :func:`decode_many` decodes every point of one type and order
in a read block with numpy at once (the connector's hot path).
"""

from __future__ import annotations

import struct
from typing import Any, Literal, Sequence

import numpy as np

Order = Literal["big", "little"]

#: registers per value of each numeric type
REGISTERS: dict[str, int] = {
    "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4, "uint64": 4, "float32": 2, "float64": 4,
}
_STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q", "float32": "f", "float64": "d"}
INTEGER_RANGES = {
    "int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1), "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1),
}


def register_count(type_: str, length: int | None = None) -> int:
    """How many registers a value of ``type_`` occupies (``length`` in bytes for strings)."""
    if type_ == "string":
        if not length:
            raise ValueError("a string point needs 'length' (bytes)")
        return (length + 1) // 2
    if type_ == "bool":
        return 1
    return REGISTERS[type_]


def registers_to_bytes(registers: Sequence[int], byte_order: Order = "big", word_order: Order = "big") -> bytes:
    """The bytes of ``registers`` in value order (most significant first for numbers)."""
    regs = list(registers)
    if word_order == "little":
        regs.reverse()
    raw = struct.pack(f">{len(regs)}H", *regs)
    if byte_order == "little":
        swapped = bytearray(raw)
        swapped[0::2], swapped[1::2] = raw[1::2], raw[0::2]
        raw = bytes(swapped)
    return raw


def bytes_to_registers(data: bytes, byte_order: Order = "big", word_order: Order = "big") -> list[int]:
    """Inverse of :func:`registers_to_bytes`."""
    if len(data) % 2:
        data += b"\x00"
    if byte_order == "little":
        swapped = bytearray(data)
        swapped[0::2], swapped[1::2] = data[1::2], data[0::2]
        data = bytes(swapped)
    regs = list(struct.unpack(f">{len(data) // 2}H", data))
    if word_order == "little":
        regs.reverse()
    return regs


def decode(registers: Sequence[int], type_: str, *, byte_order: Order = "big", word_order: Order = "big",
           bit: int | None = None, encoding: str = "utf-8") -> Any:
    """The raw value held by ``registers`` (no scale applied)."""
    if type_ == "bool":
        return bool((registers[0] >> (bit or 0)) & 1)
    if type_ == "string":
        # strings are read in register order; word_order does not reverse text
        raw = registers_to_bytes(registers, byte_order, "big")
        return raw.rstrip(b"\x00").decode(encoding, errors="replace")
    return struct.unpack(">" + _STRUCT[type_], registers_to_bytes(registers, byte_order, word_order))[0]


def encode(raw: Any, type_: str, *, byte_order: Order = "big", word_order: Order = "big",
           length: int | None = None, encoding: str = "utf-8") -> list[int]:
    """Registers holding ``raw`` (an int for integer types, float, or str for strings)."""
    if type_ == "string":
        data = str(raw).encode(encoding)
        if length is not None:
            if len(data) > length:
                raise ValueError(f"{raw!r} is {len(data)} bytes; the point holds at most {length}")
            data = data.ljust(register_count("string", length) * 2, b"\x00")
        return bytes_to_registers(data, byte_order, "big")
    if type_ in INTEGER_RANGES:
        lo, hi = INTEGER_RANGES[type_]
        if not lo <= raw <= hi:
            raise ValueError(f"raw value {raw} does not fit {type_} ({lo}..{hi})")
    return bytes_to_registers(struct.pack(">" + _STRUCT[type_], raw), byte_order, word_order)


def make_decoder(type_: str, byte_order: Order, word_order: Order, bit: int | None, encoding: str = "utf-8"):
    """A fast ``f(block_bytes, register_offset) -> raw`` for a point inside a read block.

    ``block_bytes`` is the whole block packed big-endian once per read; the common case
    (big/big) is one ``struct.unpack_from`` per point.
    """
    if type_ == "bool":
        mask = 1 << (bit or 0)
        return lambda buf, off: bool(((buf[2 * off] << 8) | buf[2 * off + 1]) & mask)
    if type_ == "string":
        return None  # strings go through decode(); they are rare and not hot
    fmt = ">" + _STRUCT[type_]
    size = REGISTERS[type_]
    if byte_order == "big" and word_order == "big":
        unpack_from = struct.Struct(fmt).unpack_from
        return lambda buf, off: unpack_from(buf, 2 * off)[0]
    unpack = struct.Struct(fmt).unpack

    def slow(buf: bytes, off: int) -> Any:
        regs = struct.unpack_from(f">{size}H", buf, 2 * off)
        return unpack(registers_to_bytes(regs, byte_order, word_order))[0]

    return slow


#: numpy dtype (big-endian, the value's byte order once registers are in value order) per type
NUMPY_TYPES: dict[str, str] = {
    "int16": ">i2", "uint16": ">u2", "int32": ">i4", "uint32": ">u4", "int64": ">i8", "uint64": ">u8",
    "float32": ">f4", "float64": ">f8",
}


def decode_many(registers: Any, offsets: np.ndarray, type_: str, byte_order: Order = "big",
                word_order: Order = "big") -> np.ndarray:
    """Raw values of many points of one numeric type and order inside one read block, at once.

    ``registers`` is the block's register values (a list as pymodbus gives them, or an array),
    ``offsets`` the register offset of each point in the block. Gives what :func:`decode` gives
    point by point, as a native-endian numpy array of the type (no scale applied).
    """
    return decode_gathered(wire_registers(registers)[gather_index(offsets, type_)], type_, byte_order, word_order)


def wire_registers(registers: Any) -> np.ndarray:
    """Register values as big-endian 16-bit words: the block's bytes exactly as on the wire."""
    return np.asarray(registers, dtype=">u2")


def gather_index(offsets: np.ndarray, type_: str) -> np.ndarray:
    """Index into a block's registers giving one row of registers per point (compute it once)."""
    offsets = np.asarray(offsets, dtype=np.intp)
    return offsets[:, None] + np.arange(REGISTERS[type_])


def decode_gathered(rows: np.ndarray, type_: str, byte_order: Order = "big", word_order: Order = "big",
                    dtype: Any = None) -> np.ndarray:
    """Decode ``rows`` (big-endian words, one row of registers per point) as ``type_``, into a
    native array of ``dtype`` (default: the type itself; float64 saves the connector a copy)."""
    if word_order == "little":
        rows = rows[:, ::-1]
    if byte_order == "little":
        rows = rows.byteswap()  # each register's two bytes swapped back into value order
    if not rows.flags.c_contiguous:
        rows = np.ascontiguousarray(rows)
    # the words laid end to end are the value's bytes, most significant first
    return rows.view(NUMPY_TYPES[type_]).reshape(len(rows)).astype(dtype or NUMPY_TYPES[type_][1:])
