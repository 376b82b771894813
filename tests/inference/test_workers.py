"""The threads model runs happen in: order, set-up per thread, errors, shutdown."""

from __future__ import annotations

import threading

import pytest

from edgeplane.inference.workers import RunThreads


def test_run_threads_call_in_order_set_each_thread_up_and_survive_a_failing_call(caplog):
    set_up: list[str] = []
    threads = RunThreads(1, "test-run", initializer=lambda: set_up.append(threading.current_thread().name))
    seen: list[tuple[int, str]] = []
    threads.submit(lambda: 1 / 0)  # logged, and the thread goes on
    for i in range(5):
        threads.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    assert threads.call(lambda: "done") == "done"  # queued after the five: they have run
    assert seen == [(i, "test-run_0") for i in range(5)]
    assert set_up == ["test-run_0"]
    assert "test-run: a queued call failed" in caplog.text
    with pytest.raises(KeyError, match="missing"):
        threads.call(lambda: {}["missing"])
    threads.shutdown()
    with pytest.raises(RuntimeError, match="test-run threads are shut down"):
        threads.submit(print)
    assert not any(t.name.startswith("test-run") for t in threading.enumerate())
