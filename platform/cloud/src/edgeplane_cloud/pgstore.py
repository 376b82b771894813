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

What cannot be decoded or stored goes to ``dead_letters`` with the reason.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from psycopg.types.json import Jsonb

__all__ = ["SCHEMA", "DeadLetter", "PgStore", "RecordRow", "SiteCounts", "ensure_partitions", "drop_partitions_before"]

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
DEAD_PAYLOAD_BYTES = 65536  # what of an undecodable message is kept to look at


@dataclass(slots=True)
class RecordRow:
    """One decoded uplink record, ready to COPY."""

    site: str
    stream: str
    seq: int
    created: datetime
    kind: str
    priority: int
    count: int
    ts: list[float] | None
    vals: list[float] | None
    quality: list[int] | None
    other: str | None  # JSON text: aggregate stats, events, or non-numeric values


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


def _day(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


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
                created = ensure_partitions(cur, (_day(r.created) for r in rows), self._partitions)
                cur.execute(_STAGE)
                with cur.copy(f"COPY stage ({', '.join(_COPY_COLUMNS)}) FROM STDIN WITH (FORMAT BINARY)") as copy:
                    copy.set_types(_COPY_TYPES)
                    for r in rows:
                        other = None if r.other is None else Jsonb(r.other, dumps=_as_is)
                        copy.write_row((r.site, r.stream, r.seq, r.created, r.kind, r.priority, r.count, received,
                                        r.ts, r.vals, r.quality, other))
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


def _as_is(text: str) -> str:
    return text


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
