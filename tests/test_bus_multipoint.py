"""Multi-point batches on the bus: routing by pattern, row selection, the single-point layer, latest values."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeplane.bus import Batch, Bus, Overflow, PointTable, Quality, topic_matches

TABLE = PointTable(["inv1/ac_power", "inv1/temp", "inv2/ac_power", "met/ghi"], ["W", "degC", "W", "W/m2"])


def poll(ts: float = 10.0) -> Batch:
    """What one block read publishes: one row per point, in point-id order."""
    return Batch.rows(TABLE, np.arange(4), ts, np.array([100.0, 40.0, 200.0, 800.0]))


async def test_a_multipoint_subscriber_gets_the_published_batch_when_it_wants_every_point():
    bus = Bus()
    everything = bus.subscribe("#", multipoint=True)
    batch = poll()
    await bus.publish(batch)
    assert everything.get_nowait() is batch  # no copy at all
    assert (bus.published_batches, bus.published_points) == (1, 4)


async def test_a_multipoint_subscriber_gets_only_the_rows_it_matches():
    bus = Bus()
    power = bus.subscribe("*/ac_power", multipoint=True)
    nothing = bus.subscribe("plc/#", multipoint=True)
    await bus.publish(poll())
    got = power.get_nowait()
    assert [got.topic_at(i) for i in range(len(got))] == ["inv1/ac_power", "inv2/ac_power"]
    assert got.values.tolist() == [100.0, 200.0]
    assert got.table is TABLE and got.point_ids.tolist() == [0, 2]
    assert nothing.depth == 0


async def test_single_point_subscribers_get_one_batch_per_point_as_views():
    bus = Bus()
    legacy = bus.subscribe("inv1/#")
    other = bus.subscribe("inv1/temp")
    batch = poll()
    await bus.publish(batch)
    first, second = legacy.get_nowait(), legacy.get_nowait()
    assert legacy.get_nowait() is None
    assert (first.topic, first.unit, first.values.tolist()) == ("inv1/ac_power", "W", [100.0])
    assert (second.topic, second.unit, second.last()) == ("inv1/temp", "degC", (10.0, 40.0, Quality.GOOD))
    assert not first.multipoint and first.table is None
    # no per-point copy: the pieces are views of the published columns, shared between subscribers
    assert np.shares_memory(first.values, batch.values) and np.shares_memory(second.ts, batch.ts)
    assert other.get_nowait() is second


def test_newest_numbers_gives_each_points_newest_good_reading_or_none():
    # rows out of point order, a bad newest reading, a point with no good reading at all
    batch = Batch.rows(TABLE, [3, 0, 0, 3, 1], np.array([1.0, 2.0, 3.0, 4.0, 5.0]),
                       np.array([800.0, 100.0, 110.0, 900.0, 40.0]),
                       np.array([Quality.GOOD, Quality.GOOD, Quality.GOOD, Quality.BAD, Quality.UNCERTAIN], np.uint8))
    assert batch.newest_numbers() == [("inv1/ac_power", (3.0, 110.0)), ("inv1/temp", None), ("met/ghi", (1.0, 800.0))]
    text = Batch("plc/state", np.array([1.0]), np.array(["RUN"], object), np.zeros(1, np.uint8))
    assert text.newest_numbers() == [("plc/state", None)]


async def test_rows_out_of_point_order_are_grouped_and_keep_their_order():
    bus = Bus()
    legacy = bus.subscribe("#")
    ids = np.array([3, 0, 3, 1, 0])
    batch = Batch.rows(TABLE, ids, np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([10.0, 20.0, 30.0, 40.0, 50.0]),
                       np.array([0, 0, 2, 0, 1]))
    await bus.publish(batch)
    got = {}
    while (piece := legacy.get_nowait()) is not None:
        got[piece.topic] = (piece.ts.tolist(), piece.values.tolist(), piece.quality.tolist())
    assert got == {"inv1/ac_power": ([2.0, 5.0], [20.0, 50.0], [0, 1]), "inv1/temp": ([4.0], [40.0], [0]),
                   "met/ghi": ([1.0, 3.0], [10.0, 30.0], [0, 2])}
    # the newest reading of each point is the last of its rows
    assert bus.latest("met/ghi") == (3.0, 30.0, Quality.BAD)
    assert bus.latest("inv1/ac_power") == (5.0, 50.0, Quality.UNCERTAIN)
    assert bus.latest("inv2/ac_power") is None
    assert bus.latest_batch("met/ghi").values.tolist() == [10.0, 30.0]
    assert set(bus.latest_matching("inv1/#")) == {"inv1/ac_power", "inv1/temp"}


async def test_routes_follow_subscribe_and_close():
    bus = Bus()
    await bus.publish(poll(1.0))  # caches "nobody wants this table"
    late = bus.subscribe("met/ghi", multipoint=True)
    await bus.publish(poll(2.0))
    assert late.get_nowait().values.tolist() == [800.0]
    late.close()
    again = bus.subscribe("inv2/#")
    await bus.publish(poll(3.0))
    assert late.depth == 0 and again.get_nowait().topic == "inv2/ac_power"


async def test_overflow_counts_each_point_for_single_point_subscribers():
    bus = Bus()
    slow = bus.subscribe("#", maxsize=3, overflow=Overflow.DROP_OLDEST)
    await bus.publish(poll())
    assert (slow.depth, slow.dropped) == (3, 1)
    blocked = bus.subscribe("#", maxsize=1, overflow="block", multipoint=True)
    bus.publish_nowait(poll())
    assert bus.publish_nowait(poll()) == 1  # the full multipoint one refuses the batch, counted
    assert blocked.dropped == 1 and slow.dropped == 9


async def test_acknowledged_publish_waits_for_every_piece():
    bus = Bus()
    durable = bus.subscribe("inv1/#", acknowledged=True)
    task = asyncio.create_task(bus.publish(poll()))
    await asyncio.sleep(0.01)
    assert not task.done() and durable.depth == 2
    durable.get_nowait()
    durable.acknowledge(1)
    await asyncio.sleep(0.01)
    assert not task.done()
    durable.get_nowait()
    durable.acknowledge(1)
    await asyncio.wait_for(task, 1)


def test_bad_multipoint_batches_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="point ids must lie in 0..3"):
        Batch.rows(TABLE, [0, 4], 1.0, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="differ in length"):
        Batch.rows(TABLE, [0, 1], [1.0, 2.0, 3.0], np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="must be integers"):
        Batch.rows(TABLE, np.array([0.0]), 1.0, np.array([1.0]))
    with pytest.raises(ValueError, match="listed twice: a/b"):
        PointTable(["a/b", "a/c", "a/b"])
    with pytest.raises(ValueError, match="no single topic"):
        poll().topic
    one = Batch.rows(PointTable(["d/p"], ["V"]), [0, 0], [1.0, 2.0], np.array([3.0, 4.0]))
    assert (one.topic, one.unit, one.last()) == ("d/p", "V", (2.0, 4.0, Quality.GOOD))


level = st.sampled_from(["a", "b", "inv1", "inv2", "x"])
topics = st.lists(st.lists(level, min_size=1, max_size=3).map("/".join), min_size=1, max_size=8, unique=True)
patterns = st.sampled_from(["#", "a/#", "+/b", "inv*/+", "inv?", "x", "+/+/#", "*/a/x", "b/[ab]/#"])


@settings(max_examples=60, deadline=None)
@given(topics, st.data(), patterns)
def test_every_subscriber_gets_exactly_the_rows_whose_topic_matches(names, data, pattern):
    table = PointTable(names)
    ids = np.array(data.draw(st.lists(st.integers(0, len(names) - 1), max_size=20)), dtype=np.int64)
    values = np.arange(len(ids), dtype=np.float64)
    batch = Batch.rows(table, ids, values * 10, values)

    async def run() -> tuple[list, list]:
        bus = Bus()
        multi = bus.subscribe(pattern, multipoint=True, maxsize=100)
        single = bus.subscribe(pattern, maxsize=100)
        await bus.publish(batch)
        rows = []
        while (got := multi.get_nowait()) is not None:
            rows += [(got.topic_at(i), float(v)) for i, v in enumerate(got.values)]
        pieces = []
        while (got := single.get_nowait()) is not None:
            assert not got.multipoint
            pieces += [(got.topic, float(v)) for v in got.values]
        return rows, pieces

    rows, pieces = asyncio.run(run())
    expected = [(names[i], float(v)) for i, v in zip(ids, values) if topic_matches(pattern, names[i])]
    assert rows == expected
    assert sorted(pieces) == sorted(expected)


async def test_a_full_poll_splits_into_views_sharing_one_time_and_quality():
    bus = Bus()
    legacy = bus.subscribe("#")
    batch = Batch.rows(TABLE, TABLE.all_ids, 7.0, np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 0, 0, 0], dtype=np.uint8))
    await bus.publish(batch)
    pieces = [legacy.get_nowait() for _ in range(4)]
    assert [(p.topic, p.last()) for p in pieces] == [(t, (7.0, float(i + 1), Quality.GOOD)) for i, t in enumerate(TABLE.topics)]
    assert pieces[0].ts is pieces[3].ts and pieces[0].quality is pieces[3].quality
    assert all(np.shares_memory(p.values, batch.values) for p in pieces)
    assert bus.latest("met/ghi") == (7.0, 4.0, Quality.GOOD)
    # a poll whose rows differ in quality keeps one quality view per point
    mixed = Batch.rows(TABLE, TABLE.all_ids, 8.0, np.zeros(4), np.array([0, 2, 0, 0], dtype=np.uint8))
    assert [p.quality.tolist() for p in mixed.split()] == [[0], [2], [0], [0]]


async def test_latest_follows_publish_order_across_tables_and_single_point_batches():
    # whole-table batches are recorded per table and spread over their topics only when read:
    # the newest reading of a topic must still win, whichever way it came
    bus = Bus()
    a = PointTable(["d/t", "d/u"])
    b = PointTable(["d/t", "d/v"])

    def poll(table: PointTable, ts: float) -> Batch:
        return Batch.rows(table, table.all_ids, ts, np.array([ts, ts + 0.5]), Quality.GOOD)

    await bus.publish(poll(a, 1.0))
    assert bus.latest("d/t")[:2] == (1.0, 1.0) and bus.latest("d/u")[:2] == (1.0, 1.5)
    await bus.publish(poll(b, 2.0))
    await bus.publish(poll(a, 3.0))
    await bus.publish(poll(b, 4.0))
    assert bus.latest("d/t")[:2] == (4.0, 4.0) and bus.latest("d/u")[:2] == (3.0, 3.5)
    await bus.publish(poll(a, 5.0))
    await bus.publish(Batch.of("d/t", [6.0], [60.0]))  # a write's read-back, after the poll
    assert bus.latest("d/t")[:2] == (6.0, 60.0) and bus.latest("d/u")[:2] == (5.0, 5.5)
    await bus.publish(poll(b, 7.0))
    assert bus.latest_matching("d/*") == {"d/t": (7.0, 7.0, Quality.GOOD), "d/u": (5.0, 5.5, Quality.GOOD),
                                          "d/v": (7.0, 7.5, Quality.GOOD)}
    assert bus.latest_batch("d/v").ts.tolist() == [7.0]
