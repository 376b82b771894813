"""Value types shared by every config model: durations, rates and sizes as a site file writes them, and
the MQTT broker URL that the uplink and the MQTT connector both take.

The bottom of the config package: it imports nothing from edgeplane, so any settings module
(core, inference, sync, console, a plugin's) may import it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

__all__ = ["Duration", "MqttUrl", "Rate", "Size", "check_mqtt_url", "parse_duration", "parse_rate", "parse_size"]

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h|d)?\s*$")


def parse_duration(value: Any) -> float:
    """``1s``, ``500ms``, ``5min``, ``4h``, ``30d`` or a number of seconds, as seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as '500ms', '5min', '30d'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]
    else:
        raise ValueError(f"{value!r} is not a duration: write a number of seconds or e.g. '500ms', '5min', '30d'")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative (got {value!r})")
    return seconds


def parse_rate(value: Any) -> float:
    """``10/s``, ``600/min``, ``5%/min`` (kept as percent) or a number per second, as per second."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and "/" in value:
        amount, _, per = value.partition("/")
        amount = amount.strip().rstrip("%")
        try:
            return float(amount) / parse_duration("1" + per.strip() if per.strip()[0].isalpha() else per)
        except (ValueError, IndexError):
            pass
    raise ValueError(f"{value!r} is not a rate: write e.g. '10/s', '600/min' or a number per second")


_duration_schema = {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": _DURATION_RE.pattern}]}
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_duration_schema)]
"""Seconds, written in a site file as a number or as ``500ms``, ``1s``, ``5min``, ``4h``, ``30d``."""

Rate = Annotated[
    float,
    BeforeValidator(parse_rate),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^\s*[\d.]+%?\s*/\s*\w+\s*$"}]}),
]
"""Units per second, written as a number or as ``10/s``, ``600/min``."""

_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: Any) -> int:
    """``512MB``, ``2GiB``, ``100kB`` or a number of bytes, as bytes."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string such as '512MB' or '2GiB'")
    if isinstance(value, (int, float)):
        size = float(value)
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)) and m.group(2).lower() in _SIZE_UNITS:
        size = float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    else:
        raise ValueError(f"{value!r} is not a size: write a number of bytes or e.g. '512MB', '2GiB'")
    if size <= 0:
        raise ValueError(f"a size must be positive (got {value!r})")
    return int(size)


Size = Annotated[int, BeforeValidator(parse_size)]
"""Bytes, written in a site file as a number or as ``100kB``, ``512MB``, ``2GiB``."""


def check_mqtt_url(value: str) -> str:
    """``mqtt://host:port`` or ``mqtts://host:port`` (``tcp``/``ssl`` as paho spells them), with a valid port."""
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        raise ValueError(f"{value!r} is not an MQTT broker URL: write mqtt://host:1883 or mqtts://host:8883")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise ValueError(f"{value!r} has an invalid port: write a number from 1 to 65535") from None
    return value


MqttUrl = Annotated[str, AfterValidator(check_mqtt_url)]
