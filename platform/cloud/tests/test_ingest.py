"""Ingest workers on the real engines: hostile input goes to dead letters, partitions and retention."""

from __future__ import annotations

import asyncio
import json
import struct
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg
import pytest
import zstandard
from click.testing import CliRunner

from edgeplane import Batch
from edgeplane.sync.codec import RAW_JSON, Record, encode_batch, encode_envelope

from edgeplane_cloud.broker import UPLINK_SUBJECT_PREFIX
from edgeplane_cloud.cli import fleet
from edgeplane_cloud.fleet import Fleet
from edgeplane_cloud.ingest import IngestWorker
from edgeplane_cloud.pgstore import PgStore, drop_partitions_before
from edgeplane_cloud.testing import NatsCluster

from .conftest import query, wait_until


def good_envelope(site: str, seq: int, created: float | None = None) -> bytes:
    ts = np.arange(10, dtype=float) + 1.7e9
    block, n = encode_batch(Batch("dev/x", ts, ts * 2))
    created = created if created is not None else datetime.now(timezone.utc).timestamp()
    return encode_envelope(site, created, [Record("dev/x", seq, "raw", 1, n, created, block)], "zstd")


def envelope_with_block(site: str, block: bytes, count: int) -> bytes:
    now = datetime.now(timezone.utc).timestamp()
    return encode_envelope(site, now, [Record("dev/y", 1, "raw", 1, count, now, block)], "none")


async def test_undecodable_and_wrong_type_input_goes_to_dead_letters_and_ingest_goes_on(
        nats_cluster: NatsCluster, clean_store: str):
    import nats

    dsn = clean_store
    dict_value = struct.pack("<BI", RAW_JSON, 1) + json.dumps({"ts": [1.7e9], "values": [{"a": 1}], "quality": [0]}).encode()
    bomb_body = b"\0" * 80_000_000  # decompresses past the codec's cap
    bomb = b"EPS" + bytes((1, 1)) + zstandard.ZstdCompressor(level=19).compress(bomb_body)
    truncated = good_envelope("bad-1", 1)[:-7]
    hostile = [
        ("edgeplane.bad-1.up.data", b"not an envelope at all"),
        ("edgeplane.bad-1.up.data", truncated),
        ("edgeplane.bad-1.up.data", bomb),
        ("edgeplane.bad-1.up.data", good_envelope("someone-else", 2)),
        ("edgeplane.bad-1.up.data", envelope_with_block("bad-1", dict_value, 1)),
        ("edgeplane.bad-1.up.state", b"[1, 2, 3]"),
        ("edgeplane.bad-1.up.state", b"\xff\xfe garbage"),
        ("edgeplane.bad-1.up.bogus", b"{}"),
    ]
    worker = IngestWorker(nats_cluster.nats_urls, dsn, batch=4)
    task = asyncio.create_task(worker.run())
    nc = await nats.connect(servers=nats_cluster.nats_urls)
    try:
        js = nc.jetstream()
        await wait_until(lambda: query(dsn, "SELECT to_regclass('dead_letters')")[0][0] is not None, what="schema")
        await asyncio.to_thread(nats_cluster.wait_consumer)
        # into the stream the workers read, as NATS's MQTT layer stores a site's QoS 1 message
        for subject, payload in hostile:
            await js.publish(UPLINK_SUBJECT_PREFIX + subject, payload)
        # wrong types inside a reported state that is valid JSON: stored, and read as unknown
        await js.publish(UPLINK_SUBJECT_PREFIX + "edgeplane.bad-1.up.state", json.dumps(
            {"config": "yes", "models": [1], "outbox": {"high": {"readings": "many"}}, "refused": {"x": {}}}).encode())
        await js.publish(UPLINK_SUBJECT_PREFIX + "edgeplane.bad-1.up.data", good_envelope("bad-1", 9))
        await wait_until(lambda: query(dsn, "SELECT count(*) FROM records WHERE site = 'bad-1'")[0][0] == 1,
                         what="the good envelope after the bad ones")
        await wait_until(lambda: query(dsn, "SELECT count(*) FROM dead_letters")[0][0] == len(hostile),
                         what="every hostile message in dead_letters")
    finally:
        await nc.close()
        worker.stop()
        await asyncio.wait_for(task, 20)

    reasons = [r for (r,) in query(dsn, "SELECT reason FROM dead_letters ORDER BY id")]
    assert any("bad magic" in r for r in reasons)
    assert any("someone-else" in r for r in reasons)
    assert any("dict value" in r for r in reasons)
    assert any("not an object" in r for r in reasons)
    assert any("bogus" in r for r in reasons)
    assert any("larger than" in r or "limit" in r or "cap" in r or "exceeds" in r for r in reasons), reasons
    assert query(dsn, "SELECT dead FROM sites WHERE site = 'bad-1'")[0][0] == len(hostile)
    assert worker.stats.dead == len(hostile)
    assert worker.metrics.value("edgeplane_dropped_total", part="ingest", reason="dead_letter") == len(hostile)
    assert worker.metrics.value("edgeplane_cloud_ingest_records_total", outcome="stored") == 1

    # status and the fleet view survive the wrong-type twin
    fl = Fleet(dsn)
    try:
        (row,) = [s for s in fl.sites() if s["site"] == "bad-1"]
    finally:
        fl.close()
    assert row["backlog"] == {} and row["dead_letters"] == len(hostile) and row["twin_differences"] == []
    result = CliRunner().invoke(fleet, ["sites", "--dsn", dsn, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["site"] == "bad-1"


def test_daily_partitions_unique_key_and_retention_by_dropping_partitions(clean_store: str):
    from edgeplane_cloud.ingest import decode_uplink
    from edgeplane_cloud.pgstore import SiteCounts

    dsn = clean_store
    now = datetime.now(timezone.utc)
    old = (now - timedelta(days=10)).timestamp()
    store = PgStore(dsn)
    try:
        for seq, created in ((1, old), (2, now.timestamp()), (2, now.timestamp())):
            counts: dict[str, SiteCounts] = {}
            rows, dead = decode_uplink("edgeplane.part-1.up.data", good_envelope("part-1", seq, created), counts)
            assert dead is None
            store.write(rows, [], counts)
    finally:
        store.close()
    assert query(dsn, "SELECT count(*) FROM records")[0][0] == 2  # the redelivered seq 2 is dropped
    assert query(dsn, "SELECT duplicates FROM sites WHERE site = 'part-1'")[0][0] == 1
    parts = {r[0] for r in query(dsn, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                      "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'records'")}
    old_part = f"records_{datetime.fromtimestamp(old, timezone.utc):%Y%m%d}"
    assert old_part in parts and f"records_{now:%Y%m%d}" in parts
    with psycopg.connect(dsn) as conn:
        dropped = drop_partitions_before(conn, now - timedelta(days=7))
    assert old_part in dropped and f"records_{now:%Y%m%d}" not in dropped
    assert query(dsn, "SELECT count(*) FROM records")[0][0] == 1


def test_partition_created_by_two_workers_at_once_and_after_a_rolled_back_create(clean_store: str):
    """Workers starting together all create the day's partition; one of them used to fail with
    "relation records_<day> already exists" (seen in the fault test's worker logs). And a CREATE rolled
    back with its batch must not be remembered as made, or every later row of that day has no partition."""
    import threading

    from edgeplane_cloud.ingest import decode_uplink
    from edgeplane_cloud.pgstore import DeadLetter, SiteCounts, ensure_partitions

    dsn = clean_store
    day = (datetime.now(timezone.utc) - timedelta(days=20)).replace(hour=12, minute=0, second=0, microsecond=0)
    part = f"records_{day:%Y%m%d}"

    def rows(site: str, seq: int) -> tuple[list, dict[str, SiteCounts]]:
        counts: dict[str, SiteCounts] = {}
        got, dead = decode_uplink(f"edgeplane.{site}.up.data", good_envelope(site, seq, day.timestamp()), counts)
        assert dead is None
        return got, counts

    with psycopg.connect(dsn) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {part}")
        conn.commit()
    try:
        # a batch whose transaction fails after creating the partition (a subject PostgreSQL refuses)
        store = PgStore(dsn)
        try:
            got, counts = rows("part-a", 1)
            with pytest.raises(psycopg.Error):
                store.write(got, [DeadLetter("edgeplane.part-a.up.\x00", "part-a", "test", b"")], counts)
            got, counts = rows("part-a", 1)
            assert store.write(got, [], counts).stored == 1
        finally:
            store.close()
        assert query(dsn, f"SELECT count(*) FROM {part} WHERE site = 'part-a'")[0][0] == 1
        with psycopg.connect(dsn) as conn:
            conn.execute(f"DROP TABLE {part}")
            conn.commit()

        # two workers creating the same partition: the second waits for the first instead of failing
        first = psycopg.connect(dsn)
        second = PgStore(dsn)
        outcome: list[object] = []
        try:
            with first.transaction():
                ensure_partitions(first.cursor(), [day.replace(hour=0)], set())
                got, counts = rows("part-b", 1)
                writer = threading.Thread(target=lambda: outcome.append(_try(second.write, got, [], counts)))
                writer.start()
                writer.join(1.0)
                assert writer.is_alive(), "the second creator must wait for the first's commit"
            writer.join(30)
        finally:
            first.close()
            second.close()
        assert len(outcome) == 1 and not isinstance(outcome[0], Exception), outcome
        assert query(dsn, f"SELECT count(*) FROM {part} WHERE site = 'part-b'")[0][0] == 1
    finally:
        with psycopg.connect(dsn) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {part}")


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - the test asserts on it
        return e


def test_the_binary_copy_stores_every_kind_of_record_as_written(clean_store: str):
    """The COPY stream the store builds itself (numpy arrays to PostgreSQL's binary layout) reads back
    exactly: readings, NaN, quality, empty and JSON blocks, aggregates, events, and the key's created
    time to the microsecond as ``datetime.fromtimestamp`` rounds it."""
    from edgeplane.sync.codec import encode_aggregate, encode_events
    from edgeplane.bus import Event

    from edgeplane_cloud.ingest import decode_uplink
    from edgeplane_cloud.pgstore import SiteCounts

    dsn = clean_store
    created = datetime.now(timezone.utc).timestamp() - 3600.1234567
    ts = 1.7e9 + np.arange(5) * 0.5
    values = np.array([1.5, -2.0, np.nan, 1e300, 0.0])
    raw, n = encode_batch(Batch("dev/x", ts, values, np.array([0, 1, 2, 3, 255], dtype=np.uint8)))
    empty, _ = encode_batch(Batch("dev/e", np.zeros(0), np.zeros(0)))
    text, _ = encode_batch(Batch("dev/t", ts[:2], np.array(["on", "off"], dtype=object)))
    agg, na = encode_aggregate(60.0, ts[:2], {"mean": np.array([1.0, 2.0]), "max": np.array([3.0, 4.0])})
    events, ne = encode_events([Event(topic="alerts/x", kind="alert", ts=1.7e9, source="pdm", severity="high",
                                      data={"score": 0.9})])
    records = [Record("dev/x", 1, "raw", 2, n, created, raw), Record("dev/e", 2, "raw", 1, 0, created, empty),
               Record("dev/t", 3, "raw", 1, 2, created, text), Record("agg", 4, "aggregate", 1, na, created, agg),
               Record("ev", 5, "events", 0, ne, created, events)]
    counts: dict[str, SiteCounts] = {}
    rows, dead = decode_uplink("edgeplane.copy-1.up.data", encode_envelope("copy-1", created, records, "zstd"), counts)
    assert dead is None and len(rows) == 5
    store = PgStore(dsn)
    try:
        result = store.write(rows, [], counts)
    finally:
        store.close()
    assert result.stored == 5 and result.readings == n + 0 + 2 + na + ne
    got = {r[0]: r[1:] for r in query(dsn, "SELECT stream, seq, created, kind, priority, count, ts, vals, quality, other "
                                          "FROM records WHERE site = 'copy-1'")}
    seq, at, kind, priority, count, g_ts, g_vals, g_quality, other = got["dev/x"]
    assert (seq, kind, priority, count) == (1, "raw", 2, 5)
    assert at == datetime.fromtimestamp(created, timezone.utc)
    assert g_ts == ts.tolist() and g_quality == [0, 1, 2, 3, 255] and other is None
    assert g_vals[:2] == [1.5, -2.0] and np.isnan(g_vals[2]) and g_vals[3:] == [1e300, 0.0]
    assert got["dev/e"][5:8] == ([], [], [])
    assert got["dev/t"][6:] == (None, [0, 0], {"values": ["on", "off"]})
    assert got["agg"][5] == ts[:2].tolist() and got["agg"][8] == {"window": 60.0, "stats": {"mean": [1.0, 2.0],
                                                                                             "max": [3.0, 4.0]}}
    assert got["ev"][5:8] == (None, None, None) and got["ev"][8]["events"][0]["data"] == {"score": 0.9}


def test_an_envelope_decoded_at_once_gives_each_record_its_own_row_and_names_a_bad_one():
    """The worker decodes an envelope's numeric raw blocks together (decode_raw_blocks): every
    row equals the record decoded alone; a record with a timestamp that is not finite or a count
    its block does not hold still makes the message a dead letter that names that record."""
    from edgeplane.sync.codec import decode_block, encode_aggregate

    from edgeplane_cloud.ingest import decode_uplink

    created = datetime.now(timezone.utc).timestamp() - 60
    rng = np.random.default_rng(5)
    records = []
    for seq, n in enumerate([1, 1, 10, 3, 1]):
        block, count = encode_batch(Batch.of(f"d/p{seq}", 1.7e9 + np.arange(n), rng.normal(size=n)))
        records.append(Record(f"d/p{seq}", seq, "raw", 2, count, created, block))
    agg, count = encode_aggregate(60.0, np.array([1.7e9]), {"mean": np.array([2.0])})
    records.append(Record("d/agg", 99, "aggregate", 1, count, created, agg))
    rows, dead = decode_uplink("edgeplane.vec-1.up.data", encode_envelope("vec-1", created, records, "zstd"), {})
    assert dead is None and [r.seq for r in rows] == [0, 1, 2, 3, 4, 99]
    for row, record in zip(rows[:5], records[:5], strict=True):
        alone = decode_block(record.block)
        assert row.count == len(row.ts) == record.count and row.kind == "raw"
        assert row.ts.tobytes() == alone["ts"].tobytes() and row.vals.tobytes() == alone["values"].tobytes()
        assert row.quality.tobytes() == alone["quality"].tobytes()
    assert rows[5].kind == "aggregate" and rows[5].ts.tolist() == [1.7e9]

    nan_ts, _ = encode_batch(Batch.of("d/bad", np.array([1.7e9, np.nan]), np.array([1.0, 2.0])))
    lying = Record("d/liar", 8, "raw", 2, 5, created, records[2].block)  # says 5, holds 10
    for bad, named in ((Record("d/bad", 7, "raw", 2, 2, created, nan_ts), "stream 'd/bad' seq 7 timestamps"),
                       (lying, "stream 'd/liar' seq 8: the index says 5 readings, the block holds 10")):
        rows, dead = decode_uplink("edgeplane.vec-1.up.data",
                                   encode_envelope("vec-1", created, [*records[:3], bad], "zstd"), {})
        assert rows == [] and dead is not None and named in dead.reason, dead
