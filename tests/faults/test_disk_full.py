"""A full disk under the outbox: what is stored stays, drops are counted with the true reason,
acknowledged records are still deleted, and the outbox recovers by itself when space returns."""

from __future__ import annotations

import asyncio
import logging
import shutil

import numpy as np
import pytest

from edgeplane import Batch, Bus, WallClock
from edgeplane.metrics import Metrics
from edgeplane.sync import SyncConfig, SyncService
from edgeplane.sync.codec import encode_batch
from edgeplane.sync.outbox import Outbox, OutboxFull, OutboxItem


def item(start: int, n: int = 500, prio: int = 2) -> OutboxItem:
    rng = np.random.default_rng(start)  # noise: compresses poorly, fills pages quickly
    block, count = encode_batch(Batch.of("dev/temp", np.arange(start, start + n, dtype=float), rng.normal(size=n)))
    return OutboxItem("dev/temp", prio, "raw", count, 0.0, 1e12, block)


def test_disk_full_keeps_what_is_stored_frees_space_on_ack_and_recovers(small_disk):
    box = Outbox(small_disk.path / "outbox.db", durability="process", disk_reserve=0)
    box.open()
    box.put_many([item(i * 500) for i in range(20)])
    stored = box.backlog()["low"]["readings"]
    ballast = small_disk.fill(leave=20_000)
    with pytest.raises(OutboxFull, match="disk"):
        for i in range(20, 400):  # before: "cannot rollback - no transaction is active"
            box.put_many([item(i * 500)])
    full_at = box.backlog()["low"]["readings"]
    assert full_at >= stored and box.integrity() == "ok"
    sent_before = box.counters["sent_readings"]
    box.link_up()
    taken = box.take(max_bytes=10**9)
    box.acknowledge(taken)  # before: the delete failed with the disk full and raised
    assert box.backlog()["low"]["readings"] == 0
    assert box.take(max_bytes=10**9) == []  # acknowledged records are never taken again
    # counters move only with what is committed: they never run ahead of the disk
    assert box.counters["sent_readings"] in (sent_before, sent_before + sum(r.count for r in taken))
    ballast.unlink()
    # space came back: the deletion is written and new records are stored again, no restart
    box.put_many([item(2 * 10**6)])
    assert box.backlog()["low"]["readings"] == 500
    assert box.counters["sent_readings"] == sent_before + sum(r.count for r in taken)
    box.close()
    reopened = Outbox(small_disk.path / "outbox.db")
    reopened.open()
    assert reopened.backlog()["low"]["readings"] == 500
    assert reopened.counters["sent_readings"] == sent_before + sum(r.count for r in taken)
    assert reopened.integrity() == "ok"
    reopened.close()


def test_the_quota_respects_free_disk_space(small_disk):
    # the reserve covers the WAL (up to ~4 MB between checkpoints) and room to write deletions
    box = Outbox(small_disk.path / "outbox.db", durability="process", quota=10**9, disk_reserve=6_000_000)
    box.open()
    for i in range(700):  # 24 MB of records on a 16 MB disk: the oldest low-priority ones make room
        box.put_many([item(i * 2000, n=2000)])
    assert box.total("evicted_readings") > 0
    assert shutil.disk_usage(small_disk.path).free > 0
    box.put_many([item(10**7, prio=0)])
    assert box.backlog()["high"]["readings"] == 500 and box.integrity() == "ok"
    assert box.backlog()["low"]["readings"] > 0
    box.close()


async def test_the_sync_service_counts_disk_full_drops_logs_once_and_recovers(small_disk, caplog):
    bus = Bus()
    metrics = Metrics()
    config = SyncConfig.model_validate({"uplink": {"url": "mqtt://127.0.0.1:9"}, "durability": "process",
                                        "policy": [{"topics": "dev/#", "mode": "raw", "priority": "low"}]})
    service = SyncService(config, site_id="s", bus=bus, clock=WallClock(), metrics=metrics, store_dir=small_disk.path)
    service.outbox.disk_reserve = 0
    caplog.set_level(logging.INFO, logger="edgeplane.sync")
    await service.start()
    try:
        ballast = small_disk.fill(leave=0)
        rng = np.random.default_rng(1)
        for i in range(60):
            await bus.publish(Batch.of("dev/temp", np.arange(i * 500, i * 500 + 500, dtype=float), rng.normal(size=500)))
        dropped = metrics.value("edgeplane_dropped_total", part="sync", reason="disk_full")
        assert dropped > 0
        full_lines = [r for r in caplog.records if "full" in r.getMessage() and r.levelno >= logging.ERROR]
        assert len(full_lines) == 1, [r.getMessage() for r in full_lines]  # once per state change, not per round
        assert "cannot rollback" not in caplog.text
        ballast.unlink()
        before = service.outbox.backlog()["low"]["readings"]
        await bus.publish(Batch.of("dev/temp", [1e9, 1e9 + 1], [1.0, 2.0]))
        assert service.outbox.backlog()["low"]["readings"] == before + 2
        assert any("space" in r.getMessage() and "again" in r.getMessage() for r in caplog.records)
    finally:
        await asyncio.wait_for(service.stop(), 30)
