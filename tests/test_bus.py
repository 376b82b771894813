"""The bus: topic patterns, bounded queues with explicit overflow policies, the latest-value cache."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeplane.bus import Batch, Bus, Event, Overflow, Quality, topic_matches


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("inv1/ac_power", "inv1/ac_power", True),
        ("inv1/ac_power", "inv1/ac_powerx", False),
        ("inv*/ac_power", "inv12/ac_power", True),
        ("inv*/ac_power", "met/ac_power", False),
        ("*/ac_power", "inv1/ac_power", True),
        ("*/ac_power", "a/b/ac_power", False),  # '*' is one level, never a '/'
        ("+/temp", "m1/temp", True),
        ("alerts/#", "alerts/x/y", True),
        ("alerts/#", "alerts", True),
        ("alerts/#", "alarms/x", False),
        ("#", "anything/at/all", True),
        ("inv?/p", "inv1/p", True),
        ("inv?/p", "inv10/p", False),
        ("inv[12]/p", "inv2/p", True),
        ("inv[12]/p", "inv3/p", False),
        ("inv[!1]/p", "inv2/p", True),
        ("inv[!1]/p", "inv1/p", False),
        ("a.b/c", "axb/c", False),  # '.' is literal
    ],
)
def test_topic_patterns(pattern, topic, expected):
    assert topic_matches(pattern, topic) is expected


def test_bad_patterns_are_refused():
    with pytest.raises(ValueError, match="last level"):
        topic_matches("a/#/b", "a/x/b")
    with pytest.raises(ValueError, match="empty"):
        topic_matches("", "a")


level = st.text(alphabet="abcxyz019_-", min_size=1, max_size=6)


@given(st.lists(level, min_size=1, max_size=4))
def test_literal_and_wildcards_agree(levels):
    topic = "/".join(levels)
    assert topic_matches(topic, topic)
    assert topic_matches("#", topic)
    assert topic_matches("/".join("+" for _ in levels), topic)
    assert not topic_matches("/".join("+" for _ in levels) + "/+", topic)
    assert topic_matches(levels[0] + "/#", topic)


def test_batch_of_checks_lengths_and_converts():
    batch = Batch.of("d/p", [1.0, 2.0], [3, 4])
    assert batch.values.dtype == np.float64
    assert batch.quality.tolist() == [0, 0]
    assert (batch.device, batch.point, len(batch)) == ("d", "p", 2)
    with pytest.raises(ValueError, match="differ in length"):
        Batch.of("d/p", [1.0, 2.0], [1.0])
    assert Batch.of("d/p", 5.0, 1.5, Quality.BAD).last() == (5.0, 1.5, Quality.BAD)


async def test_fan_out_to_matching_subscribers_only():
    bus = Bus()
    power = bus.subscribe("*/ac_power", name="power")
    everything = bus.subscribe("#", name="all")
    temps = bus.subscribe("*/temp", name="temp")
    await bus.publish(Batch.of("inv1/ac_power", [1.0, 2.0], [10.0, 20.0]))
    await bus.publish(Event("alerts/x", "alarm", 1.0, "x"))
    assert (power.depth, everything.depth, temps.depth) == (1, 2, 0)
    got = await power.get()
    assert got.values.tolist() == [10.0, 20.0]
    assert bus.published_points == 2 and bus.published_events == 1


async def test_drop_oldest_counts_every_drop():
    bus = Bus()
    sub = bus.subscribe("d/p", maxsize=3, overflow=Overflow.DROP_OLDEST, name="slow")
    for i in range(10):
        await bus.publish(Batch.of("d/p", float(i), float(i)))
    assert sub.dropped == 7
    kept = [sub.get_nowait().values[0] for _ in range(3)]
    assert kept == [7.0, 8.0, 9.0]  # the newest survive
    assert bus.dropped == 7


async def test_block_policy_applies_back_pressure_without_loss():
    bus = Bus()
    sub = bus.subscribe("d/p", maxsize=2, overflow="block")

    async def produce():
        for i in range(20):
            await bus.publish(Batch.of("d/p", float(i), float(i)))

    producer = asyncio.create_task(produce())
    await asyncio.sleep(0.01)
    assert not producer.done() and sub.depth == 2  # the publisher waits for the subscriber
    received = []
    while len(received) < 20:
        received.append((await sub.get()).values[0])
    await producer
    assert received == [float(i) for i in range(20)]
    assert sub.dropped == 0


async def test_publish_nowait_counts_a_refusal_on_a_full_blocking_queue():
    bus = Bus()
    sub = bus.subscribe("d/p", maxsize=1)
    assert bus.publish_nowait(Batch.of("d/p", 1.0, 1.0)) == 0
    assert bus.publish_nowait(Batch.of("d/p", 2.0, 2.0)) == 1
    assert sub.dropped == 1 and sub.depth == 1


async def test_latest_value_cache():
    bus = Bus()
    assert bus.latest("d/p") is None
    await bus.publish(Batch.of("d/p", [1.0, 2.0], [5.0, 6.0], [0, 1]))
    await bus.publish(Batch.of("e/p", 3.0, 7.0))
    assert bus.latest("d/p") == (2.0, 6.0, Quality.UNCERTAIN)
    assert set(bus.latest_matching("*/p")) == {"d/p", "e/p"}


async def test_close_ends_iteration_and_releases_publishers():
    bus = Bus()
    sub = bus.subscribe("d/p", maxsize=1)
    await bus.publish(Batch.of("d/p", 1.0, 1.0))
    blocked = asyncio.create_task(bus.publish(Batch.of("d/p", 2.0, 2.0)))
    await asyncio.sleep(0.01)
    sub.close()
    await asyncio.wait_for(blocked, 1)
    assert sub not in bus.subscriptions
    assert [m async for m in sub][0].values[0] == 1.0  # what was queued is still delivered


async def test_new_subscription_sees_topics_already_routed():
    bus = Bus()
    await bus.publish(Batch.of("d/p", 1.0, 1.0))  # routes 'd/p' to nobody and caches that
    late = bus.subscribe("d/#")
    await bus.publish(Batch.of("d/p", 2.0, 2.0))
    assert late.depth == 1


async def test_publish_many_keeps_order_and_back_pressure():
    bus = Bus()
    sub = bus.subscribe("d/#", maxsize=2)
    batches = [Batch.of(f"d/p{i % 3}", float(i), float(i)) for i in range(6)]
    producer = asyncio.create_task(bus.publish_many(batches))
    received = [(await sub.get()).values[0] for _ in range(6)]
    await producer
    assert received == [float(i) for i in range(6)]
    assert bus.published_batches == 6 and bus.latest("d/p2")[1] == 5.0


async def test_acknowledged_subscription_holds_publishers_until_confirmed():
    bus = Bus()
    durable = bus.subscribe("d/#", acknowledged=True, name="durable")
    plain = bus.subscribe("d/#", name="plain")
    publisher = asyncio.create_task(bus.publish(Batch.of("d/p", 1.0, 1.0)))
    await asyncio.sleep(0.01)
    assert not publisher.done() and plain.depth == 1  # delivered, but not yet confirmed
    await durable.get()
    await asyncio.sleep(0.01)
    assert not publisher.done()  # taken, still not confirmed
    durable.acknowledge(1)
    await asyncio.wait_for(publisher, 1)
    many = asyncio.create_task(bus.publish_many([Batch.of("d/p", float(i), 1.0) for i in range(3)]))
    await asyncio.sleep(0.01)
    durable.acknowledge(2)
    await asyncio.sleep(0.01)
    assert not many.done()
    durable.close()  # closing releases whoever still waits
    await asyncio.wait_for(many, 1)
    with pytest.raises(ValueError, match="cannot drop"):
        bus.subscribe("x", acknowledged=True, overflow="drop_oldest")


async def test_latest_batch_keeps_the_whole_window():
    bus = Bus()
    assert bus.latest_batch("m/wave") is None
    await bus.publish(Batch.of("m/wave", np.arange(4.0), np.ones(4)))
    assert len(bus.latest_batch("m/wave")) == 4
