"""MQTT ingest: messages/s through the edgeplane MQTT connector into the bus vs a raw paho subscriber.

Both run against the same Mosquitto broker in the same run, on the same workload: N QoS 1
messages queued by the broker for a persistent session while the subscriber is away, then
drained as fast as the subscriber takes them (so the publisher does not compete for the CPU).

* raw: a paho-mqtt 2.x client whose on_message only counts; timed from connect() to the N-th message;
* connector: a whole edgeplane host with one ``connector: mqtt`` device (decoding, topic mapping,
  columnar batches on the bus); timed from host start to the N-th reading on the bus.

The ratio so timed includes the host's start (config, plugins, connect) on the connector's side.
The drain ratio sets starting aside: each side from its first message (raw: first on_message;
connector: first reading on the bus, seen within a millisecond) to its N-th.

Usage: python benchmarks/mqtt.py [--messages 20000] [--repeat 2] [--json]
Needs mosquitto (apt-get install mosquitto) and edgeplane-mqtt installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgeplane.testing import run_host
from edgeplane_mqtt import plugin
from edgeplane_mqtt.testing import Mosquitto

SCENARIOS = {
    # name: (payload maker, connector mapping)
    "json": (lambda i: json.dumps({"v": i * 0.5, "ts": 1_700_000_000_000 + i}).encode(),
             {"topic": "bench/{machine}/{point}", "decoder": "json", "json": {"value": "v", "timestamp": "ts"}}),
    "number": (lambda i: str(i * 0.5).encode(), {"topic": "bench/{machine}/{point}", "decoder": "number"}),
}
TOPICS = [f"bench/m{m}/p{p}" for m in range(4) for p in range(5)]  # 20 points


def _session_properties() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 600
    return props


def _client(client_id: str) -> paho.Client:
    return paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)


def _register_session(broker: Mosquitto, client_id: str) -> None:
    """Create the persistent session and its subscription, then leave."""
    subscribed = threading.Event()
    client = _client(client_id)
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(broker.host, broker.port, clean_start=True, properties=_session_properties())
    client.loop_start()
    client.subscribe("bench/#", qos=1)
    if not subscribed.wait(10):
        raise RuntimeError("no SUBACK from the broker")
    client.disconnect()
    client.loop_stop()


def _publish(broker: Mosquitto, n: int, make_payload) -> None:
    client = _client("bench-publisher")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos = [client.publish(TOPICS[i % len(TOPICS)], make_payload(i), qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def run_raw(broker: Mosquitto, n: int, make_payload) -> tuple[float, float, float]:
    client_id = f"bench-raw-{time.monotonic_ns()}"
    _register_session(broker, client_id)
    _publish(broker, n, make_payload)
    done = threading.Event()
    count = 0
    first = last = 0.0

    def on_message(client, userdata, message):
        nonlocal count, first, last
        count += 1
        if count == 1:
            first = time.perf_counter()
        if count == n:
            last = time.perf_counter()
            done.set()

    client = _client(client_id)
    client.on_message = on_message
    start, cpu0 = time.perf_counter(), time.process_time()
    client.connect(broker.host, broker.port, clean_start=False, properties=_session_properties())
    client.loop_start()
    if not done.wait(300):
        raise RuntimeError(f"raw subscriber got {count} of {n} messages")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    client.disconnect()
    client.loop_stop()
    return n / elapsed, cpu / n * 1e6, (n - 1) / (last - first)


async def run_connector(broker: Mosquitto, n: int, make_payload, mapping: dict, store: Path) -> tuple[float, dict]:
    client_id = f"bench-conn-{time.monotonic_ns()}"
    site = {"site": {"id": "bench"}, "devices": {"plant": {
        "connector": "mqtt", "url": broker.url, "client_id": client_id, "clean_start": False,
        "session_expiry": 600, "qos": 1, "queue_size": max(200_000, n), "subscribe": [mapping]}}}
    await asyncio.to_thread(_register_session, broker, client_id)
    await asyncio.to_thread(_publish, broker, n, make_payload)
    start, cpu0 = time.perf_counter(), time.process_time()
    async with run_host(site, plugins=[plugin], store_dir=store) as host:
        deadline = start + 300
        first = None
        while host.bus.published_points < n:
            if first is None and host.bus.published_points:
                first = time.perf_counter()
            if time.perf_counter() > deadline:
                raise RuntimeError(f"connector published {host.bus.published_points} of {n} readings")
            await asyncio.sleep(0.001)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
        device = host.device("plant")
        drained = time.perf_counter() - (first if first is not None else start)
        stats = {"batches": host.bus.published_batches, "drops": sum(device.drops.values()), "cpu_us": cpu / n * 1e6,
                 "drain": (n - 1) / drained}
    return n / elapsed, stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per scenario and side")
    parser.add_argument("--repeat", type=int, default=2, help="runs per side, alternating; the best of each is reported")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    n = args.messages
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp), max_inflight_messages=1000) as broker:
        for name, (make_payload, mapping) in SCENARIOS.items():
            raws, connectors, raw_cpu, connector_cpu, raw_drain, connector_drain = [], [], [], [], [], []
            for i in range(args.repeat):  # alternating, so drift in the machine's load hits both sides
                rate, cpu, drain = run_raw(broker, n, make_payload)
                raws.append(rate)
                raw_cpu.append(cpu)
                raw_drain.append(drain)
                rate, stats = asyncio.run(run_connector(broker, n, make_payload, mapping, Path(tmp) / f"store-{name}-{i}"))
                connectors.append(rate)
                connector_cpu.append(stats.pop("cpu_us"))
                connector_drain.append(stats.pop("drain"))
            raw, connector = max(raws), max(connectors)
            # CPU of this process per message (the broker and publisher are not in it): load from
            # elsewhere on the machine moves it far less than it moves messages per second
            results[name] = {"raw": raw, "connector": connector, "ratio": connector / raw, **stats,
                             "raw_cpu_us": min(raw_cpu), "connector_cpu_us": min(connector_cpu),
                             "cpu_ratio": min(raw_cpu) / min(connector_cpu),
                             "drain_ratio": max(connector_drain) / max(raw_drain)}

    print(f"MQTT ingest, {n} QoS 1 messages per run (20 topics), Mosquitto on loopback, MQTT 5, best of {args.repeat}")
    print(f"{'decoder':<8} {'raw paho msg/s':>15} {'connector msg/s':>16} {'ratio':>6} {'bus batches':>12} {'drops':>6}"
          f" {'raw CPU us/msg':>15} {'conn. CPU us/msg':>17} {'CPU ratio':>9} {'drain ratio':>11}")
    for name, r in results.items():
        print(f"{name:<8} {r['raw']:>15,.0f} {r['connector']:>16,.0f} {r['ratio']:>6.2f} {r['batches']:>12,} {r['drops']:>6}"
              f" {r['raw_cpu_us']:>15.1f} {r['connector_cpu_us']:>17.1f} {r['cpu_ratio']:>9.2f} {r['drain_ratio']:>11.2f}")
    print("target: ratio >= 0.9; CPU ratio = raw CPU per message / connector CPU per message (both in this process)")
    if args.json:
        figures = {"messages": n}
        for name, r in results.items():
            figures[f"raw_{name}_msgs_per_s"] = round(r["raw"])
            figures[f"connector_{name}_msgs_per_s"] = round(r["connector"])
            figures[f"ratio_vs_raw_{name}"] = round(r["ratio"], 3)
            figures[f"raw_{name}_cpu_us_per_msg"] = round(r["raw_cpu_us"], 2)
            figures[f"connector_{name}_cpu_us_per_msg"] = round(r["connector_cpu_us"], 2)
            figures[f"cpu_ratio_vs_raw_{name}"] = round(r["cpu_ratio"], 3)
            figures[f"drain_ratio_vs_raw_{name}"] = round(r["drain_ratio"], 3)
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
