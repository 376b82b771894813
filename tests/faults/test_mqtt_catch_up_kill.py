"""Item 11: a SIGKILL during an MQTT catch-up loses nothing the device's broker handed over.

A device publishes 20,000 QoS 1 readings while the host is away; the broker queues them in the
host's persistent session. The host comes back (a real ``edgeplane run``), catches up at full
speed, and is SIGKILLed half way. Because the connector acknowledges a message (PUBACK) only
once the bus, and so the sync outbox, has taken it, the broker still holds every message the
outbox did not commit, and delivers it again when the host restarts: the outbox ends with all
20,000 readings (a redelivered reading may be stored twice: at-least-once; none is missing).
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edgeplane.sync.codec import decode_block

N = 20_000


def outbox_values(db_path: Path) -> list[float]:
    if not db_path.exists():
        return []
    db = sqlite3.connect(db_path, timeout=5)
    try:
        rows = db.execute("SELECT body FROM outbox").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()
    values: list[float] = []
    for (body,) in rows:
        values.extend(float(v) for v in decode_block(body)["values"])
    return values


def publish_backlog(url_port: int) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="device-7")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", url_port)
    client.loop_start()
    infos = [client.publish("line/speed", str(i), qos=1) for i in range(N)]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def run_host(site: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "edgeplane.cli", "run", str(site), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=site.parent)


def test_sigkill_during_catch_up_loses_nothing_the_broker_handed_over(tmp_path, mqtt_broker):
    broker = mqtt_broker(persistence=True, max_inflight_messages=1000)
    store = tmp_path / "store"
    site = {
        "site": {"id": "catch-up"},
        "devices": {"mq": {"connector": "mqtt", "url": broker.url, "client_id": "edgeplane-catch-up-mq",
                           "clean_start": False, "session_expiry": 3600, "qos": 1, "decoder": "text",
                           "subscribe": [{"topic": "line/{point}"}]}},
        # the uplink never connects: everything the host takes stays in its outbox, to be counted
        "sync": {"uplink": {"url": "mqtt://127.0.0.1:9"}, "durability": "process",
                 "policy": [{"topics": "mq/#", "mode": "raw", "priority": "low"}]},
        "store": {"path": str(store)},
        "http": {"port": None},
    }
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(site))
    outbox = store / "sync" / "outbox.db"

    # first run: the persistent session and its subscription are made, then the host goes away
    host = run_host(site_file)
    deadline = time.monotonic() + 60
    while "edgeplane-catch-up-mq" not in broker.log_file.read_text():
        assert host.poll() is None and time.monotonic() < deadline, "the host did not connect to the device broker"
        time.sleep(0.1)
    time.sleep(1.0)
    host.send_signal(signal.SIGTERM)
    host.wait(30)

    publish_backlog(broker.port)  # queued by the broker for the absent host

    host = run_host(site_file)
    deadline = time.monotonic() + 60
    while len(outbox_values(outbox)) < N // 10:
        assert host.poll() is None and time.monotonic() < deadline, "the catch-up did not start"
        time.sleep(0.02)
    host.kill()  # SIGKILL mid catch-up
    host.wait()
    at_kill = len(set(outbox_values(outbox)))
    assert at_kill < N, "the catch-up finished before the kill: the test proves nothing"

    host = run_host(site_file)
    try:
        deadline = time.monotonic() + 90
        while len(set(outbox_values(outbox))) < N and time.monotonic() < deadline:
            assert host.poll() is None
            time.sleep(0.2)
    finally:
        host.send_signal(signal.SIGTERM)
        host.wait(30)
    values = set(outbox_values(outbox))
    missing = N - len(values & set(map(float, range(N))))
    assert missing == 0, f"{missing} readings the device broker had handed over were lost (at the kill: {at_kill} stored)"
