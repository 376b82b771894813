"""From OPC UA DataValues to edgeplane readings, and from commanded values to OPC UA Variants."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Literal

import numpy as np
from asyncua import ua

from edgeplane import Quality
from edgeplane.errors import ConnectorError

from edgeplane_opcua.config import OpcUaPoint

__all__ = ["ValueMismatch", "coerce", "quality_of", "status_name", "timestamp_of", "to_engineering", "to_raw"]

_GOOD_MASK = 0xC0000000
_UNCERTAIN = 0x40000000


class ValueMismatch(ConnectorError, ValueError):
    """A commanded value does not fit the node's data type."""


def quality_of(status: ua.StatusCode | None) -> Quality:
    """Good / Uncertain / Bad from a StatusCode's severity bits (absent means Good)."""
    if status is None:
        return Quality.GOOD
    severity = status.value & _GOOD_MASK
    if severity == 0:
        return Quality.GOOD
    if severity == _UNCERTAIN:
        return Quality.UNCERTAIN
    return Quality.BAD


def status_name(status: ua.StatusCode | int | None) -> str:
    if status is None:
        return "Good"
    code = status.value if isinstance(status, ua.StatusCode) else status
    try:
        return ua.StatusCode(code).name
    except Exception:  # noqa: BLE001 - an unknown code still gets a readable name
        return f"0x{code:08X}"


def _epoch(value: dt.datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # asyncua hands out naive UTC datetimes
        value = value.replace(tzinfo=dt.timezone.utc)
    seconds = value.timestamp()
    # a DateTime of 0 (1601-01-01) means "not set" in OPC UA
    return seconds if seconds > 0 else None


def timestamp_of(value: ua.DataValue, prefer: Literal["source", "server", "client"], now: float) -> float:
    """The reading's time: source, then server, then ``now``, starting from ``prefer``."""
    if prefer == "client":
        return now
    order = (value.SourceTimestamp, value.ServerTimestamp) if prefer == "source" else (value.ServerTimestamp, value.SourceTimestamp)
    for candidate in order:
        seconds = _epoch(candidate)
        if seconds is not None:
            return seconds
    return now


def to_engineering(raw: Any, point: OpcUaPoint) -> Any:
    """Apply the point's ``scale``/``offset`` to numbers (and arrays of numbers); pass others through."""
    if point.scale == 1.0 and point.offset == 0.0:
        return raw
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, (int, float)):
        return raw * point.scale + point.offset
    if isinstance(raw, np.ndarray) and raw.dtype.kind in "iuf":
        return raw * point.scale + point.offset
    return raw


def to_raw(value: Any, point: OpcUaPoint) -> Any:
    """The inverse of :func:`to_engineering`, for writes."""
    if point.scale == 1.0 and point.offset == 0.0 or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return (value - point.offset) / point.scale
    if isinstance(value, (list, tuple)):
        return [to_raw(v, point) for v in value]
    return value


_INT_RANGES: dict[ua.VariantType, tuple[int, int]] = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}
_FLOATS = (ua.VariantType.Float, ua.VariantType.Double)


def _coerce_scalar(value: Any, vtype: ua.VariantType) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if vtype == ua.VariantType.Boolean:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueMismatch(f"the node holds a Boolean; {value!r} is not true/false/0/1")
    if vtype in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueMismatch(f"the node holds an {vtype.name}; {type(value).__name__} {value!r} is not a number")
        if not math.isfinite(value):
            raise ValueMismatch(f"the node holds an {vtype.name}; {value!r} is not finite")
        rounded = round(value)
        if abs(value - rounded) > 1e-9:
            raise ValueMismatch(f"the node holds an {vtype.name}; {value!r} is not a whole number")
        lo, hi = _INT_RANGES[vtype]
        if not lo <= rounded <= hi:
            raise ValueMismatch(f"{rounded} does not fit the node's {vtype.name} ({lo}..{hi})")
        return int(rounded)
    if vtype in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueMismatch(f"the node holds a {vtype.name}; {type(value).__name__} {value!r} is not a number")
        if vtype == ua.VariantType.Float and math.isfinite(value) and abs(value) > 3.4028235e38:
            raise ValueMismatch(f"{value!r} does not fit the node's Float (32-bit)")
        return float(value)
    if vtype == ua.VariantType.String:
        if not isinstance(value, str):
            raise ValueMismatch(f"the node holds a String; got {type(value).__name__} {value!r}")
        return value
    if vtype == ua.VariantType.LocalizedText:
        return ua.LocalizedText(str(value))
    raise ValueMismatch(f"writing the node's data type {vtype.name} is not supported; write a number, bool or string node")


def coerce(value: Any, vtype: ua.VariantType, is_array: bool) -> ua.Variant:
    """A Variant of the node's own type holding ``value``; :class:`ValueMismatch` if it cannot."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if not is_array:
            raise ValueMismatch(f"the node holds a single {vtype.name}; got a list of {len(value)} values")
        return ua.Variant([_coerce_scalar(v, vtype) for v in value], vtype)
    if is_array:
        raise ValueMismatch(f"the node holds an array of {vtype.name}; write a list")
    return ua.Variant(_coerce_scalar(value, vtype), vtype)


def as_python(variant_value: Any) -> Any:
    """A value fit for a Batch: numbers, bools and strings as they are, arrays as numpy arrays."""
    if isinstance(variant_value, (list, tuple)):
        if variant_value and isinstance(variant_value[0], (int, float)) and not isinstance(variant_value[0], bool):
            return np.asarray(variant_value, dtype=np.float64)
        return np.asarray([as_python(v) for v in variant_value], dtype=object)
    if isinstance(variant_value, (bool, int, float, str)) or variant_value is None:
        return variant_value
    if isinstance(variant_value, ua.LocalizedText):
        return variant_value.Text
    if isinstance(variant_value, dt.datetime):
        return _epoch(variant_value)
    return str(variant_value)
