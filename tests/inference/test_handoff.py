"""How batches pass between the event loop and the worker threads: a realtime worker that takes a full
queued batch itself, batches that end together coming back in one loop callback, and bulk outcomes
held back while a realtime batch runs."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np

from edgeplane.testing import wait_for


def count_submits(executor: Any) -> list[int]:
    """Counts the batches the event loop hands to ``executor`` (the worker-taken ones are not among them)."""
    submits = [0]
    original = executor.submit

    def counted(*args: Any) -> None:
        submits[0] += 1
        original(*args)

    executor.submit = counted
    return submits


async def run_one_then_three_queued(make_service, max_batch: int) -> tuple[list[Any], list[tuple[int, str]], int]:
    """One request held in its run (the lane's one slot), three more queued behind it, then released:
    (results, (rows, thread) per run, batches the loop handed to a thread)."""
    x = np.random.default_rng(3).standard_normal((4, 32)).astype(np.float32)
    async with make_service(batching={"concurrency": 1, "max_batch": max_batch}) as service:
        await service.load("mlp")
        model = service.loaded()["mlp"]
        server = service._servers["mlp"]
        submits = count_submits(server.realtime.executor)
        entered, release = threading.Event(), threading.Event()
        original = model.run_batch
        runs: list[tuple[int, str]] = []

        def held_first(requests, rows, bulk=False, *more):
            if not runs:
                entered.set()
                release.wait(30)
            runs.append((sum(rows), threading.current_thread().name))
            return original(requests, rows, bulk, *more)

        model.run_batch = held_first
        first = asyncio.create_task(service.infer("mlp", x[:1], caller="first"))
        await wait_for(entered.is_set, timeout=10)
        rest = [asyncio.create_task(service.infer("mlp", x[i : i + 1], caller=f"c{i}")) for i in range(1, 4)]
        await wait_for(lambda: len(server.realtime.queue) == 3, timeout=10)
        release.set()
        results = await asyncio.wait_for(asyncio.gather(first, *rest), timeout=10)
        assert server.realtime.in_flight == 0 and not server.realtime.running
    return [x, *results], runs, submits[0]


async def test_a_worker_takes_a_full_queued_batch_itself(make_service, site_dir, run_reference):
    (x, *results), runs, submits = await run_one_then_three_queued(make_service, max_batch=3)
    expected = run_reference(site_dir / "sources" / "mlp2.onnx", {"x": x})[0]
    for i, result in enumerate(results):
        np.testing.assert_allclose(result["y"], expected[i : i + 1], rtol=1e-4, atol=1e-5)
    # the three queued requests fill a batch: the worker that ran the first took them from the queue
    # itself, in the same thread, without the loop handing them to a thread
    assert [rows for rows, _ in runs] == [1, 3]
    assert runs[0][1] == runs[1][1]
    assert submits == 1


async def test_a_batch_that_is_not_full_is_left_to_the_loop(make_service):
    # three rows of a 64-row batch: the loop starts it (with whatever else comes in its turn), not the worker
    (_, *results), runs, submits = await run_one_then_three_queued(make_service, max_batch=64)
    assert [rows for rows, _ in runs] == [1, 3]
    assert submits == 2
    assert all(r["y"].shape == (1, 8) for r in results)


async def test_bulk_outcomes_wait_for_the_realtime_batch_running_and_bulk_does_not_go_on_meanwhile(make_service):
    one = np.ones((1, 32), np.float32)
    # bulk batches of one row: the queued bulk request is a full batch, which the bulk worker leaves to the loop
    async with make_service(batching={"concurrency": 1, "max_delay": 0, "bulk_max_batch": 1}) as service:
        await service.load("mlp")
        model = service.loaded()["mlp"]
        server = service._servers["mlp"]
        bulk_submits = count_submits(server.bulk.executor)
        gates = {"bulk": (threading.Event(), threading.Event()), "realtime": (threading.Event(), threading.Event())}
        original = model.run_batch
        held = {"bulk": True, "realtime": True}

        def held_once(requests, rows, bulk=False, *more):
            kind = "bulk" if bulk else "realtime"
            if held[kind]:
                held[kind] = False
                entered, release = gates[kind]
                entered.set()
                release.wait(30)
            return original(requests, rows, bulk, *more)

        model.run_batch = held_once
        order: list[str] = []

        async def call(priority: str, tag: str) -> Any:
            result = await service.infer("mlp", one, priority=priority, caller=tag)
            order.append(tag)
            return result

        first_bulk = asyncio.create_task(call("bulk", "bulk0"))
        await wait_for(gates["bulk"][0].is_set, timeout=10)
        second_bulk = asyncio.create_task(call("bulk", "bulk1"))  # queued behind the running one
        realtime = asyncio.create_task(call("realtime", "rt"))
        await wait_for(gates["realtime"][0].is_set, timeout=10)
        gates["bulk"][1].set()  # the bulk run ends while the realtime one is still inside its run
        await wait_for(lambda: bool(server._deferred), timeout=10)
        assert not first_bulk.done(), "a bulk outcome went out while a realtime batch was running"
        assert len(server.bulk.queue) == 1, "the next bulk batch started while realtime ran"
        gates["realtime"][1].set()
        results = await asyncio.wait_for(asyncio.gather(first_bulk, second_bulk, realtime), timeout=10)
        assert not server._deferred and server.bulk.in_flight == 0 and server.realtime.in_flight == 0
    assert all(r["y"].shape == (1, 8) for r in results)
    assert order == ["rt", "bulk0", "bulk1"]  # the realtime caller first, though its run ended last
    assert bulk_submits[0] == 2  # the second bulk batch was started by the loop (after realtime went idle), not the bulk worker


async def test_stop_waits_for_the_realtime_batch_and_delivers_the_bulk_outcomes_held_for_it(make_service):
    one = np.ones((1, 32), np.float32)
    async with make_service(batching={"concurrency": 1, "max_delay": 0}) as service:
        await service.load("mlp")
        model = service.loaded()["mlp"]
        server = service._servers["mlp"]
        gates = {"bulk": (threading.Event(), threading.Event()), "realtime": (threading.Event(), threading.Event())}
        original = model.run_batch

        def held(requests, rows, bulk=False, *more):
            entered, release = gates["bulk" if bulk else "realtime"]
            entered.set()
            release.wait(30)
            return original(requests, rows, bulk, *more)

        model.run_batch = held
        bulk = asyncio.create_task(service.infer("mlp", one, priority="bulk", caller="bulk"))
        await wait_for(gates["bulk"][0].is_set, timeout=10)
        realtime = asyncio.create_task(service.infer("mlp", one, caller="rt"))
        await wait_for(gates["realtime"][0].is_set, timeout=10)
        gates["bulk"][1].set()
        await wait_for(lambda: bool(server._deferred), timeout=10)
        stopping = asyncio.create_task(service.stop())
        await asyncio.sleep(0.01)
        assert not stopping.done()  # it waits for the batches in flight, the held bulk one too
        gates["realtime"][1].set()
        await asyncio.wait_for(stopping, timeout=10)
        assert realtime.done() and bulk.done()
        assert (await realtime)["y"].shape == (1, 8)
        assert (await bulk)["y"].shape == (1, 8)


async def test_batches_that_end_before_the_loop_looks_come_back_in_one_delivery(make_service, site_dir, run_reference):
    x = np.random.default_rng(4).standard_normal((2, 32)).astype(np.float32)
    async with make_service(batching={"concurrency": 2}) as service:
        await service.load("mlp")
        model = service.loaded()["mlp"]
        server = service._servers["mlp"]
        inside, release = threading.Semaphore(0), threading.Event()
        original = model.run_batch

        def held(requests, rows, bulk=False, *more):
            inside.release()
            release.wait(30)
            return original(requests, rows, bulk, *more)

        model.run_batch = held
        deliveries: list[int] = []
        deliver = server._deliver

        def counted(lane: Any) -> None:
            deliveries.append(len(lane.finished))
            deliver(lane)

        server._deliver = counted
        first = asyncio.create_task(service.infer("mlp", x[:1], caller="a"))
        await asyncio.sleep(0)  # the first goes out alone; the second takes the lane's other slot
        second = asyncio.create_task(service.infer("mlp", x[1:], caller="b"))
        await wait_for(lambda: server.realtime.in_flight == 2, timeout=10)
        assert inside.acquire(timeout=10) and inside.acquire(timeout=10)
        release.set()
        # the loop is held here (as a busy loop is) until both runs have ended and queued their outcomes
        assert wait_until(lambda: len(server.realtime.finished) == 2)
        results = await asyncio.wait_for(asyncio.gather(first, second), timeout=10)
    assert deliveries == [2]  # one loop callback for both batches
    expected = run_reference(site_dir / "sources" / "mlp2.onnx", {"x": x})[0]
    for i, result in enumerate(results):
        np.testing.assert_allclose(result["y"], expected[i : i + 1], rtol=1e-4, atol=1e-5)


def wait_until(condition: Any, timeout: float = 10.0) -> bool:
    """Blocks the calling thread (here: the event loop, on purpose) until ``condition()`` or ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True
