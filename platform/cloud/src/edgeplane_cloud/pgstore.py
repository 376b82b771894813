"""PostgreSQL store of the scale-out back end: time-partitioned records, dead letters, fleet state.

One row per uplink record (one stream's batch, as the site's outbox made it), with its readings
as arrays (``ts``, ``vals``, ``quality``): the columnar layout TimescaleDB's compression also
uses, 10-100x fewer rows than one row per reading. ``records`` is partitioned by day on
``created`` (the time the site's outbox made the record: part of the record's identity, the same
on every redelivery), so retention drops whole partitions. The primary key is
``(site, stream, seq, created)``: PostgreSQL needs the partition column in a unique key, and
since a site never reuses a ``(stream, seq)`` with another ``created`` it is the unique
``(site, stream, seq)``. Batches arrive by binary COPY into a staging table, then
``INSERT ... ON CONFLICT DO NOTHING`` so a redelivered record never writes a second row.

The COPY stream is built here (:func:`copy_binary`) rather than by psycopg row by row: a record's
readings stay numpy arrays from the codec to the wire, each array column of a whole batch is
converted to PostgreSQL's binary array layout in one numpy operation, and only the per-record
header is assembled in Python. psycopg's own ``write_row`` dumped every reading as a Python float
(a quarter of a worker's time in the profile).

What cannot be decoded or stored goes to ``dead_letters`` with the reason.
"""

from __future__ import annotations

import json
import math
import struct
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import numpy as np

__all__ = ["SCHEMA", "DeadLetter", "PgStore", "RecordRow", "SiteCounts", "copy_binary", "ensure_partitions",
           "drop_partitions_before", "pg_micros"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    site text NOT NULL, stream text NOT NULL, seq bigint NOT NULL, created timestamptz NOT NULL,
    kind text NOT NULL, priority smallint, count integer NOT NULL, received timestamptz NOT NULL,
    ts float8[], vals float8[], quality smallint[], other jsonb,
    PRIMARY KEY (site, stream, seq, created)
) PARTITION BY RANGE (created);
CREATE TABLE IF NOT EXISTS dead_letters (
    id bigserial PRIMARY KEY, received timestamptz NOT NULL DEFAULT now(), subject text NOT NULL,
    site text, reason text NOT NULL, payload bytea);
CREATE TABLE IF NOT EXISTS sites (
    site text PRIMARY KEY, labels jsonb NOT NULL DEFAULT '{}', last_seen timestamptz,
    envelopes bigint NOT NULL DEFAULT 0, records bigint NOT NULL DEFAULT 0, readings bigint NOT NULL DEFAULT 0,
    duplicates bigint NOT NULL DEFAULT 0, dead bigint NOT NULL DEFAULT 0,
    reported text, reported_at timestamptz, revision bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS desired (
    site text NOT NULL, kind text NOT NULL, name text NOT NULL, revision bigint NOT NULL, message_id text NOT NULL,
    issued timestamptz NOT NULL, body jsonb NOT NULL, rollout bigint, PRIMARY KEY (site, kind, name));
CREATE TABLE IF NOT EXISTS artifacts (
    name text NOT NULL, version text NOT NULL, sha256 text NOT NULL, filename text NOT NULL, manifest jsonb,
    data bytea NOT NULL, added timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS rollouts (
    id bigserial PRIMARY KEY, kind text NOT NULL, target jsonb NOT NULL, selector jsonb NOT NULL,
    canary real NOT NULL, batch_size integer NOT NULL, gate_timeout real NOT NULL, state text NOT NULL,
    error text, created timestamptz NOT NULL DEFAULT now(), finished timestamptz);
CREATE TABLE IF NOT EXISTS rollout_sites (
    rollout bigint NOT NULL REFERENCES rollouts(id), site text NOT NULL, batch integer NOT NULL,
    state text NOT NULL, revision bigint, message_id text, previous jsonb, error text,
    started timestamptz, done timestamptz, PRIMARY KEY (rollout, site));
CREATE TABLE IF NOT EXISTS events (
    id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), severity text NOT NULL, message text NOT NULL);
"""

_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS stage (LIKE records INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
_COPY_COLUMNS = ("site", "stream", "seq", "created", "kind", "priority", "count", "received", "ts", "vals", "quality", "other")
_COPY_TYPES = ["text", "text", "int8", "timestamptz", "text", "int2", "int4", "timestamptz", "float8[]", "float8[]",
               "int2[]", "jsonb"]
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z, where PostgreSQL's timestamps count from, in UNIX µs
_FLOAT8_OID, _INT2_OID = 701, 21
_F8_ITEM = np.dtype([("len", ">i4"), ("value", ">f8")])  # one element of a binary float8[]: length, value
_I2_ITEM = np.dtype([("len", ">i4"), ("value", ">i2")])
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)
_FIELDS = struct.pack(">h", len(_COPY_COLUMNS))
DEAD_PAYLOAD_BYTES = 65536  # what of an undecodable message is kept to look at


@dataclass(slots=True)
class RecordRow:
    """One decoded uplink record, ready to COPY: readings as the codec's numpy arrays."""

    site: str
    stream: str
    seq: int
    created: float  # UNIX seconds, UTC: the time the site's outbox made the record
    kind: str
    priority: int
    count: int
    ts: np.ndarray | None  # float64
    vals: np.ndarray | None  # float64
    quality: np.ndarray | None  # small integers
    other: str | None  # JSON text: aggregate stats, events, or non-numeric values


def pg_micros(unix_seconds: float) -> int:
    """Microseconds since UNIX epoch, rounded as ``datetime.fromtimestamp`` rounds (the key's ``created``
    must come out the same however a redelivered record is written)."""
    frac, whole = math.modf(unix_seconds)
    return int(whole) * 1_000_000 + round(frac * 1e6)


def _arrays(columns: list[np.ndarray | None], item: np.dtype, oid: int) -> list[bytes]:
    """Every array of one column in PostgreSQL's binary array format (with its field length), or NULL."""
    present = [c for c in columns if c is not None]
    flat = np.empty(sum(len(c) for c in present), dtype=item)
    flat["len"] = item["value"].itemsize
    if len(flat):
        flat["value"] = np.concatenate(present)
    data = flat.tobytes()
    width = item.itemsize
    out: list[bytes] = []
    pos = 0
    for column in columns:
        if column is None:
            out.append(_NULL)
            continue
        n = len(column)
        if n == 0:  # an empty array has no dimensions
            out.append(struct.pack(">iiii", 12, 0, 0, oid))
            continue
        body = data[pos : pos + n * width]
        pos += n * width
        out.append(struct.pack(">iiiiii", 20 + len(body), 1, 0, oid, n, 1) + body)
    return out


def _text(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">i", len(data)) + data


def copy_binary(rows: list[RecordRow], received: datetime) -> bytes:
    """``rows`` as one PostgreSQL binary COPY stream in the order of :data:`_COPY_COLUMNS` (header to trailer)."""
    received_us = struct.pack(">iq", 8, pg_micros(received.timestamp()) - _PG_EPOCH_US)
    ts = _arrays([r.ts for r in rows], _F8_ITEM, _FLOAT8_OID)
    vals = _arrays([r.vals for r in rows], _F8_ITEM, _FLOAT8_OID)
    quality = _arrays([r.quality for r in rows], _I2_ITEM, _INT2_OID)
    texts: dict[str, bytes] = {}  # a batch repeats its sites, streams and kinds
    parts = [_COPY_HEADER]
    for i, r in enumerate(rows):
        site = texts.get(r.site) or texts.setdefault(r.site, _text(r.site))
        stream = texts.get(r.stream) or texts.setdefault(r.stream, _text(r.stream))
        kind = texts.get(r.kind) or texts.setdefault(r.kind, _text(r.kind))
        other = _NULL if r.other is None else _jsonb(r.other)
        parts += (_FIELDS, site, stream, struct.pack(">iqiq", 8, r.seq, 8, pg_micros(r.created) - _PG_EPOCH_US), kind,
                  struct.pack(">ihii", 2, r.priority, 4, r.count), received_us, ts[i], vals[i], quality[i], other)
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def _jsonb(text: str) -> bytes:
    data = b"\x01" + text.encode()  # jsonb's binary form: a version byte, then the JSON text
    return struct.pack(">i", len(data)) + data


@dataclass(slots=True)
class DeadLetter:
    subject: str
    site: str | None
    reason: str
    payload: bytes


@dataclass
class SiteCounts:
    envelopes: int = 0
    records: int = 0
    readings: int = 0
    duplicates: int = 0
    dead: int = 0
    last_seen: float = 0.0
    reported: str | None = None


@dataclass
class BatchResult:
    stored: int = 0
    duplicates: int = 0
    dead: int = 0
    readings: int = 0
    sites: dict[str, SiteCounts] = field(default_factory=dict)


def _day(unix_seconds: float) -> datetime:
    return datetime.fromtimestamp(unix_seconds // 86400 * 86400, timezone.utc)


def ensure_partitions(cur: Any, days: Iterable[datetime], known: set[datetime]) -> set[datetime]:
    """Create the daily partitions of ``records`` that ``days`` need (idempotent); returns the days created.

    ``known`` caches days whose partition is committed: the caller adds the returned days only once
    its transaction commits (a rolled-back CREATE leaves no partition, and a cache that believed
    in it would send every later row of that day to "no partition found"). Workers starting together
    all create today's partition: ``CREATE TABLE IF NOT EXISTS`` is not safe against a concurrent
    create (one of them fails with "already exists"), so creators take a transaction lock first.
    """
    new = sorted(set(days) - known)
    if new:
        cur.execute("SELECT pg_advisory_xact_lock(4243)")
    for day in new:
        name = f"records_{day:%Y%m%d}"
        cur.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF records "
                    f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}')")
    return set(new)


def drop_partitions_before(conn: Any, cutoff: datetime) -> list[str]:
    """Retention: drop every daily partition that ends at or before ``cutoff``; returns their names."""
    rows = conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'records'").fetchall()
    dropped = []
    for (name,) in rows:
        try:
            day = datetime.strptime(name, "records_%Y%m%d").replace(tzinfo=timezone.utc)
        except ValueError:
            continue
        if day + timedelta(days=1) <= cutoff:
            conn.execute(f"DROP TABLE {name}")
            dropped.append(name)
    conn.commit()
    return sorted(dropped)


class PgStore:
    """A synchronous psycopg connection to the store; one per ingest worker (or CLI call)."""

    def __init__(self, dsn: str, *, connect_timeout: float = 5.0):
        import psycopg

        self.dsn = dsn
        self.conn = psycopg.connect(dsn, connect_timeout=int(connect_timeout))
        self._partitions: set[datetime] = set()

    @staticmethod
    def create_schema(dsn: str) -> None:
        import psycopg

        with psycopg.connect(dsn) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(4242)")  # workers starting together
            conn.execute(SCHEMA)

    def write(self, rows: list[RecordRow], dead: list[DeadLetter], counts: dict[str, SiteCounts]) -> BatchResult:
        """COPY ``rows`` (duplicates dropped), the dead letters and the per-site counters in one transaction."""
        result = BatchResult(dead=len(dead))
        received = datetime.now(timezone.utc)
        created: set[datetime] = set()
        with self.conn.transaction():
            cur = self.conn.cursor()
            stored_keys: set[tuple[str, str, int]] = set()
            if rows:
                created = ensure_partitions(cur, {_day(c) for c in {r.created // 86400 * 86400 for r in rows}},
                                            self._partitions)
                data = copy_binary(rows, received)
                cur.execute(_STAGE)
                with cur.copy(f"COPY stage ({', '.join(_COPY_COLUMNS)}) FROM STDIN WITH (FORMAT BINARY)") as copy:
                    copy.write(data)
                cur.execute("INSERT INTO records SELECT * FROM stage ON CONFLICT DO NOTHING "
                            "RETURNING site, stream, seq, count")
                for site, stream, seq, count in cur.fetchall():
                    stored_keys.add((site, stream, seq))
                    result.stored += 1
                    result.readings += count
                    counts[site].records += 1
                    counts[site].readings += count
                for r in rows:
                    if (r.site, r.stream, r.seq) not in stored_keys:
                        counts[r.site].duplicates += 1
                result.duplicates = len(rows) - result.stored
            if dead:
                with cur.copy("COPY dead_letters (subject, site, reason, payload) FROM STDIN") as copy:
                    for d in dead:
                        copy.write_row((d.subject, d.site, d.reason, d.payload[:DEAD_PAYLOAD_BYTES]))
            site_rows = [(site, datetime.fromtimestamp(c.last_seen or time.time(), timezone.utc), c.envelopes, c.records,
                          c.readings, c.duplicates, c.dead, c.reported) for site, c in sorted(counts.items())]
            if site_rows:
                cur.executemany(
                    "INSERT INTO sites (site, last_seen, envelopes, records, readings, duplicates, dead, reported, reported_at) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s, CASE WHEN %s::text IS NULL THEN NULL ELSE now() END) "
                    "ON CONFLICT (site) DO UPDATE SET last_seen = greatest(sites.last_seen, excluded.last_seen), "
                    "envelopes = sites.envelopes + excluded.envelopes, records = sites.records + excluded.records, "
                    "readings = sites.readings + excluded.readings, duplicates = sites.duplicates + excluded.duplicates, "
                    "dead = sites.dead + excluded.dead, reported = coalesce(excluded.reported, sites.reported), "
                    "reported_at = coalesce(excluded.reported_at, sites.reported_at)",
                    [(*row, row[-1]) for row in site_rows])
        self._partitions |= created  # committed now
        result.sites = counts
        return result

    def close(self) -> None:
        self.conn.close()


def json_text(value: Any) -> str:
    """JSON for a jsonb column; NaN/inf (which JSON has not) become null."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), separators=(",", ":"))
