"""The embedded back end after the move: `edgeplane cloud serve` as the reference deployments run it,
the commands reach the edgeplane CLI through the plugin hook, and the edge host carries no cloud code."""

from __future__ import annotations

import importlib.util
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
from click.testing import CliRunner

from edgeplane import Batch, Bus, WallClock
from edgeplane.cli import main
from edgeplane.metrics import Metrics
from edgeplane.sync import SyncConfig, SyncService
from edgeplane_mqtt.testing import Mosquitto

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
    with Mosquitto(tmp_path) as broker:
        # configs/*.yaml start the cloud end exactly like this
        serve = subprocess.Popen([sys.executable, "-m", "edgeplane.cli", "cloud", "serve", "--broker", broker.url,
                                  "--data", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="probe", protocol=paho.MQTTv311)
        probe.connect("127.0.0.1", int(broker.url.rsplit(":", 1)[1]))
        probe.loop_start()
        bus = Bus()
        config = SyncConfig.model_validate({"uplink": {"url": broker.url}, "policy": [{"topics": "dev/#"}],
                                            "durability": "process", "report_interval": 1})
        service = SyncService(config, site_id="ref-1", bus=bus, clock=WallClock(), metrics=Metrics(),
                              store_dir=tmp_path / "site")
        try:
            # until the cloud end has subscribed (a site's data before that would find no subscriber)
            def subscribed() -> bool:
                probe.publish("edgeplane/probe-1/up/state", b"{}", qos=1)
                return cloud_db_has(data, "SELECT count(*) FROM sites WHERE site = 'probe-1'")
            await wait_until(subscribed, timeout=90, interval=0.5, what="`edgeplane cloud serve` subscribed")
            await service.start()
            ts = np.arange(100, dtype=float) + 1.7e9
            await bus.publish(Batch.of("dev/x", ts, ts % 7))
            await wait_until(lambda: cloud_db_has(data, "SELECT readings = 100 FROM sites WHERE site = 'ref-1'"),
                             timeout=60, what="the readings stored")
        finally:
            await service.stop()
            probe.loop_stop()
            serve.terminate()
            serve.wait(15)
    out = subprocess.run([sys.executable, "-m", "edgeplane.cli", "cloud", "status", "--data", str(data), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (row,) = [r for r in json.loads(out.stdout) if r["site"] == "ref-1"]
    assert row["readings"] == 100 and row["duplicates"] == 0
