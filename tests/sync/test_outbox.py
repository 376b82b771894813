"""The durable outbox: drain order, quota eviction, TTL expiry, restart and SIGKILL survival."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeplane import Batch
from edgeplane.sync.codec import decode_block, encode_batch
from edgeplane.sync.outbox import Outbox, OutboxItem


def item(stream: str, prio: int, n: int = 10, created: float = 0.0, ttl: float = 1e9, start: float = 0.0) -> OutboxItem:
    block, count = encode_batch(Batch.of(stream, np.arange(n) + start, np.arange(n) * 1.5))
    return OutboxItem(stream, prio, "raw", count, created, created + ttl, block)


def test_drains_high_before_normal_before_low(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    box.open()
    box.put_many([item("raw/x", 2), item("agg/x", 1), item("raw/y", 2), item("alerts/a", 0), item("agg/y", 1)])
    box.link_up()
    taken = []
    while records := box.take(max_bytes=10**6, max_records=1):
        taken.extend(records)
        box.acknowledge(records)
    assert [r.stream for r in taken] == ["alerts/a", "agg/x", "agg/y", "raw/x", "raw/y"]
    assert box.total("sent_readings") == 0  # the deletions are not written yet: not counted as sent
    box.flush()
    assert box.total("sent_readings") == 50
    box.close()


def test_live_data_goes_before_backlog_of_the_same_class_and_backlog_is_rate_limited(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    box.open()
    box.put_many([item(f"old/{i}", 2) for i in range(5)])
    box.link_up()  # the link came back with 5 old records queued
    box.put_many([item("live/a", 2), item("alert/a", 0)])
    first = box.take(max_bytes=10**6, backlog_readings=20)
    assert [r.stream for r in first][:2] == ["alert/a", "live/a"]
    backlog = [r for r in first if r.stream.startswith("old/")]
    assert sum(r.count for r in backlog) <= 20 + 10  # at most one record over the budget
    assert len(backlog) < 5
    box.close()


def test_quota_evicts_lowest_priority_oldest_first_and_counts(tmp_path: Path):
    one = len(item("s", 2).block)
    box = Outbox(tmp_path / "o.db", quota=one * 4)
    box.open()
    box.put_many([item("low/1", 2), item("low/2", 2), item("normal/1", 1), item("high/1", 0)])
    assert box.size == one * 4
    box.put_many([item("high/2", 0)])  # full: evicts low/1 (lowest class, oldest)
    box.put_many([item("normal/2", 1)])  # evicts low/2
    streams = [row[0] for row in box.db.execute("SELECT stream FROM outbox ORDER BY seq")]
    assert streams == ["normal/1", "high/1", "high/2", "normal/2"]
    assert box.counters["evicted_records:low"] == 2 and box.counters["evicted_readings:low"] == 20
    box.put_many([item("low/3", 2)])  # only higher classes left: the new low record is refused, counted
    assert box.counters["evicted_records:low"] == 3
    assert "low/3" not in [row[0] for row in box.db.execute("SELECT stream FROM outbox")]
    box.close()
    again = Outbox(tmp_path / "o.db", quota=one * 4)
    again.open()  # the counters survive a restart
    assert again.counters["evicted_readings:low"] == 30 and again.size == one * 4
    again.close()


def test_ttl_expiry_is_counted_and_in_flight_records_are_kept(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    box.open()
    box.put_many([item("a", 1, created=0, ttl=10), item("b", 1, created=0, ttl=100), item("c", 2, created=0, ttl=10)])
    box.link_up()
    in_flight = box.take(max_bytes=10**6, max_records=1)
    assert in_flight[0].stream == "a"
    assert box.expire(now=50) == 10  # c expired; a is in flight, so the broker may have it: kept
    assert box.counters["expired_readings:low"] == 10
    box.acknowledge(in_flight)
    box.flush()
    assert [r[0] for r in box.db.execute("SELECT stream FROM outbox")] == ["b"]
    box.close()


def test_failed_send_is_taken_again(tmp_path: Path):
    box = Outbox(tmp_path / "o.db")
    box.open()
    box.put_many([item("a", 1), item("b", 1)])
    box.link_up()
    records = box.take(max_bytes=10**6)
    assert box.take(max_bytes=10**6) == []  # both in flight
    box.rewind([r.seq for r in records])
    assert [r.stream for r in box.take(max_bytes=10**6)] == ["a", "b"]
    box.close()


_WRITER = r"""
import sys, numpy as np
from edgeplane import Batch
from edgeplane.sync.codec import encode_batch
from edgeplane.sync.outbox import Outbox, OutboxItem
box = Outbox(sys.argv[1], durability="power")
box.open()
i = 0
while True:
    items = []
    for _ in range(10):
        block, n = encode_batch(Batch.of("dev/p", np.arange(5) + i * 5, np.full(5, float(i))))
        items.append(OutboxItem("dev/p", 1, "raw", n, 0.0, 1e12, block))
        i += 1
    box.put_many(items)
    # only what put_many returned for counts as acknowledged to the producer
    sys.stdout.write(f"{i}\n"); sys.stdout.flush()
"""


def test_outbox_survives_sigkill_mid_write(tmp_path: Path):
    db = tmp_path / "o.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    acknowledged = 0
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 2000 or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert acknowledged >= 2000
    box = Outbox(db)
    box.open()
    rows = box.db.execute("SELECT body FROM outbox ORDER BY seq").fetchall()
    # every acknowledged record is there (maybe one more transaction committed before the kill)
    assert len(rows) >= acknowledged
    firsts = [decode_block(r[0])["values"][0] for r in rows]
    assert firsts == [float(i) for i in range(len(rows))]  # in order, no gap, no torn record
    assert box.integrity() == "ok"
    box.close()


def test_a_recreated_outbox_never_reuses_sequence_numbers(tmp_path: Path):
    # the cloud end deduplicates on (site, stream, seq): a lost outbox file must not restart at 1
    seqs = []
    for attempt in range(2):
        path = tmp_path / f"o{attempt}.db"
        box = Outbox(path)
        box.open()
        box.put_many([item("raw/x", 2)])
        box.link_up()
        (record,) = box.take(max_bytes=10**6, max_records=1)
        box.acknowledge([record])
        seqs.append(record.seq)
        box.close()
    assert seqs[0] != seqs[1] and min(seqs) >= 2**40
    box = Outbox(tmp_path / "o0.db")  # reopening keeps counting on from where it was
    box.open()
    box.put_many([item("raw/x", 2)])
    box.link_up()
    records = []
    while batch := box.take(max_bytes=10**6, max_records=1):
        records.extend(batch)
        box.acknowledge(batch)
    assert [r.seq for r in records] == [seqs[0] + 1]
    box.close()


async def test_a_published_reading_is_in_the_outbox_when_publish_returns(tmp_path: Path):
    import sqlite3

    from edgeplane import Bus, WallClock
    from edgeplane.metrics import Metrics
    from edgeplane.sync import SyncConfig, SyncService

    bus = Bus()
    config = SyncConfig.model_validate({"uplink": {"url": "mqtt://127.0.0.1:9"},  # nothing listens: offline
                                        "policy": [{"topics": "dev/#", "mode": "raw", "priority": "low"}]})
    service = SyncService(config, site_id="s", bus=bus, clock=WallClock(), metrics=Metrics(), store_dir=tmp_path)
    await service.start()
    try:
        for i in range(5):
            await bus.publish(Batch.of("dev/temp", [float(i)], [float(i)]))
            # what a kill -9 right now would leave on disk: a separate connection sees it
            db = sqlite3.connect(service.outbox.path)
            stored = db.execute("SELECT COALESCE(SUM(count), 0) FROM outbox").fetchone()[0]
            db.close()
            assert stored == i + 1
    finally:
        await service.stop()


def _fill_outbox(path: Path, records: int = 200) -> None:
    box = Outbox(path, durability="process")
    box.open()
    box.put_many([item("dev/temp", 2, n=50, start=i * 50) for i in range(records)])
    box.close()


@pytest.mark.parametrize("damage", ["overwritten", "truncated"])
async def test_a_damaged_outbox_is_moved_aside_and_the_host_keeps_going(tmp_path: Path, damage: str, edgeplane_host, caplog):
    store = tmp_path / "store"
    outbox = store / "sync" / "outbox.db"
    _fill_outbox(outbox)
    original = outbox.read_bytes()
    if damage == "overwritten":
        outbox.write_bytes(b"\x17" * len(original))
    else:
        outbox.write_bytes(original[: len(original) // 3])
    site = {"site": {"id": "t1"},
            "devices": {"dev": {"connector": "memory", "points": {"temp": {"type": "float64", "value": 1.0}}}},
            "sync": {"uplink": {"url": "mqtt://127.0.0.1:9"},  # nothing listens: offline
                     "policy": [{"topics": "dev/#", "mode": "raw", "priority": "low"}], "durability": "process"}}
    caplog.set_level("WARNING")

    async def run() -> None:
        async with edgeplane_host(site, store_dir=store) as host:
            assert host.ready
            # the host runs on a fresh outbox and stores what the device publishes
            await host.bus.publish(Batch.of("dev/temp", [1.0, 2.0], [3.0, 4.0]))
            assert host.sync.outbox.backlog()["low"]["readings"] >= 2
            assert "damaged" in host.sync.status()["outbox_recovered"]

    await asyncio.wait_for(run(), 60)  # before: Outbox.open failed and Host.stop never completed
    kept = [p for p in outbox.parent.iterdir() if p.name.startswith("outbox.db.damaged-")]
    assert kept and any(p.read_bytes()[:64] in (original[:64], b"\x17" * 64) for p in kept), "the damaged file is kept"
    assert any("damaged" in r.getMessage() and "outbox.db.damaged-" in r.getMessage() for r in caplog.records)


async def test_stop_of_a_sync_service_that_failed_to_start_does_not_raise(tmp_path: Path):
    from edgeplane import Bus, WallClock
    from edgeplane.metrics import Metrics
    from edgeplane.sync import SyncConfig, SyncService

    config = SyncConfig.model_validate({"uplink": {"url": "mqtt://127.0.0.1:9"},
                                        "policy": [{"topics": "dev/#", "mode": "raw", "priority": "low"}]})
    (tmp_path / "outbox.db").mkdir()  # cannot be opened, cannot be moved aside as a file either
    service = SyncService(config, site_id="s", bus=Bus(), clock=WallClock(), metrics=Metrics(), store_dir=tmp_path)
    with pytest.raises(Exception):
        await service.start()
    await asyncio.wait_for(service.stop(), 10)
    assert service.state == "stopped"


_ACKER = r"""
import sys, numpy as np
from edgeplane import Batch
from edgeplane.sync.codec import encode_batch
from edgeplane.sync.outbox import Outbox, OutboxItem
def item(i):
    block, n = encode_batch(Batch.of("dev/p", np.array([float(i)]), np.array([float(i)])))
    return OutboxItem("dev/p", 1, "raw", n, 0.0, 1e12, block)
box = Outbox(sys.argv[1], durability="power", ack_delay=3600)
box.open()
box.put_many([item(i) for i in range(10)])
box.link_up()
taken = box.take(max_bytes=10**6, max_records=6)
box.acknowledge(taken)
assert box.take(max_bytes=10**6, max_records=10) and all(r.seq not in {t.seq for t in taken} for r in box.take(10**6))
if sys.argv[2] == "then-put":
    box.put_many([item(10)])  # carries the deletions in its own transaction
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.read()  # killed here
"""


@pytest.mark.parametrize("after_ack", ["nothing", "then-put"])
def test_bulk_acknowledge_keeps_at_least_once_across_a_crash(tmp_path: Path, after_ack: str):
    """Deletions of acknowledged records are deferred and batched: a SIGKILL before they are
    written leaves those records to be sent again (never lost); once a put_many carried them,
    they are gone with everything else intact."""
    db = tmp_path / "o.db"
    proc = subprocess.Popen([sys.executable, "-c", _ACKER, str(db), after_ack], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    box = Outbox(db)
    box.open()
    values = [decode_block(r[0])["values"][0] for r in box.db.execute("SELECT body FROM outbox ORDER BY seq")]
    if after_ack == "nothing":
        assert values == [float(i) for i in range(10)]  # all still there: sent again, at least once
        assert box.counters["sent_records"] == 0
    else:
        assert values == [float(i) for i in range(6, 11)]  # the 6 acknowledged are gone, nothing else
        assert box.counters["sent_records"] == 6 and box.counters["enqueued_records"] == 11
    assert box.integrity() == "ok"
    box.close()


def test_acknowledged_deletions_are_written_in_bulk_and_in_time(tmp_path: Path):
    box = Outbox(tmp_path / "o.db", durability="process", ack_delay=3600, ack_batch=5)
    box.open()
    box.put_many([item(f"s/{i}", 1) for i in range(12)])
    box.link_up()

    def rows() -> int:
        return box.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    first = box.take(max_bytes=10**6, max_records=4)
    box.acknowledge(first)
    assert rows() == 12 and box.backlog()["normal"]["records"] == 8  # deferred, but not waiting any more
    assert box.size == 12 * len(first[0].block)  # bytes come off with the deletion
    box.acknowledge(box.take(max_bytes=10**6, max_records=1))  # 5 piled up: ack_batch writes them
    assert rows() == 7 and box.counters["sent_records"] == 5 and box.size == 7 * len(first[0].block)
    box.ack_delay = 0.0  # and so does the delay
    box.acknowledge(box.take(max_bytes=10**6, max_records=1))
    assert rows() == 6 and box.counters["sent_records"] == 6
    box.ack_delay, box.ack_batch = 3600, 100
    rest = box.take(max_bytes=10**6)
    assert len(rest) == 6
    box.acknowledge(rest)
    assert box.take(max_bytes=10**6) == [] and box.backlog()["normal"]["records"] == 0
    assert box.expire(now=0.0) == 0 and rows() == 6  # housekeeping's expire() writes them once due
    box.ack_delay = 0.0
    assert box.expire(now=0.0) == 0 and rows() == 0
    assert box.counters["sent_readings"] == 12 * 10 and box.size == 0
    box.close()


def test_a_drained_class_is_read_again_when_something_is_put_in_it(tmp_path: Path):
    # take() skips the queries of lanes it read to their end: a put_many must make them count again
    box = Outbox(tmp_path / "o.db", durability="process")
    box.open()
    box.link_up()
    for prio in (2, 0, 1, 2):
        assert box.take(max_bytes=10**6) == []
        box.put_many([item(f"p{prio}", prio)])
        (record,) = box.take(max_bytes=10**6)
        assert record.stream == f"p{prio}"
        box.acknowledge([record])
    box.close()


def test_a_rewind_never_brings_back_acknowledged_records_whose_deletion_waits(tmp_path: Path):
    box = Outbox(tmp_path / "o.db", durability="process", ack_delay=3600)
    box.open()
    box.put_many([item(f"s/{i}", 1) for i in range(10)])
    box.link_up()
    taken = box.take(max_bytes=10**6, max_records=6)
    box.acknowledge(taken[:4])  # deletion deferred
    box.rewind([r.seq for r in taken[4:]])  # the other two failed
    again = box.take(max_bytes=10**6)
    assert [r.stream for r in again] == [f"s/{i}" for i in range(4, 10)]
    box.rewind([r.seq for r in again])
    assert [r.stream for r in box.take(max_bytes=10**6)] == [f"s/{i}" for i in range(4, 10)]
    box.close()
