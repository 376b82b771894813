"""Wire formats: columnar record blocks, and the versioned, compressed uplink envelope.

A **block** is the body of one outbox record: readings of one stream, an aggregate window series,
or a list of events. Numeric columns are stored as float64 with the timestamps delta-encoded and
every column byte-shuffled (all first bytes, then all second bytes...), which lets zstd/lz4 find
the redundancy in slowly changing measurements.

An **envelope** is one uplink message: ``b"EPS" | version (1) | codec (1) | compressed body``;
the body is ``uint32 index length | index JSON | blocks``. The index names the site and, for
every record, ``[stream, seq, kind, priority, readings, block length, created]``: the cloud end
drops a record whose ``(site, stream, seq)`` it already stored.

Decoding is bounded, because the cloud end reads what sites send and a site is not trusted: an
envelope above :data:`MAX_ENVELOPE_BYTES` is refused unread, decompression stops at
:data:`MAX_BODY_BYTES` (a 12.8 kB zstd bomb must not inflate to 400 MB), and every index and
block is checked for shape and length. Whatever is wrong, :func:`decode_envelope` and
:func:`decode_block` raise :class:`EnvelopeError` and nothing else.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeplane.bus import Batch, Event
from edgeplane.errors import EdgeplaneError

__all__ = [
    "ENVELOPE_VERSION",
    "Envelope",
    "EnvelopeError",
    "MAX_BODY_BYTES",
    "MAX_ENVELOPE_BYTES",
    "MAX_RECORDS",
    "Record",
    "compress",
    "decode_block",
    "decode_envelope",
    "decode_raw_blocks",
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


# A site sends envelopes of ``uplink.max_envelope_bytes`` (default 256 kB, uncompressed): these
# caps leave a wide margin for sites configured larger and still bound what one message costs.
MAX_ENVELOPE_BYTES = 16_000_000  # compressed, as received
MAX_BODY_BYTES = 64_000_000  # decompressed
MAX_RECORDS = 100_000  # records in one envelope


class EnvelopeError(EdgeplaneError, ValueError):
    """An uplink message is not a valid envelope (wrong magic, version, codec, size, index or block)."""


def _shuffle(column: np.ndarray) -> bytes:
    data = np.ascontiguousarray(column, dtype="<f8")
    return data.view(np.uint8).reshape(-1, 8).T.tobytes()


def _unshuffle(raw: bytes, n: int) -> np.ndarray:
    if n == 1:  # one value: the shuffle is the identity (the common case of a live, per-poll record)
        return np.frombuffer(raw, dtype="<f8").copy()
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
    ``{"kind": "events", "events": [...]}``. Raises :class:`EnvelopeError` when it is not one."""
    try:
        return _decode_block(block)
    except EnvelopeError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure of hostile bytes is a bad block
        raise EnvelopeError(f"corrupt block: {type(e).__name__}: {e}") from None


RawColumns = tuple[np.ndarray, np.ndarray, np.ndarray]


def decode_raw_blocks(blocks: Sequence[bytes]) -> list[RawColumns | None]:
    """Many numeric raw blocks at once: ``(ts, values, quality)`` of each, as :func:`decode_block`
    gives them, or None for a block that is not a numeric raw block of a consistent length (give
    that one to :func:`decode_block`, which decodes it or says what is wrong).

    Blocks of the same number of readings are laid side by side and decoded with one numpy
    operation per column (an envelope of a per-second poll holds hundreds of one-reading
    blocks); each block's columns are rows of those arrays, not copies.
    """
    out: list[RawColumns | None] = [None] * len(blocks)
    groups: dict[int, list[int]] = {}
    for i, block in enumerate(blocks):
        if len(block) >= 5 and block[0] == RAW:
            n = int.from_bytes(block[1:5], "little")
            if n and len(block) == 5 + 17 * n:
                groups.setdefault(n, []).append(i)
    for n, members in groups.items():
        k = len(members)
        grid = np.frombuffer(b"".join([blocks[i] for i in members]), dtype=np.uint8).reshape(k, 5 + 17 * n)

        def column(start: int, n: int = n, k: int = k, grid: np.ndarray = grid) -> np.ndarray:
            # undo the byte shuffle of every block at once: (block, byte, reading) -> (block, reading, byte)
            shuffled = grid[:, start : start + 8 * n].reshape(k, 8, n)
            return shuffled.transpose(0, 2, 1).copy().view("<f8").reshape(k, n)

        ts = np.cumsum(column(5), axis=1)  # timestamps are deltas (see _encode_ts)
        values = column(5 + 8 * n)
        quality = grid[:, 5 + 16 * n :].copy()
        for row, i in enumerate(members):
            out[i] = (ts[row], values[row], quality[row])
    return out


def _need(block: bytes, size: int, what: str) -> None:
    if len(block) != size:
        raise EnvelopeError(f"{what} block is {len(block)} bytes, its header says {size}")


def _decode_block(block: bytes) -> dict[str, Any]:
    if len(block) < 5:
        raise EnvelopeError(f"a block is at least 5 bytes, this one is {len(block)}")
    kind, n = struct.unpack_from("<BI", block)
    pos = 5
    if kind == RAW:
        _need(block, pos + 17 * n, "raw")
        ts = _decode_ts(block[pos : pos + 8 * n], n)
        pos += 8 * n
        values = _unshuffle(block[pos : pos + 8 * n], n)
        pos += 8 * n
        quality = np.frombuffer(block[pos : pos + n], dtype=np.uint8)
        return {"kind": "raw", "ts": ts, "values": values, "quality": quality}
    if kind == RAW_JSON:
        doc = json.loads(block[pos:])
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) and len(doc[k]) == n
                                                for k in ("ts", "values", "quality")):
            raise EnvelopeError(f"raw block: expected an object of ts, values and quality lists of {n} entries")
        return {"kind": "raw", "ts": np.asarray(doc["ts"], dtype=float), "values": doc["values"],
                "quality": np.asarray(doc["quality"], dtype=np.uint8)}
    if kind == AGGREGATE:
        if len(block) < pos + 10:
            raise EnvelopeError("aggregate block is shorter than its header")
        window, name_len = struct.unpack_from("<dH", block, pos)
        pos += 10
        if len(block) < pos + name_len:
            raise EnvelopeError("aggregate block is shorter than its column names")
        names = json.loads(block[pos : pos + name_len])
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise EnvelopeError("aggregate block: the column names are not a list of text")
        pos += name_len
        _need(block, pos + 8 * n * (1 + len(names)), "aggregate")
        starts = _decode_ts(block[pos : pos + 8 * n], n)
        pos += 8 * n
        stats = {}
        for name in names:
            stats[name] = _unshuffle(block[pos : pos + 8 * n], n)
            pos += 8 * n
        return {"kind": "aggregate", "window": window, "ts": starts, "stats": stats}
    if kind == EVENTS:
        events = json.loads(block[pos:])
        if not isinstance(events, list) or len(events) != n or not all(isinstance(e, dict) for e in events):
            raise EnvelopeError(f"events block: expected a list of {n} event objects")
        return {"kind": "events", "events": events}
    raise EnvelopeError(f"unknown block kind {kind}: the sender is newer than this cloud end; upgrade it")


# -- compression ------------------------------------------------------------------------------

# zstandard's compressor and decompressor objects must not be used by two threads at once (a
# process with several outboxes, or the cloud's ingest threads, crashed on a shared one), and
# making one per call costs more than the compression of a small block: one of each per thread.
_zstd = threading.local()


def _zstd_compressor() -> Any:
    compressor = getattr(_zstd, "compressor", None)
    if compressor is None:
        import zstandard

        compressor = _zstd.compressor = zstandard.ZstdCompressor(level=3)
    return compressor


def _zstd_decompressor() -> Any:
    decompressor = getattr(_zstd, "decompressor", None)
    if decompressor is None:
        import zstandard

        decompressor = _zstd.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def compress(data: bytes, codec: str) -> bytes:
    if codec == "zstd":
        compressed: bytes = _zstd_compressor().compress(data)
        return compressed
    if codec == "lz4":
        import lz4.frame

        framed: bytes = lz4.frame.compress(data)
        return framed
    if codec == "none":
        return data
    raise ValueError(f"unknown compression {codec!r}: use zstd, lz4 or none")


def decompress(data: bytes, codec: str, max_size: int = MAX_BODY_BYTES) -> bytes:
    """Decompress at most ``max_size`` bytes; :class:`EnvelopeError` if the data holds more."""
    out: bytes
    if codec == "zstd":
        # a stream reader never trusts the frame's declared size and stops at the limit
        with _zstd_decompressor().stream_reader(data) as reader:
            out = reader.read(max_size + 1)
    elif codec == "lz4":
        import lz4.frame

        out = lz4.frame.LZ4FrameDecompressor().decompress(data, max_length=max_size + 1)
    elif codec == "none":
        out = data
    else:
        raise EnvelopeError(f"unknown compression {codec!r}")
    if len(out) > max_size:
        raise EnvelopeError(f"envelope body is larger than {max_size:,} bytes once decompressed; refused")
    return out


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
    if len(payload) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"envelope of {len(payload):,} bytes is larger than {MAX_ENVELOPE_BYTES:,}; refused unread")
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
        return _parse_body(body, version)
    except EnvelopeError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad envelope
        raise EnvelopeError(f"corrupt envelope: {type(e).__name__}: {e}") from None


def _parse_body(body: bytes, version: int) -> Envelope:
    (index_len,) = struct.unpack_from("<I", body)
    if 4 + index_len > len(body):
        raise EnvelopeError(f"envelope index of {index_len} bytes is longer than the body")
    index = json.loads(body[4 : 4 + index_len])
    if not isinstance(index, dict) or not isinstance(index.get("site"), str) or not isinstance(index.get("r"), list):
        raise EnvelopeError("envelope index must be an object with a text 'site' and a list 'r' of records")
    sent = index.get("sent")
    if not isinstance(sent, (int, float)) or isinstance(sent, bool):
        raise EnvelopeError("envelope index: 'sent' must be a number")
    if len(index["r"]) > MAX_RECORDS:
        raise EnvelopeError(f"envelope holds {len(index['r'])} records, more than {MAX_RECORDS}")
    pos = 4 + index_len
    records = []
    for entry in index["r"]:
        if not isinstance(entry, list) or len(entry) != 7:
            raise EnvelopeError("envelope index: each record is [stream, seq, kind, priority, count, length, created]")
        stream, seq, kind, priority, count, length, created = entry
        if not isinstance(stream, str) or not isinstance(kind, str):
            raise EnvelopeError("envelope index: a record's stream and kind must be text")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (seq, priority, count, length)) or length < 0:
            raise EnvelopeError("envelope index: a record's seq, priority, count and length must be whole numbers, length >= 0")
        if not isinstance(created, (int, float)) or isinstance(created, bool):
            raise EnvelopeError("envelope index: a record's 'created' must be a number")
        if pos + length > len(body):
            raise EnvelopeError(f"record {stream!r} #{seq} says {length} bytes, past the end of the envelope")
        records.append(Record(stream, seq, kind, priority, count, float(created), body[pos : pos + length]))
        pos += length
    if pos != len(body):
        raise EnvelopeError(f"envelope body has {len(body) - pos} bytes the index does not describe")
    return Envelope(site=index["site"], sent=float(sent), records=records, version=version)
