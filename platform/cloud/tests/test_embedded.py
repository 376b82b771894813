"""The embedded back end after the move: `edgeplane cloud serve` as the reference deployments run it,
the commands reach the edgeplane CLI through the plugin hook, and the edge host carries no cloud code."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from edgeplane import Batch, Bus, WallClock
from edgeplane.cli import main
from edgeplane.metrics import Metrics
from edgeplane.sync import SyncConfig, SyncService
from edgeplane.testing import Mosquitto

from edgeplane_cloud.testing import free_port, port_open

from .conftest import wait_until

REPO = Path(__file__).resolve().parents[3]


def test_the_edge_host_carries_no_cloud_code():
    assert importlib.util.find_spec("edgeplane.sync.cloud") is None
    importers = []
    for path in (REPO / "platform" / "edgeplane").rglob("*.py"):
        for line in path.read_text().splitlines():
            if re.match(r"\s*(from|import) edgeplane_cloud\b", line):
                importers.append(path.relative_to(REPO).as_posix())
    # pushing a site file's desired state is the cloud's job: `edgeplane cloud push-site`
    assert importers == []


def test_cloud_and_fleet_commands_come_through_the_plugin_hook():
    result = CliRunner().invoke(main, ["cloud", "--help"])
    assert result.exit_code == 0
    for command in ("serve", "push", "push-site", "status", "keygen", "ingest"):
        assert re.search(rf"^\s+{command}\s", result.output, re.M), command
    result = CliRunner().invoke(main, ["fleet", "--help"])
    assert result.exit_code == 0 and "rollout" in result.output and "rollback" in result.output
    result = CliRunner().invoke(main, ["fleet", "sites"])
    assert result.exit_code == 2 and "--dsn" in result.output


def wait_until_listening(port: int, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not port_open(port):
        if time.monotonic() > deadline:
            raise AssertionError(f"`edgeplane cloud serve` opened no port {port} within {timeout} s")
        time.sleep(0.05)


def cloud_db_has(data: Path, sql: str) -> bool:
    path = data / "cloud.db"
    if not path.exists():
        return False
    with sqlite3.connect(path) as db:
        try:
            row = db.execute(sql).fetchone()
        except sqlite3.OperationalError:
            return False
        return bool(row and row[0])


async def test_cloud_serve_as_the_reference_deployments_run_it(tmp_path: Path):
    data = tmp_path / "cloud-data"
    broker = Mosquitto(tmp_path)
    http_port = free_port()
    ready_url = f"http://127.0.0.1:{http_port}/readyz"
    # configs/*.yaml start the cloud end exactly like this (plus the readiness probe)
    serve = subprocess.Popen([sys.executable, "-m", "edgeplane.cli", "cloud", "serve", "--broker", broker.url,
                              "--data", str(data), "--http-port", str(http_port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    service = None
    try:
        # up but not ready while its broker is away: the probe says which check fails
        await asyncio.to_thread(wait_until_listening, http_port)
        not_ready = CliRunner().invoke(main, ["cloud", "ready", "--url", ready_url])
        assert not_ready.exit_code == 1 and "broker: not connected to " + broker.url in not_ready.output
        with broker:
            # ready once subscribed (a site's data before that would find no subscriber): no sleeping
            done = await asyncio.to_thread(CliRunner().invoke, main,
                                           ["cloud", "ready", "--url", ready_url, "--wait", "60", "--json"])
            assert done.exit_code == 0, done.output
            assert json.loads(done.output) == {"ready": True, "checks": {"broker": "ok", "store": "ok"}}
            bus = Bus()
            config = SyncConfig.model_validate({"uplink": {"url": broker.url}, "policy": [{"topics": "dev/#"}],
                                                "durability": "process", "report_interval": 1})
            service = SyncService(config, site_id="ref-1", bus=bus, clock=WallClock(), metrics=Metrics(),
                                  store_dir=tmp_path / "site")
            await service.start()
            ts = np.arange(100, dtype=float) + 1.7e9
            await bus.publish(Batch.of("dev/x", ts, ts % 7))
            await wait_until(lambda: cloud_db_has(data, "SELECT readings = 100 FROM sites WHERE site = 'ref-1'"),
                             timeout=60, what="the readings stored")
            await service.stop()
            service = None
    finally:
        if service is not None:
            await service.stop()
        serve.terminate()
        serve.wait(15)
    out = subprocess.run([sys.executable, "-m", "edgeplane.cli", "cloud", "status", "--data", str(data), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (row,) = [r for r in json.loads(out.stdout) if r["site"] == "ref-1"]
    assert row["readings"] == 100 and row["duplicates"] == 0


def test_the_store_answers_read_only_queries_on_a_sites_records(tmp_path):
    import pytest

    from edgeplane.sync import Record, encode_envelope
    from edgeplane.sync.codec import encode_batch

    from edgeplane_cloud.embedded import CloudStore

    store = CloudStore(tmp_path / "cloud")
    block, count = encode_batch(Batch.of("dev/temp", np.array([1.0, 2.0]), np.array([20.5, 21.5])))
    store.store_envelope("plant-1", encode_envelope("plant-1", 3.0, [Record("dev/temp", 1, "raw", 2, count, 0.0, block)],
                                                    "zstd"))
    assert store.query("plant-1", "SELECT ts, value FROM readings ORDER BY ts") == [(1.0, 20.5), (2.0, 21.5)]
    assert store.query("plant-1", "WITH r AS (SELECT * FROM readings) SELECT COUNT(*) FROM r") == [(2,)]
    with pytest.raises(ValueError, match="SELECT"):
        store.query("plant-1", "DELETE FROM readings")
    assert store.query("plant-1", "SELECT COUNT(*) FROM readings") == [(2,)]
