"""The threads model runs happen in: a fixed set per latency class, fed from one queue.

``ThreadPoolExecutor.submit`` builds a ``concurrent.futures.Future`` (with its condition
variable), a work item and takes two locks on every call; the batcher needs none of that (a
worker hands its outcome back to the event loop itself), so a batch is handed over as one
``SimpleQueue.put``. py-spy on 4 callers of 64-row requests put a third of the event loop's
GIL-holding samples in ``submit``.

Threads are started up front and can be told how to set themselves up (lower their priority,
for the bulk class). They are daemon threads so that a service nobody stopped cannot hang the
interpreter's exit; :meth:`RunThreads.shutdown` lets queued work finish and joins them.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["RunThreads"]

log = logging.getLogger("edgeplane.inference")


class RunThreads:
    """``count`` threads named ``<name>_<i>`` calling what :meth:`submit` queues, in order of submission."""

    def __init__(self, count: int, name: str, initializer: Callable[[], None] | None = None):
        self.name = name
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._closed = False
        self._initializer = initializer
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` for the next free thread; RuntimeError once shut down. Exceptions are logged."""
        if self._closed:
            raise RuntimeError(f"the {self.name} threads are shut down")
        self._queue.put((fn, args))

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in one of the threads and return its result (blocks the calling thread)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                future.set_exception(e)

        self.submit(run)
        return future.result()

    def shutdown(self, wait: bool = True) -> None:
        """Refuse new work; the threads finish what is queued, then end. Idempotent."""
        if not self._closed:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()

    def _work(self) -> None:
        if self._initializer is not None:
            self._initializer()
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except BaseException:  # noqa: BLE001 - a failed call must not end the thread
                log.exception("%s: a queued call failed", self.name)
            del item, fn, args  # drop references (a swapped-out model) before waiting for the next call
