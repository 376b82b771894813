"""Wire formats: columnar record blocks, and the versioned, compressed uplink envelope.

A **block** is the body of one outbox record: readings of one stream, an aggregate window series,
or a list of events. Numeric columns are stored as float64 with the timestamps delta-encoded and
every column byte-shuffled (all first bytes, then all second bytes...), which lets zstd/lz4 find
the redundancy in slowly changing measurements.

An **envelope** is one uplink message: ``b"EPS" | version (1) | codec (1) | compressed body``;
the body is ``uint32 index length | index JSON | blocks``. The index names the site and, for
every record, ``[stream, seq, kind, priority, readings, block length, created]``: the cloud end
drops a record whose ``(site, stream, seq)`` it already stored.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeplane.bus import Batch, Event

__all__ = [
    "ENVELOPE_VERSION",
    "Envelope",
    "EnvelopeError",
    "Record",
    "compress",
    "decode_block",
    "decode_envelope",
    "decompress",
    "encode_aggregate",
    "encode_batch",
    "encode_envelope",
    "encode_events",
]

ENVELOPE_VERSION = 1
_MAGIC = b"EPS"
_CODECS = {"none": 0, "zstd": 1, "lz4": 2}
_CODEC_NAMES = {v: k for k, v in _CODECS.items()}

# block kinds (first byte of a block)
RAW, RAW_JSON, AGGREGATE, EVENTS = 1, 2, 3, 4
KIND_NAMES = {RAW: "raw", RAW_JSON: "raw", AGGREGATE: "aggregate", EVENTS: "events"}


class EnvelopeError(ValueError):
    """An uplink message is not a valid envelope (wrong magic, version, codec or index)."""


def _shuffle(column: np.ndarray) -> bytes:
    data = np.ascontiguousarray(column, dtype="<f8")
    return data.view(np.uint8).reshape(-1, 8).T.tobytes()


def _unshuffle(raw: bytes, n: int) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.uint8).reshape(8, n).T.copy().view("<f8").reshape(n)


def _encode_ts(ts: np.ndarray) -> bytes:
    ts = np.asarray(ts, dtype=np.float64)
    deltas = np.empty_like(ts)
    if len(ts):
        deltas[0] = ts[0]
        np.subtract(ts[1:], ts[:-1], out=deltas[1:])
    return _shuffle(deltas)


def _decode_ts(raw: bytes, n: int) -> np.ndarray:
    # cumsum of float deltas can differ from the original in the last bit; fine for telemetry
    return np.cumsum(_unshuffle(raw, n))


def encode_batch(batch: Batch) -> tuple[bytes, int]:
    """A block of raw readings; returns (block, readings)."""
    n = len(batch.ts)
    values = batch.values
    if values.dtype.kind in "fiub" and values.ndim == 1:
        body = b"".join((
            struct.pack("<BI", RAW, n),
            _encode_ts(batch.ts),
            _shuffle(values.astype(np.float64, copy=False)),
            np.ascontiguousarray(batch.quality, dtype=np.uint8).tobytes(),
        ))
        return body, n
    doc = {"ts": np.asarray(batch.ts, dtype=float).tolist(), "values": [_jsonable(v) for v in values],
           "quality": np.asarray(batch.quality).astype(int).tolist()}
    return struct.pack("<BI", RAW_JSON, n) + json.dumps(doc, separators=(",", ":")).encode(), n


def encode_aggregate(window: float, starts: np.ndarray, stats: dict[str, np.ndarray]) -> tuple[bytes, int]:
    """A block of aggregate windows: ``starts`` and one column per statistic."""
    n = len(starts)
    names = json.dumps(list(stats)).encode()
    parts = [struct.pack("<BIdH", AGGREGATE, n, window, len(names)), names, _encode_ts(starts)]
    parts += [_shuffle(col) for col in stats.values()]
    return b"".join(parts), n


def encode_events(events: list[Event]) -> tuple[bytes, int]:
    docs = [{"topic": e.topic, "kind": e.kind, "ts": e.ts, "source": e.source, "severity": e.severity,
             "data": e.data} for e in events]
    return struct.pack("<BI", EVENTS, len(docs)) + json.dumps(docs, separators=(",", ":"), default=_jsonable).encode(), len(docs)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)


def decode_block(block: bytes) -> dict[str, Any]:
    """A block as plain data: ``{"kind": "raw", "ts": [...], "values": [...], "quality": [...]}``,
    ``{"kind": "aggregate", "window": s, "ts": [...], "stats": {name: [...]}}`` or
    ``{"kind": "events", "events": [...]}``."""
    kind, n = struct.unpack_from("<BI", block)
    pos = 5
    if kind == RAW:
        ts = _decode_ts(block[pos : pos + 8 * n], n)
        pos += 8 * n
        values = _unshuffle(block[pos : pos + 8 * n], n)
        pos += 8 * n
        quality = np.frombuffer(block[pos : pos + n], dtype=np.uint8)
        return {"kind": "raw", "ts": ts, "values": values, "quality": quality}
    if kind == RAW_JSON:
        doc = json.loads(block[pos:])
        return {"kind": "raw", "ts": np.asarray(doc["ts"], dtype=float), "values": doc["values"],
                "quality": np.asarray(doc["quality"], dtype=np.uint8)}
    if kind == AGGREGATE:
        window, name_len = struct.unpack_from("<dH", block, pos)
        pos += 10
        names = json.loads(block[pos : pos + name_len])
        pos += name_len
        starts = _decode_ts(block[pos : pos + 8 * n], n)
        pos += 8 * n
        stats = {}
        for name in names:
            stats[name] = _unshuffle(block[pos : pos + 8 * n], n)
            pos += 8 * n
        return {"kind": "aggregate", "window": window, "ts": starts, "stats": stats}
    if kind == EVENTS:
        return {"kind": "events", "events": json.loads(block[pos:])}
    raise EnvelopeError(f"unknown block kind {kind}: the sender is newer than this cloud end; upgrade it")


# -- compression ------------------------------------------------------------------------------

_zstd_c: Any = None
_zstd_d: Any = None


def compress(data: bytes, codec: str) -> bytes:
    global _zstd_c
    if codec == "zstd":
        if _zstd_c is None:
            import zstandard

            _zstd_c = zstandard.ZstdCompressor(level=3)
        return _zstd_c.compress(data)
    if codec == "lz4":
        import lz4.frame

        return lz4.frame.compress(data)
    if codec == "none":
        return data
    raise ValueError(f"unknown compression {codec!r}: use zstd, lz4 or none")


def decompress(data: bytes, codec: str) -> bytes:
    global _zstd_d
    if codec == "zstd":
        if _zstd_d is None:
            import zstandard

            _zstd_d = zstandard.ZstdDecompressor()
        return _zstd_d.decompress(data)
    if codec == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    if codec == "none":
        return data
    raise EnvelopeError(f"unknown compression {codec!r}")


# -- envelope ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Record:
    """One outbox record as it travels: a block plus its identity."""

    stream: str
    seq: int
    kind: str
    priority: int
    count: int
    created: float
    block: bytes


@dataclass(slots=True)
class Envelope:
    site: str
    sent: float
    records: list[Record]
    version: int = ENVELOPE_VERSION


def encode_envelope(site: str, sent: float, records: list[Record], codec: str) -> bytes:
    index = {"site": site, "sent": sent,
             "r": [[r.stream, r.seq, r.kind, r.priority, r.count, len(r.block), r.created] for r in records]}
    index_bytes = json.dumps(index, separators=(",", ":")).encode()
    body = b"".join([struct.pack("<I", len(index_bytes)), index_bytes, *(r.block for r in records)])
    return _MAGIC + bytes((ENVELOPE_VERSION, _CODECS[codec])) + compress(body, codec)


def decode_envelope(payload: bytes) -> Envelope:
    """Parse an envelope; raises :class:`EnvelopeError` with the reason when it is not one."""
    if len(payload) < 5 or payload[:3] != _MAGIC:
        raise EnvelopeError("not an edgeplane envelope (bad magic)")
    version, codec_id = payload[3], payload[4]
    if version != ENVELOPE_VERSION:
        raise EnvelopeError(f"envelope version {version} is not supported (this cloud end reads {ENVELOPE_VERSION})")
    codec = _CODEC_NAMES.get(codec_id)
    if codec is None:
        raise EnvelopeError(f"unknown compression id {codec_id}")
    try:
        body = decompress(payload[5:], codec)
        (index_len,) = struct.unpack_from("<I", body)
        index = json.loads(body[4 : 4 + index_len])
        pos = 4 + index_len
        records = []
        for stream, seq, kind, priority, count, length, created in index["r"]:
            records.append(Record(stream, int(seq), kind, int(priority), int(count), float(created), body[pos : pos + length]))
            pos += length
        if pos != len(body):
            raise EnvelopeError(f"envelope body has {len(body) - pos} bytes the index does not describe")
        return Envelope(site=index["site"], sent=float(index["sent"]), records=records, version=version)
    except EnvelopeError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad envelope
        raise EnvelopeError(f"corrupt envelope: {type(e).__name__}: {e}") from None
