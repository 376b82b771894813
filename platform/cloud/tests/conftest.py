"""Real engines for the cloud tests: one NATS JetStream cluster and one PostgreSQL per session.

Tests that break an engine (the fault test) start their own; the shared ones keep their data
apart by site id, and a test that counts rows clears the tables first (``clean_store``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from edgeplane_cloud.pgstore import PgStore
from edgeplane_cloud.testing import NatsCluster, Postgres


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("nats")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with Postgres() as pg:
        PgStore.create_schema(pg.dsn)
        yield pg


@pytest.fixture
def clean_store(postgres: Postgres) -> str:
    with psycopg.connect(postgres.dsn) as conn:
        conn.execute("TRUNCATE records, dead_letters, sites, desired, artifacts, rollout_sites, rollouts, events")
    return postgres.dsn


def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params or None).fetchall()


async def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> None:
    """Poll ``predicate`` (sync, may query the database) until true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        if await asyncio.to_thread(predicate):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
