"""The one "SQLite on its own thread" worker, used by the local store and the outbox."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from edgeplane.dbthread import DatabaseThread
from edgeplane.errors import LifecycleError
from edgeplane.store import LocalStore
from edgeplane.sync.outbox import Outbox


async def test_calls_run_in_order_on_one_thread_off_the_loop(tmp_path):
    worker = DatabaseThread("test database", thread_name="edgeplane-test-db")
    with pytest.raises(LifecycleError, match="test database is not open"):
        await worker.run(lambda: None)
    worker.start()
    db = await worker.run(sqlite3.connect, str(tmp_path / "t.db"))  # a connection made on the worker, used there only
    await worker.run(db.execute, "CREATE TABLE t (n INTEGER)")
    threads = await asyncio.gather(*(worker.run(lambda n=n: (db.execute("INSERT INTO t VALUES (?)", (n,)),
                                                             threading.current_thread())[1]) for n in range(50)))
    assert {t.name.split("_")[0] for t in threads} == {"edgeplane-test-db"}
    assert threading.current_thread() not in threads
    rows = await worker.run(lambda: [n for (n,) in db.execute("SELECT n FROM t ORDER BY rowid")])
    assert rows == list(range(50))
    await worker.run(db.close)
    worker.stop()
    assert not worker.running


async def test_the_store_and_the_outbox_each_use_one(tmp_path):
    store = LocalStore(tmp_path / "store")
    with pytest.raises(LifecycleError, match="local store .* is not open"):
        await store.get_state("x")
    await store.open()
    await store.put_state("x", {"a": 1})
    assert await store.get_state("x") == {"a": 1}
    await store.close()
    with pytest.raises(LifecycleError, match="local store .* is not open"):
        await store.get_state("x")
    outbox = Outbox(tmp_path / "outbox.db")
    await outbox.call(outbox.open)
    assert await outbox.call(outbox.integrity) == "ok"
    assert (await outbox.call(lambda: threading.current_thread().name)).startswith("edgeplane-outbox")
    await outbox.call(outbox.close)
