"""Payload decoders: MQTT message bytes -> readings ``(point_suffix, ts, value)``.

A decoder either returns readings or raises :class:`DecodeError` with a short ``reason`` (used
as the drop counter's label) and a message that says what was wrong. Nothing else escapes a
decoder: the connector counts and logs the drop and goes on with the next message.

``point_suffix`` is ``""`` for the mapping's own point, or the key of a JSON ``fields`` entry.
Values are floats (numbers and booleans), or strings from the text decoder / JSON strings.
Sparkplug B has its own stateful decoder in :mod:`edgeplane_mqtt.sparkplug.session`.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Any, Protocol

from edgeplane.errors import ConnectorError
from edgeplane_mqtt.config import JsonOptions

__all__ = ["DecodeError", "Decoder", "JsonDecoder", "NumberDecoder", "TextDecoder", "parse_path", "make_decoder"]

Reading = tuple[str, float, Any]


class DecodeError(ConnectorError):
    """A message that cannot become readings; ``reason`` labels the drop counter."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Decoder(Protocol):
    def decode(self, payload: bytes, now: float) -> list[Reading]: ...


class NumberDecoder:
    """The payload is one number as text (``"23.5"``, ``"-4"``, ``"1e3"``); also ``true``/``false``."""

    def decode(self, payload: bytes, now: float) -> list[Reading]:
        text = payload.strip()
        if text in (b"true", b"false"):
            return [("", now, 1.0 if text == b"true" else 0.0)]
        try:
            value = float(text)
        except (ValueError, UnicodeDecodeError):
            raise DecodeError("not_a_number", f"payload {_preview(payload)} is not a number") from None
        if not math.isfinite(value):
            raise DecodeError("not_finite", f"payload {_preview(payload)} is not a finite number")
        return [("", now, value)]


class TextDecoder:
    """The payload is UTF-8 text, kept as a string value."""

    def decode(self, payload: bytes, now: float) -> list[Reading]:
        try:
            return [("", now, payload.decode("utf-8"))]
        except UnicodeDecodeError:
            raise DecodeError("not_utf8", f"payload {_preview(payload)} is not UTF-8 text") from None


# ---------------------------------------------------------------------------------------------
# JSON

_PATH_PART = re.compile(r"^([^.\[\]]*)((?:\[\d+\])*)$")

Path = tuple[str | int, ...]


def parse_path(path: str) -> Path:
    """``data.values[0].v`` -> ``("data", "values", 0, "v")``; raises ValueError on a bad path."""
    tokens: list[str | int] = []
    for i, part in enumerate(path.split(".")):
        match = _PATH_PART.match(part)
        # only the first part may be a bare index ("[0].v": a document that is an array)
        if match is None or not part or (not match.group(1) and (i or not match.group(2))):
            raise ValueError(f"JSON path {path!r}: cannot read {part!r}; write keys with dots and indexes as [0], e.g. 'data.values[0].v'")
        if match.group(1):
            tokens.append(match.group(1))
        tokens.extend(int(x) for x in re.findall(r"\[(\d+)\]", match.group(2)))
    return tuple(tokens)


_MISSING = object()


def _lookup(doc: Any, path: Path) -> Any:
    current = doc
    for token in path:
        if isinstance(token, int):
            if not isinstance(current, list) or token >= len(current):
                return _MISSING
        elif not isinstance(current, dict) or token not in current:
            return _MISSING
        current = current[token]
    return current


def _dotted(path: Path) -> str:
    return "".join(f"[{t}]" if isinstance(t, int) else (f".{t}" if i else t) for i, t in enumerate(path)) or "<document>"


def parse_timestamp(raw: Any, fmt: str) -> float:
    """A JSON timestamp as seconds since the epoch; raises DecodeError('bad_timestamp')."""
    if isinstance(raw, bool) or raw is None:
        raise DecodeError("bad_timestamp", f"timestamp {raw!r} is not a time")
    if isinstance(raw, (int, float)):
        value = float(raw)
        if not math.isfinite(value) or value < 0:
            raise DecodeError("bad_timestamp", f"timestamp {raw!r} is not a time")
        if fmt == "auto":
            # by magnitude: seconds until the year 5138, then ms, us, ns
            divisor = 1e9 if value >= 1e17 else 1e6 if value >= 1e14 else 1e3 if value >= 1e11 else 1.0
        elif fmt == "iso8601":
            raise DecodeError("bad_timestamp", f"timestamp {raw!r} is a number, but the format is iso8601")
        else:
            divisor = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[fmt]
        return value / divisor
    if isinstance(raw, str) and fmt in ("auto", "iso8601"):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise DecodeError("bad_timestamp", f"timestamp {raw[:40]!r} is not ISO 8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)  # a field device without a zone means UTC
        return parsed.timestamp()
    raise DecodeError("bad_timestamp", f"timestamp {str(raw)[:40]!r} is not a {fmt} time")


def _scalar(value: Any, where: str) -> float | str:
    if type(value) is float:
        if not math.isfinite(value):
            raise DecodeError("not_finite", f"{where} is {value!r}, not a finite number")
        return value
    if type(value) is int or type(value) is bool:
        return float(value)
    if type(value) is str:
        return value
    raise DecodeError("wrong_type", f"{where} is {type(value).__name__ if value is not None else 'null'}, not a number")


class JsonDecoder:
    """JSON objects (or bare JSON numbers): values and timestamps found by path, arrays of samples."""

    def __init__(self, options: JsonOptions, value_path: str | None = None):
        self.options = options
        value = value_path if value_path is not None else options.value
        if options.fields:
            self.fields: list[tuple[str, Path]] = [(k, parse_path(p)) for k, p in options.fields.items()]
        else:
            self.fields = [("", parse_path(value) if value is not None else ())]
        self.timestamp = parse_path(options.timestamp) if options.timestamp else None
        self.samples = parse_path(options.samples) if options.samples else None
        self.format = options.timestamp_format
        self.period = options.period

    def decode(self, payload: bytes, now: float) -> list[Reading]:
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise DecodeError("not_json", f"payload {_preview(payload)} is not JSON") from None
        if self.samples is None:
            return self._record(doc, self._time(doc, now))
        samples = _lookup(doc, self.samples)
        if samples is _MISSING:
            raise DecodeError("missing_field", f"no samples array at {_dotted(self.samples)!r}")
        if not isinstance(samples, list):
            raise DecodeError("wrong_type", f"{_dotted(self.samples)!r} is {type(samples).__name__}, not an array of samples")
        readings: list[Reading] = []
        if samples and not isinstance(samples[0], dict):
            if self.period is None:
                raise DecodeError("wrong_type", "the samples are bare values, but 'period' is not set to space their times")
            start = self._time(doc, now)
            for i, raw in enumerate(samples):
                readings.append(("", start + i * self.period, _scalar(raw, f"sample [{i}]")))
            return readings
        for i, sample in enumerate(samples):
            if not isinstance(sample, dict):
                raise DecodeError("wrong_type", f"sample [{i}] is {type(sample).__name__}, not an object")
            readings.extend(self._record(sample, self._time(sample, now)))
        return readings

    def _time(self, record: Any, now: float) -> float:
        if self.timestamp is None:
            return now
        raw = _lookup(record, self.timestamp)
        if raw is _MISSING:
            raise DecodeError("missing_field", f"no timestamp at {_dotted(self.timestamp)!r}")
        return parse_timestamp(raw, self.format)

    def _record(self, record: Any, ts: float) -> list[Reading]:
        out: list[Reading] = []
        for suffix, path in self.fields:
            raw = _lookup(record, path)
            if raw is _MISSING:
                raise DecodeError("missing_field", f"no value at {_dotted(path)!r}")
            out.append((suffix, ts, _scalar(raw, repr(_dotted(path)))))
        return out


def make_decoder(name: str, options: JsonOptions, value_path: str | None = None) -> Decoder:
    """The decoder called ``name`` (number, text, json)."""
    if name == "number":
        return NumberDecoder()
    if name == "text":
        return TextDecoder()
    if name == "json":
        return JsonDecoder(options, value_path)
    raise ValueError(f"unknown decoder {name!r}: use number, text, json or the 'sparkplug:' section")


def _preview(payload: bytes, limit: int = 40) -> str:
    return repr(payload[:limit]) + ("..." if len(payload) > limit else "")
