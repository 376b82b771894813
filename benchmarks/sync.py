"""Benchmark of the sync layer: durable enqueue, drain to Mosquitto after an outage, compression
against JSON on real PV telemetry, and bytes sent over bytes read for an events-only policy.

    python benchmarks/sync.py [--json] [--readings 1000000]

Needs ``mosquitto`` on PATH (or /usr/sbin) and, for the parquet files, pandas + pyarrow
(benchmark-only); the CSV figure needs neither. Raw-library baselines run in the same process:
plain ``sqlite3`` inserts for the enqueue, plain paho-mqtt QoS 1 one-reading messages for the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sqlite3
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from edgeplane import Batch, Bus, Event, WallClock
from edgeplane.metrics import Metrics
from edgeplane.sync import SyncConfig, SyncService
from edgeplane.sync.codec import Record, compress, encode_batch, encode_envelope
from edgeplane.sync.outbox import Outbox, OutboxItem
from edgeplane.sync.policy import PolicyMapper
from edgeplane.testing import Mosquitto, free_port

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pv"


def telemetry() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Real PV series: stream -> (ts, values). serf_west CSV (always), system 50 parquet (if pandas)."""
    streams: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with open(DATA / "serf_west_15min.csv") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    ts = np.array([datetime.fromisoformat(r[0]).timestamp() for r in body])
    for j, name in enumerate(header[1:], start=1):
        values = np.array([float(r[j]) if r[j] else np.nan for r in body])
        streams[f"serf/{name.split('__')[0]}"] = (ts, values)
    try:
        import pandas as pd

        ac = pd.read_parquet(DATA / "system_50_ac_power_2011_2012.parquet").dropna()
        streams["sys50/ac_power"] = (ac["measured_on"].astype("int64").to_numpy() / 1e6, ac["ac_power_2"].to_numpy(np.float64))
        wx = pd.read_parquet(DATA / "system_50_psm3_2011_2012.parquet")
        wts = wx["index"].astype("int64").to_numpy() / 1e6
        for col in ("temp_air", "ghi", "ghi_clear", "dni_clear", "dhi_clear"):
            streams[f"sys50/{col}"] = (wts, wx[col].to_numpy(np.float64))
    except ImportError:
        pass
    return streams


def json_bytes(topic: str, ts: np.ndarray, values: np.ndarray) -> int:
    """One JSON object per reading, the usual naive uplink."""
    return sum(len(json.dumps({"topic": topic, "ts": float(t), "value": float(v), "quality": 0}, separators=(",", ":")))
               for t, v in zip(ts, values))


def bench_compression(streams) -> dict[str, float]:
    out: dict[str, float] = {}
    total_json = 0
    json_docs = []
    records_by_src: dict[str, list[Record]] = {"serf": [], "sys50": []}
    for topic, (ts, values) in streams.items():
        total_json += json_bytes(topic, ts, values)
        json_docs.append((topic, ts, values))
        # a record per day of readings, as a site with a 1-day outage would hold them
        chunk = 96
        for i in range(0, len(ts), chunk):
            block, n = encode_batch(Batch.of(topic, ts[i : i + chunk], values[i : i + chunk]))
            records_by_src[topic.split("/")[0]].append(Record(topic, len(records_by_src[topic.split("/")[0]]), "raw", 2, n, 0.0, block))
    readings = sum(len(ts) for ts, _ in streams.values())
    for codec in ("zstd", "lz4", "none"):
        sent = 0
        t0 = time.perf_counter()
        for records in records_by_src.values():
            # envelopes of ~256 kB uncompressed, as the drain builds them
            batch, size = [], 0
            for r in records:
                batch.append(r)
                size += len(r.block)
                if size >= 256_000:
                    sent += len(encode_envelope("plant-1", 0.0, batch, codec))
                    batch, size = [], 0
            if batch:
                sent += len(encode_envelope("plant-1", 0.0, batch, codec))
        elapsed = time.perf_counter() - t0
        out[f"ratio_vs_json_{codec}"] = total_json / sent
        out[f"{codec}_encode_readings_per_s"] = readings / elapsed
    # JSON compressed with zstd, for honesty: how much the columnar layout adds over just compressing
    ndjson = "\n".join(json.dumps({"topic": t, "ts": float(a), "value": float(b), "quality": 0}, separators=(",", ":"))
                       for t, ts, vs in json_docs for a, b in zip(ts, vs)).encode()
    out["ratio_vs_json_zstd_json"] = total_json / len(compress(ndjson, "zstd"))
    out["compression_readings"] = readings
    return out


def bench_enqueue(folder: Path, readings: int, streams, batch_size: int = 100, per_txn: int = 50) -> dict[str, float]:
    out: dict[str, float] = {}
    ts = np.arange(batch_size, dtype=float)
    chunks = real_chunks(streams, batch_size)
    batches = readings // batch_size
    for durability in ("power", "process"):
        box = Outbox(folder / f"enqueue-{durability}.db", durability=durability, quota=10**11)
        box.open()
        t0 = time.perf_counter()
        for start in range(0, batches, per_txn):
            items = []
            for k in range(start, min(start + per_txn, batches)):
                block, n = encode_batch(Batch(f"dev{k % 20}/p", ts + k * batch_size, chunks[k % len(chunks)]))
                items.append(OutboxItem(f"dev{k % 20}/p", 2, "raw", n, 0.0, 1e12, block))
            box.put_many(items)
        out[f"enqueue_readings_per_s_{durability}"] = batches * batch_size / (time.perf_counter() - t0)
        box.close()
    # the bus path: one reading per batch, coalesced by the policy mapper (one block per topic per round)
    config = SyncConfig.model_validate({"uplink": {"url": "mqtt://127.0.0.1:1"}, "policy": [{"topics": "#"}]})
    mapper = PolicyMapper(config)
    box = Outbox(folder / "enqueue-bus.db", durability="power", quota=10**11)
    box.open()
    single = [Batch.of(f"dev{i % 20}/p", [float(i)], [float(i)]) for i in range(min(readings, 200_000))]
    t0 = time.perf_counter()
    for i in range(0, len(single), 5000):
        box.put_many(mapper.map(single[i : i + 5000], 0.0))
    out["enqueue_readings_per_s_single_reading_batches"] = len(single) / (time.perf_counter() - t0)
    box.close()
    # raw library: sqlite3 executemany of one row per reading, same transaction size, synchronous=FULL
    db = sqlite3.connect(folder / "raw.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE r (topic TEXT, ts REAL, value REAL)")
    rows_per_txn = batch_size * per_txn
    n_raw = min(readings, 500_000)
    t0 = time.perf_counter()
    for start in range(0, n_raw, rows_per_txn):
        db.execute("BEGIN")
        db.executemany("INSERT INTO r VALUES (?,?,?)", [("dev/p", float(i), 1.0) for i in range(start, start + rows_per_txn)])
        db.execute("COMMIT")
    out["raw_sqlite_row_per_reading_per_s"] = n_raw / (time.perf_counter() - t0)
    db.close()
    return out


def real_chunks(streams, size: int = 100) -> list[np.ndarray]:
    """Real PV values in chunks of ``size``, to be cycled through (so compression is not flattered)."""
    chunks = []
    for _, values in streams.values():
        values = values[~np.isnan(values)]
        chunks += [values[i : i + size] for i in range(0, len(values) - size + 1, size)]
    return chunks


async def bench_drain(folder: Path, readings: int, streams) -> dict[str, float]:
    """Fill the outbox while the broker is down, then time the drain once it is up."""
    broker_dir = folder / "broker"
    broker_dir.mkdir()
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    config = SyncConfig.model_validate({"uplink": {"url": url, "inflight": 32}, "policy": [{"topics": "dev*/#", "priority": "low"}],
                                        "durability": "power", "quota": 10**11})
    bus = Bus()
    service = SyncService(config, site_id="bench", bus=bus, clock=WallClock(), metrics=Metrics(), store_dir=folder / "site")
    await service.start()
    chunks = real_chunks(streams)
    for k in range(readings // 100):
        await bus.publish(Batch(f"dev{k % 20}/p", np.arange(100.0) * 900 + k * 90_000, chunks[k % len(chunks)]))
    while service.outbox.total("enqueued_readings") < readings:
        await asyncio.sleep(0.05)
    mosq = Mosquitto(broker_dir, port=port).start()  # the link comes back: measure from here (includes reconnect)
    try:
        t0 = time.perf_counter()
        while service.outbox.backlog()["low"]["records"]:
            if time.perf_counter() - t0 > 120:
                raise RuntimeError(f"drain did not finish in 120 s: {service.status()}")
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        sent_bytes = service.bytes_sent
    finally:
        await service.stop()
    out = {"drain_readings_per_s": readings / elapsed, "drain_seconds": elapsed, "drain_readings": readings,
           "drain_mb_sent": sent_bytes / 1e6}
    # raw library: paho QoS 1, one reading per message
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="raw-bench", protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(32)
    client.connect("127.0.0.1", mosq.port)
    client.loop_start()
    n = 20_000
    payload = json.dumps({"topic": "dev1/p", "ts": 1.7e9, "value": 512.25, "quality": 0}).encode()
    t0 = time.perf_counter()
    infos = [client.publish("raw/dev1/p", payload, qos=1) for _ in range(n)]
    for info in infos:
        info.wait_for_publish(30)
    out["raw_paho_qos1_messages_per_s"] = n / (time.perf_counter() - t0)
    client.disconnect()
    client.loop_stop()
    mosq.stop()
    return out


def bench_events_only(streams) -> dict[str, float]:
    """A site that reads every PV stream but sends only alerts (ac power below 50% of expected)."""
    config = SyncConfig.model_validate({"uplink": {"url": "mqtt://127.0.0.1:1"},
                                        "policy": [{"topics": "alerts/#", "mode": "events", "priority": "high"},
                                                   {"topics": "#", "mode": "events"}]})
    mapper = PolicyMapper(config)
    bytes_read = 0
    items = []
    ts_all, ghi = streams.get("sys50/ghi", streams["serf/poa_irradiance"])
    ts_ac, ac = streams.get("sys50/ac_power", streams["serf/ac_power"])
    for topic, (ts, values) in streams.items():
        # what the devices delivered: a float32 register pair per value plus a timestamp
        bytes_read += len(ts) * (4 + 8)
        for i in range(0, len(ts), 96):
            items += mapper.map([Batch.of(topic, ts[i : i + 96], values[i : i + 96])], 0.0)
    expected = np.interp(ts_ac, ts_all, ghi) * (np.nanmax(ac) / max(np.nanmax(ghi), 1))
    low = (expected > 200 * np.nanmax(ac) / 1000) & (ac < 0.5 * expected)
    starts = np.flatnonzero(low & ~np.roll(low, 1))
    events = [Event("alerts/pv", "underperformance", float(ts_ac[i]), "solar.diagnosis",
                    {"ac_power": float(ac[i]), "expected": round(float(expected[i]), 1)}, "warning") for i in starts]
    items += mapper.map(events, 0.0)
    records = [Record(i.stream, k, i.kind, i.priority, i.count, i.created, i.block) for k, i in enumerate(items)]
    sent = len(encode_envelope("plant-1", 0.0, records, "zstd")) if records else 0
    return {"events_only_bytes_sent": sent, "events_only_bytes_read": bytes_read, "events_only_sent_over_read": sent / bytes_read,
            "events_only_events": len(events)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--readings", type=int, default=1_000_000, help="readings for the enqueue and drain runs")
    args = parser.parse_args()
    streams = telemetry()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results.update(bench_enqueue(folder, args.readings, streams))
        results.update(asyncio.run(bench_drain(folder, min(args.readings, 500_000), streams)))
    results.update(bench_compression(streams))
    results.update(bench_events_only(streams))
    rows = [
        ("durable enqueue, fsync per commit (readings/s)", results["enqueue_readings_per_s_power"], ">= 100,000"),
        ("durable enqueue, crash-safe only (readings/s)", results["enqueue_readings_per_s_process"], ""),
        ("durable enqueue, 1-reading batches (readings/s)", results["enqueue_readings_per_s_single_reading_batches"], ""),
        ("raw sqlite3, one row per reading (readings/s)", results["raw_sqlite_row_per_reading_per_s"], "baseline"),
        ("drain to Mosquitto after outage (readings/s)", results["drain_readings_per_s"], ">= 50,000"),
        ("raw paho QoS 1, one reading per message (msg/s)", results["raw_paho_qos1_messages_per_s"], "baseline"),
        ("compression vs JSON, zstd (x)", results["ratio_vs_json_zstd"], ">= 10"),
        ("compression vs JSON, lz4 (x)", results["ratio_vs_json_lz4"], ""),
        ("columnar, uncompressed vs JSON (x)", results["ratio_vs_json_none"], ""),
        ("JSON compressed with zstd vs JSON (x)", results["ratio_vs_json_zstd_json"], "baseline"),
        ("zstd envelope encode (readings/s)", results["zstd_encode_readings_per_s"], ""),
        ("lz4 envelope encode (readings/s)", results["lz4_encode_readings_per_s"], ""),
        ("events-only: bytes sent / bytes read", results["events_only_sent_over_read"], ""),
    ]
    print(f"{'figure':52} {'value':>14}  target")
    for name, value, target in rows:
        print(f"{name:52} {value:14,.4g}  {target}" if value < 10 else f"{name:52} {value:14,.0f}  {target}")
    print(f"(compression on {int(results['compression_readings']):,} real PV readings; drain {int(results['drain_readings']):,} "
          f"readings in {results['drain_seconds']:.2f} s, {results['drain_mb_sent']:.2f} MB sent; "
          f"{int(results['events_only_events'])} alerts sent)")
    if args.json:
        print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in results.items()}))


if __name__ == "__main__":
    sys.exit(main())
