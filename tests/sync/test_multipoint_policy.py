"""The sync policy, its aggregates and the outbox take multi-point batches as they come.

The same readings are fed once as multi-point batches (one per poll, as a connector publishes
them) and once as single-point batches; what lands in a real SQLite outbox must be the same.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from edgeplane import Bus, WallClock
from edgeplane.bus import Batch, Event, PointTable
from edgeplane.metrics import Metrics
from edgeplane.sync import SyncConfig, SyncService
from edgeplane.sync.codec import decode_block
from edgeplane.sync.outbox import Outbox
from edgeplane.sync.policy import PolicyMapper

POLICY = [
    {"topics": "inv*/ac_power", "mode": "raw"},
    {"topics": "met/#", "mode": "aggregate", "window": 60, "stats": ["mean", "min", "max", "count", "last"]},
    {"topics": "inv1/temp", "mode": "exception", "deadband": 0.5},
    {"topics": "alerts/#", "mode": "events", "priority": "high"},
]
TOPICS = ["inv1/ac_power", "inv1/temp", "inv2/ac_power", "met/ghi", "plc/unmapped"]


def _config() -> SyncConfig:
    return SyncConfig.model_validate({"uplink": {"url": "mqtt://127.0.0.1:9"}, "policy": POLICY})


def _polls(n: int) -> list[tuple[float, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [(1_700_000_000.0 + 7.0 * i, rng.normal(20.0, 1.0, len(TOPICS)).round(2)) for i in range(n)]


def _stored(box: Outbox) -> dict[tuple[str, str], list]:
    """What the outbox holds, decoded per (stream, kind)."""
    box.link_up()
    out: dict[tuple[str, str], list] = {}
    while records := box.take(max_bytes=10**7):
        for record in records:
            block = decode_block(record.block)
            key = (record.stream, record.kind)
            if block["kind"] == "raw":
                out.setdefault(key, []).extend(zip(np.asarray(block["ts"]).tolist(), np.asarray(block["values"]).tolist()))
            elif block["kind"] == "aggregate":
                out.setdefault(key, []).append({k: np.asarray(v).tolist() for k, v in block["stats"].items()})
            else:
                out.setdefault(key, []).append(len(block["events"]))
        box.acknowledge(records)
    return out


def test_multipoint_and_single_point_batches_store_the_same(tmp_path: Path):
    table = PointTable(TOPICS, ["W", "degC", "W", "W/m2", None])
    multi, single = PolicyMapper(_config()), PolicyMapper(_config())
    boxes = {name: Outbox(tmp_path / f"{name}.db") for name in ("multi", "single")}
    for box in boxes.values():
        box.open()
    alert = Event("alerts/x", "alarm", 1.0, "test")
    polls = _polls(30)
    for i in range(0, len(polls), 5):  # an ingest round holds several polls
        round_ = polls[i:i + 5]
        now = round_[-1][0]
        as_rows = [Batch.rows(table, np.arange(len(TOPICS)), ts, values) for ts, values in round_]
        as_points = [Batch.of(t, ts, values[j], unit=table.units[j]) for ts, values in round_ for j, t in enumerate(TOPICS)]
        boxes["multi"].put_many(multi.map([*as_rows, alert], now))
        boxes["single"].put_many(single.map([*as_points, alert], now))
    for mapper, box in ((multi, boxes["multi"]), (single, boxes["single"])):
        box.put_many(mapper.flush(polls[-1][0], force=True))
    stored = {name: _stored(box) for name, box in boxes.items()}
    assert stored["multi"] == stored["single"]
    got = stored["multi"]
    assert [v for _, v in got[("inv2/ac_power", "raw")]] == [values[2] for _, values in polls]
    ghi = [values[3] for _, values in polls]
    windows = got[("met/ghi", "aggregate")]
    assert sum(sum(w["count"]) for w in windows) == len(ghi) and windows[-1]["last"][-1] == ghi[-1]
    assert 0 < len(got[("inv1/temp", "raw")]) < len(polls)  # the deadband held some back
    assert not any(stream == "plc/unmapped" for stream, _ in got)
    assert (multi.read_readings, multi.suppressed) == (single.read_readings, single.suppressed)
    for box in boxes.values():
        box.close()


async def test_a_multipoint_batch_published_on_the_bus_is_in_the_outbox_when_publish_returns(tmp_path: Path):
    bus = Bus()
    service = SyncService(_config(), site_id="s", bus=bus, clock=WallClock(), metrics=Metrics(), store_dir=tmp_path)
    await service.start()
    table = PointTable(TOPICS)
    try:
        for n, (ts, values) in enumerate(_polls(3), start=1):
            await bus.publish(Batch.rows(table, np.arange(len(TOPICS)), ts, values))
            db = sqlite3.connect(service.outbox.path)  # what a kill -9 right now would leave on disk
            stored = db.execute("SELECT COALESCE(SUM(count), 0) FROM outbox WHERE stream LIKE 'inv%'").fetchone()[0]
            db.close()
            assert stored == 3 * n  # two raw points and one exception point (the first reading always goes)
            # the unmapped point never reaches the sync layer; the aggregate took its reading
            assert service.mapper.read_readings == 4 * n
            assert service.mapper.aggregators["met/ghi"].current is None  # wall time is long past 2023's windows
    finally:
        await service.stop()
