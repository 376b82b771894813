"""One dedicated thread per SQLite database, for asyncio code.

A SQLite call blocks (disk I/O, fsync, locks), so it never runs on the event loop; and a
connection is best used from one thread. :class:`DatabaseThread` is that thread: every call
awaited through :meth:`~DatabaseThread.run` runs on it, one at a time, in the order awaited.
The local store (:class:`~edgeplane.store.LocalStore`) and the sync outbox
(:class:`~edgeplane.sync.outbox.Outbox`) each own one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from edgeplane.errors import LifecycleError

__all__ = ["DatabaseThread"]

P = ParamSpec("P")
T = TypeVar("T")


class DatabaseThread:
    """A single worker thread; ``start()`` before :meth:`run`, ``stop()`` after.

    ``what`` names the database in errors ("local store '/var/lib/edgeplane/site/edgeplane.db'").
    """

    def __init__(self, what: str, *, thread_name: str):
        self.what = what
        self.thread_name = thread_name
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._executor is not None

    def start(self) -> None:
        """Start the thread (once; later calls do nothing while it runs)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.thread_name)

    async def run(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``func(*args, **kwargs)`` run on the thread; raises :class:`LifecycleError` if it is not started."""
        if self._executor is None:
            raise LifecycleError(f"{self.what} is not open: open it before use")
        if kwargs:
            return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: func(*args, **kwargs))
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def stop(self, *, wait: bool = True) -> None:
        """Stop the thread after the calls already queued (``wait``: block until they finish)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait)
            self._executor = None
