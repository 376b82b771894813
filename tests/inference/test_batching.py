"""Dynamic batching: correctness under concurrency, latency classes, queue limits, bad input."""

from __future__ import annotations

import asyncio
import sys
import threading

import numpy as np
import pytest

from edgeplane.inference import InputError, ItemOutputs, ModelRunError, QueueFullError, ServiceStoppedError
from edgeplane.metrics import Metrics
from edgeplane.testing import wait_for


async def test_mixed_batch_sizes_split_back_correctly_under_concurrency(make_service, site_dir, run_reference):
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal((int(rng.integers(1, 8)), 32)).astype(np.float32) for _ in range(300)]
    metrics = Metrics()
    async with make_service(metrics, batching={"max_batch": 64, "max_delay": 0.02, "realtime_max_delay": 0.02}) as service:
        results = await asyncio.gather(*(service.infer("mlp", x, caller=f"c{i % 9}") for i, x in enumerate(inputs)))
    expected = run_reference(site_dir / "sources" / "mlp2.onnx", {"x": np.concatenate(inputs)})[0]
    start = 0
    for x, result in zip(inputs, results):
        assert result["y"].shape == (len(x), 8)
        np.testing.assert_allclose(result["y"], expected[start : start + len(x)], rtol=1e-4, atol=1e-5)
        start += len(x)
    runs = metrics.value("edgeplane_inference_batch_size_count", model="mlp")
    rows = metrics.value("edgeplane_inference_batch_size_sum", model="mlp")
    assert rows == sum(len(x) for x in inputs)
    assert runs < len(inputs) / 2, "requests were not coalesced into batches"
    assert metrics.value("edgeplane_inference_batch_size_bucket", model="mlp", le="64.0") == runs  # never above max_batch


async def test_multi_input_model_and_dict_inputs(make_service, site_dir, run_reference):
    idx = np.array([3, 1, 4], np.int64)
    async with make_service() as service:
        one, two = await asyncio.gather(service.infer("lookup", {"idx": idx}), service.infer("lookup", idx[:1]))
    np.testing.assert_array_equal(one["y"], run_reference(site_dir / "sources" / "lookup.onnx", {"idx": idx})[0])
    np.testing.assert_array_equal(two["y"], one["y"][:1])


async def test_realtime_runs_while_bulk_is_stuck(make_service, gate):
    x = np.ones((1, 32), np.float32)
    async with make_service() as service:
        await service.load("mlp")
        model = service.loaded()["mlp"]
        held = gate()
        original = model.run_batch

        def bulk_held(requests, rows, bulk=False, *more):
            if bulk:
                held.entered.set()
                held.opened.wait(30)
            return original(requests, rows, bulk, *more)

        model.run_batch = bulk_held
        bulk = [asyncio.create_task(service.infer("mlp", np.ones((16, 32), np.float32), priority="bulk", caller=f"b{i}")) for i in range(8)]
        await wait_for(held.entered.is_set, timeout=10)
        # bulk is running (and more is queued behind it); realtime must not wait for it
        result = await asyncio.wait_for(service.infer("mlp", x), timeout=10)
        assert result["y"].shape == (1, 8)
        assert not any(t.done() for t in bulk)
        held.open()
        done = await asyncio.wait_for(asyncio.gather(*bulk), timeout=10)
        assert all(r["y"].shape == (16, 8) for r in done)


async def test_bulk_waits_while_realtime_is_queued(make_service, gate):
    async with make_service(batching={"concurrency": 1}) as service:
        await service.load("mlp")
        model = service.loaded()["mlp"]
        held = gate()
        held.hold(model)
        order: list[str] = []

        async def call(priority: str, tag: str) -> None:
            await service.infer("mlp", np.ones((1, 32), np.float32), priority=priority, caller=tag)
            order.append(tag)

        first = asyncio.create_task(call("realtime", "rt0"))
        await wait_for(held.entered.is_set, timeout=10)
        tasks = [asyncio.create_task(call("bulk", f"bulk{i}")) for i in range(3)]
        tasks += [asyncio.create_task(call("realtime", f"rt{i}")) for i in range(1, 4)]
        await asyncio.sleep(0.05)
        held.open()
        await asyncio.wait_for(asyncio.gather(first, *tasks), timeout=10)
    # every realtime request (even those sent after the bulk ones) finished before any bulk one
    assert order.index("bulk0") > max(order.index(f"rt{i}") for i in range(4))


async def test_bulk_batches_are_bounded(make_service):
    metrics = Metrics()
    async with make_service(metrics, batching={"max_batch": 64, "bulk_max_batch": 4, "max_delay": 0.05}) as service:
        await asyncio.gather(*(service.infer("mlp", np.ones((1, 32), np.float32), priority="bulk", caller=f"c{i}") for i in range(40)))
        assert metrics.value("edgeplane_inference_batch_size_sum", model="mlp") == 40
        assert metrics.value("edgeplane_inference_batch_size_bucket", model="mlp", le="4.0") == metrics.value(
            "edgeplane_inference_batch_size_count", model="mlp"
        )
        assert metrics.value("edgeplane_inference_requests_total", model="mlp", priority="bulk") == 40


async def test_a_flooding_caller_is_bounded_by_its_own_queue_limit(make_service, gate):
    metrics = Metrics()
    async with make_service(metrics, batching={"max_queue_per_caller": 5}) as service:
        await service.load("mlp")
        held = gate()
        held.hold(service.loaded()["mlp"])
        x = np.ones((1, 32), np.float32)
        flood = [asyncio.create_task(service.infer("mlp", x, caller="flooder")) for _ in range(20)]
        await asyncio.sleep(0.05)
        refused = [t for t in flood if t.done()]
        assert len(refused) == 15
        for task in refused:
            with pytest.raises(QueueFullError, match="flooder.*5 requests waiting"):
                task.result()
        other = asyncio.create_task(service.infer("mlp", x, caller="polite"))  # another caller still gets in
        held.open()
        assert (await asyncio.wait_for(other, 10))["y"].shape == (1, 8)
        assert len(await asyncio.wait_for(asyncio.gather(*(t for t in flood if t not in refused)), 10)) == 5
        assert metrics.value("edgeplane_dropped_total", part="inference", reason="queue_full") == 15
        assert metrics.value("edgeplane_inference_errors_total", model="mlp", kind="queue_full") == 15


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        (np.ones((2, 31), np.float32), r"model 'mlp' version '2': input 'x' has shape \[2, 31\] but the model expects \[\?, 32\]"),
        (np.ones((2, 32), np.float64), r"model 'mlp' version '2': input 'x' has dtype float64 but the model expects float32"),
        (np.ones(32, np.float32), r"input 'x' has shape \[32\]"),
        ({"z": np.ones((1, 32), np.float32)}, r"missing \['x'\], unknown \['z'\]"),
    ],
)
async def test_wrong_inputs_name_model_input_and_signature(make_service, inputs, match):
    metrics = Metrics()
    async with make_service(metrics) as service:
        with pytest.raises(InputError, match=match) as info:
            await service.infer("mlp", inputs)
        assert "expected signature: inputs x: float32[batch, 32]; outputs y: float32[batch, 8]" in str(info.value)
        assert metrics.value("edgeplane_inference_errors_total", model="mlp", kind="input") == 1
        assert (await service.infer("mlp", np.ones((1, 32), np.float32)))["y"].shape == (1, 8)  # the service goes on


async def test_a_request_that_makes_the_model_raise_fails_alone(make_service):
    metrics = Metrics()
    async with make_service(metrics, batching={"max_delay": 0.05, "realtime_max_delay": 0.05}) as service:
        requests = [np.array([i % 10], np.int64) for i in range(30)]
        requests[17] = np.array([99], np.int64)  # out of the table's range: Gather fails at run time
        results = await asyncio.gather(*(service.infer("lookup", r, caller=f"c{i}") for i, r in enumerate(requests)), return_exceptions=True)
        for i, result in enumerate(results):
            if i == 17:
                assert isinstance(result, ModelRunError)
                assert "model 'lookup' version '1' failed on this request" in str(result)
                assert "99" in str(result)
            else:
                np.testing.assert_array_equal(result["y"], np.arange(4, dtype=np.float32)[None] + 4 * (i % 10))
        assert metrics.value("edgeplane_inference_errors_total", model="lookup", kind="run") == 1
        assert metrics.value("edgeplane_inference_batch_size_count", model="lookup") < 30  # it was batched


async def test_model_runs_off_the_event_loop(make_service, gate):
    async with make_service() as service:
        await service.load("mlp")
        held = gate()
        held.hold(service.loaded()["mlp"])
        task = asyncio.create_task(service.infer("mlp", np.ones((1, 32), np.float32)))
        await wait_for(held.entered.is_set, timeout=10)
        ticks = 0
        for _ in range(5):  # the loop keeps running while the model is held in its thread
            await asyncio.sleep(0.001)
            ticks += 1
        assert ticks == 5 and not task.done()
        held.open()
        assert (await asyncio.wait_for(task, 10))["y"].shape == (1, 8)
        assert threading.get_ident() not in held.threads


async def test_stop_fails_queued_requests_and_refuses_new_ones(make_service, gate):
    async with make_service(batching={"concurrency": 1}) as service:
        await service.load("mlp")
        held = gate()
        held.hold(service.loaded()["mlp"])
        x = np.ones((1, 32), np.float32)
        running = asyncio.create_task(service.infer("mlp", x, caller="a"))
        await wait_for(held.entered.is_set, timeout=10)
        queued = asyncio.create_task(service.infer("mlp", x, caller="b"))
        await asyncio.sleep(0.01)
        stopping = asyncio.create_task(service.stop())
        await asyncio.sleep(0.01)
        held.open()
        await asyncio.wait_for(stopping, 10)
        with pytest.raises(ServiceStoppedError):
            await queued
        assert (await running)["y"].shape == (1, 8)  # a run already in its thread finishes
        with pytest.raises(ServiceStoppedError, match="stopped"):
            await service.infer("mlp", x)


async def test_infer_many_joins_requests_into_one_and_cuts_outputs_back(make_service, site_dir, run_reference):
    rng = np.random.default_rng(11)
    items = [rng.standard_normal((int(rng.integers(1, 5)), 32)).astype(np.float32) for _ in range(40)]
    metrics = Metrics()
    async with make_service(metrics) as service:
        results = await service.infer_many("mlp", items, caller="pdm")
    expected = run_reference(site_dir / "sources" / "mlp2.onnx", {"x": np.concatenate(items)})[0]
    start = 0
    for x, result in zip(items, results, strict=True):
        np.testing.assert_allclose(result["y"], expected[start : start + len(x)], rtol=1e-4, atol=1e-5)
        start += len(x)
    # one queued request for the whole call, not one per item
    assert metrics.value("edgeplane_inference_requests_total", model="mlp", priority="bulk") == 1


async def test_infer_many_gives_the_joined_block_and_per_request_views_of_it(make_service, site_dir, run_reference):
    rng = np.random.default_rng(5)
    windows = rng.standard_normal((24, 32)).astype(np.float32)
    items = [windows[i : i + 1] for i in range(24)]  # one-row views of one block: the join's fast path
    async with make_service() as service:
        results = await service.infer_many("mlp", items, priority="realtime")
    expected = run_reference(site_dir / "sources" / "mlp2.onnx", {"x": windows})[0]
    assert isinstance(results, ItemOutputs) and len(results) == 24 and results.splits == [1] * 24
    np.testing.assert_allclose(results.outputs["y"], expected, rtol=1e-4, atol=1e-5)  # the block, rows in request order
    for i in (0, 7, 23, -1):
        assert results[i]["y"].shape == (1, 8)
        assert np.shares_memory(results[i]["y"], results.outputs["y"])  # a view of the block, not a copy
        np.testing.assert_allclose(results[i]["y"], expected[i:][:1], rtol=1e-4, atol=1e-5)
    assert [r["y"].shape for r in results[20:]] == [(1, 8)] * 4
    assert results == [{"y": results.outputs["y"][i : i + 1]} for i in range(24)]
    assert results != [{"y": results.outputs["y"][i : i + 1]} for i in range(23)]
    with pytest.raises(IndexError, match="item 24 of 24"):
        results[24]


async def test_infer_many_joins_items_the_fast_path_cannot_take_and_refuses_wrong_ones_by_index(make_service, site_dir, run_reference):
    rng = np.random.default_rng(6)
    base = rng.standard_normal((12, 32)).astype(np.float32)
    items = [base[0:4:2], base[4:5], np.asfortranarray(base[5:8]), base[8:12].tolist()]  # strided, plain, Fortran, a list
    async with make_service() as service:
        results = await service.infer_many("mlp", items)
        assert results.splits == [2, 1, 3, 4]
        joined = np.concatenate([base[0:4:2], base[4:12]])
        np.testing.assert_allclose(results.outputs["y"], run_reference(site_dir / "sources" / "mlp2.onnx", {"x": joined})[0],
                                   rtol=1e-4, atol=1e-5)
        assert [r["y"].shape[0] for r in results] == [2, 1, 3, 4]
        with pytest.raises(InputError, match=r"dtype float64 but the model expects float32"):
            await service.infer_many("mlp", [base[:1], base[1:2].astype(np.float64)])
        with pytest.raises(InputError, match=r"shape \[32\]"):
            await service.infer_many("mlp", [base[:1], base[1]])  # a row without its batch axis


async def test_infer_many_larger_than_max_batch_runs_in_bounded_slices(make_service, site_dir, run_reference):
    x = np.random.default_rng(3).standard_normal((50, 32)).astype(np.float32)
    metrics = Metrics()
    async with make_service(metrics, batching={"max_batch": 16, "bulk_max_batch": 16}) as service:
        await service.load("mlp")
        model = service.loaded()["mlp"]
        sizes: list[int] = []
        session_run = model.bulk_session.run

        class Recording:  # onnxruntime sessions cannot be patched; wrap the bulk one
            def run(self, names, feeds):
                sizes.append(len(next(iter(feeds.values()))))
                return session_run(names, feeds)

        model.bulk_session = Recording()
        (result,) = await service.infer_many("mlp", [x])
    np.testing.assert_allclose(result["y"], run_reference(site_dir / "sources" / "mlp2.onnx", {"x": x})[0], rtol=1e-4, atol=1e-5)
    assert sizes == [16, 16, 16, 2]


async def test_infer_many_refuses_a_malformed_item_by_its_shape(make_service):
    good, bad = np.ones((2, 32), np.float32), np.ones((2, 31), np.float32)
    async with make_service() as service:
        with pytest.raises(InputError, match=r"shape \[2, 31\]"):
            await service.infer_many("mlp", [good, bad])
        assert await service.infer_many("mlp", []) == []


async def test_realtime_runs_while_a_model_loads(make_service, gate):
    """Loading (verify, session, warm-up) has its own threads: realtime runs do not queue behind it."""
    async with make_service(workers=1) as service:
        await service.load("mlp")
        held = gate()
        verify = service.registry.verify

        def slow_verify(*args, **kwargs):
            held.entered.set()
            held.opened.wait(30)
            return verify(*args, **kwargs)

        service.registry.verify = slow_verify
        loading = asyncio.create_task(service.load("cnn"))
        await wait_for(held.entered.is_set, timeout=10)
        result = await asyncio.wait_for(service.infer("mlp", np.ones((1, 32), np.float32)), timeout=10)
        assert result["y"].shape == (1, 8)
        assert not loading.done()
        held.open()
        assert (await asyncio.wait_for(loading, timeout=30)).name == "cnn"


async def test_callers_ready_in_one_turn_of_the_loop_share_one_run(make_service):
    """No dispatch per request: 64 callers that queue in the same turn go out as one batch of 64."""
    metrics = Metrics()
    async with make_service(metrics) as service:  # realtime_max_delay 0: nothing waits for a batch to fill
        await service.load("mlp")
        x = np.random.default_rng(5).standard_normal((64, 32)).astype(np.float32)
        results = await asyncio.gather(*(service.infer("mlp", x[i : i + 1], caller=f"c{i}") for i in range(64)))
        alone = [await service.infer("mlp", x[i : i + 1]) for i in (0, 63)]
    np.testing.assert_allclose(results[0]["y"], alone[0]["y"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[63]["y"], alone[1]["y"], rtol=1e-5, atol=1e-6)
    assert metrics.value("edgeplane_inference_batch_size_count", model="mlp") == 1 + 2
    assert metrics.value("edgeplane_inference_batch_size_bucket", model="mlp", le="32.0") == 2  # only the two lone runs are small


async def test_realtime_has_its_own_session_and_threads_and_is_served_while_bulk_runs(make_service):
    async with make_service() as service:
        await service.load("mlp")
        model = service.loaded()["mlp"]
        assert model.bulk_session is not model.session
        bulk_entered, bulk_release = threading.Event(), threading.Event()
        sessions: dict[str, set[int]] = {"realtime": set(), "bulk": set()}
        threads: dict[str, set[str]] = {"realtime": set(), "bulk": set()}
        order: list[str] = []
        original = model.run_batch

        def recorded(requests, rows, bulk=False, *more):
            kind = "bulk" if bulk else "realtime"
            threads[kind].add(threading.current_thread().name)
            sessions[kind].add(id(model.bulk_session if bulk else model.session))
            if bulk:
                bulk_entered.set()
                bulk_release.wait(30)
            result = original(requests, rows, bulk, *more)
            order.append(kind)
            return result

        model.run_batch = recorded
        bulk = asyncio.create_task(service.infer("mlp", np.ones((32, 32), np.float32), priority="bulk", caller="bulk"))
        await wait_for(bulk_entered.is_set, timeout=10)
        # the bulk batch is inside its run: a realtime request still comes back, and before it
        assert (await asyncio.wait_for(service.infer("mlp", np.ones((1, 32), np.float32)), 10))["y"].shape == (1, 8)
        assert not bulk.done()
        bulk_release.set()
        assert (await asyncio.wait_for(bulk, 10))["y"].shape == (32, 8)
    assert order == ["realtime", "bulk"]
    assert all(name.startswith("inference-realtime") for name in threads["realtime"])
    assert all(name.startswith("inference-bulk") for name in threads["bulk"])
    assert sessions["realtime"].isdisjoint(sessions["bulk"])


async def test_gil_switch_interval_is_short_only_while_bulk_runs(make_service):
    before = sys.getswitchinterval()
    async with make_service(bulk_switch_interval=0.0003) as service:
        await service.load("mlp")
        model = service.loaded()["mlp"]
        entered, release = threading.Event(), threading.Event()
        seen: list[float] = []
        original = model.run_batch

        def held(requests, rows, bulk=False, *more):
            if bulk:
                seen.append(sys.getswitchinterval())
                entered.set()
                release.wait(30)
            return original(requests, rows, bulk, *more)

        model.run_batch = held
        await service.infer("mlp", np.ones((1, 32), np.float32))  # realtime alone leaves it as it is
        assert sys.getswitchinterval() == before
        task = asyncio.create_task(service.infer("mlp", np.ones((4, 32), np.float32), priority="bulk"))
        await wait_for(entered.is_set, timeout=10)
        assert seen == [pytest.approx(0.0003)]
        release.set()
        await asyncio.wait_for(task, 10)
        assert sys.getswitchinterval() == before


async def test_infer_many_returns_items_in_order_and_counts_each_failed_item(make_service):
    metrics = Metrics()
    table = np.arange(40, dtype=np.float32).reshape(10, 4)  # lookup's table: row i is 4i .. 4i+3
    async with make_service(metrics) as service:
        items = [np.array([i % 10, (i + 1) % 10], np.int64) for i in range(12)]
        items[3] = np.array([1, 99], np.int64)  # out of the table: the joined run fails, then only this item
        items[8] = np.array([42], np.int64)
        results = await service.infer_many("lookup", items, return_exceptions=True)
        assert len(results) == 12
        for i, (item, result) in enumerate(zip(items, results, strict=True)):
            if i in (3, 8):
                assert isinstance(result, ModelRunError), i
                assert "model 'lookup' version '1' failed on this request" in str(result)
            else:
                np.testing.assert_array_equal(result["y"], table[item])
        assert metrics.value("edgeplane_inference_errors_total", model="lookup", kind="run") == 2
        with pytest.raises(ModelRunError, match=r"item 3 of 12 in infer_many; 2 failed: pass return_exceptions=True"):
            await service.infer_many("lookup", items)
        assert metrics.value("edgeplane_inference_errors_total", model="lookup", kind="run") == 4
        ok = await service.infer_many("lookup", [np.array([i], np.int64) for i in range(10)])  # equal items: cut by one reshape
        assert [r["y"].shape for r in ok] == [(1, 4)] * 10
        np.testing.assert_array_equal(np.concatenate([r["y"] for r in ok]), table)


async def test_bulk_runs_of_all_models_take_turns_within_the_bulk_thread_budget(make_service):
    """With bulk on its own sessions, one bulk run holds the whole bulk budget: a second model's bulk batch waits."""
    async with make_service() as service:
        mlp, cnn = await service.load("mlp"), await service.load("cnn")
        first_in, release = threading.Event(), threading.Event()
        entered: list[str] = []

        def hold(model, name):
            original = model.run_batch

            def held(requests, rows, bulk=False, *more):
                entered.append(f"{name}:{'bulk' if bulk else 'realtime'}")
                if bulk and name == "mlp":
                    first_in.set()
                    release.wait(30)
                return original(requests, rows, bulk, *more)

            model.run_batch = held

        hold(mlp, "mlp")
        hold(cnn, "cnn")
        a = asyncio.create_task(service.infer("mlp", np.ones((4, 32), np.float32), priority="bulk"))
        await wait_for(first_in.is_set, timeout=10)
        b = asyncio.create_task(service.infer("cnn", np.ones((2, 3, 256), np.float32), priority="bulk"))
        # realtime work of either model is not held by the bulk budget
        assert (await asyncio.wait_for(service.infer("cnn", np.ones((1, 3, 256), np.float32)), 10))["y"].shape == (1, 4)
        await asyncio.sleep(0.05)
        assert entered == ["mlp:bulk", "cnn:realtime"] and not b.done()
        release.set()
        await asyncio.wait_for(asyncio.gather(a, b), 10)
        assert entered == ["mlp:bulk", "cnn:realtime", "cnn:bulk"]
