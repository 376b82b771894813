"""Bytes and CPU per reading of each uplink format on the same telemetry, and what
report-by-exception saves on real series.

    python benchmarks/uplink_formats.py [--json] [--seconds 0.5]

Telemetry: NREL SERF West (15 inverter points every 15 min, 480 rows) from ../shared/data/pv,
encoded as the sync layer hands it to a transport, in two regimes:

* live: one reading per point per message round (the link is up, each poll goes at once);
* backlog: 96 readings per point (a day) per round (the link came back after an outage).

Formats, each from the same outbox records: the native envelope (zstd, lz4, uncompressed),
Sparkplug B (edgeplane-sparkplug: DDATA by alias, births counted), ThingsBoard gateway JSON
(edgeplane-thingsboard). Bytes are MQTT payload plus topic; CPU is process time of the encoding
(not the network) per reading. The peer row encodes the same readings as Sparkplug DDATA with
pysparkplug (its own environment, .venv/peers/sparkplug) for comparison.

Report-by-exception: PV AC power (system 50, 2 years; SERF West) with a deadband of 1 % of the
inverter's rating and a 1 h heartbeat, IMS bearing vibration with 5 % and 6 h: readings sent over
read, and bytes up in each format over the same format in raw mode.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from edgeplane import Batch, WallClock
from edgeplane.metrics import Metrics
from edgeplane.sync.codec import Record, encode_envelope
from edgeplane.sync.policy import PolicyMapper
from edgeplane.sync.config import SyncConfig
from edgeplane.sync.transport import UplinkSite
from edgeplane_sparkplug import SparkplugConfig, SparkplugTransport
from edgeplane_sparkplug.testing import PEER_PYTHON
from edgeplane_thingsboard import ThingsBoardConfig, ThingsBoardTransport

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NATIVE_TOPIC = "edgeplane/site-1/up/data"


def serf_west() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    frame = pd.read_csv(DATA / "pv" / "serf_west_15min.csv")
    ts = (pd.to_datetime(frame.iloc[:, 0], utc=True).astype("int64") / 1e9).to_numpy()
    return ts, {c.split("__")[0]: frame[c].to_numpy(dtype=np.float64) for c in frame.columns[1:]}


def rounds(ts: np.ndarray, columns: dict[str, np.ndarray], per_round: int, rule: dict[str, Any]) -> list[list[Record]]:
    """The outbox records of each message round, made by the sync policy from per-point batches."""
    mapper = PolicyMapper(SyncConfig.model_validate({"uplink": {"url": "mqtt://x:1"}, "policy": [rule]}))
    out, seq = [], 0
    for start in range(0, len(ts), per_round):
        batches = [Batch(f"inv1/{name}", ts[start:start + per_round], values[start:start + per_round])
                   for name, values in columns.items()]
        records = []
        for item in mapper.map(batches, float(ts[start])):
            seq += 1
            records.append(Record(item.stream, seq, item.kind, item.priority, item.count, item.created, item.block))
        if records:
            out.append(records)
    return out


def _site(tmp: Path) -> UplinkSite:
    return UplinkSite(site_id="site-1", sync=SyncConfig.model_validate({"uplink": {"url": "mqtt://x:1"}}),
                      store_dir=tmp, clock=WallClock(), metrics=Metrics())


def encoders(tmp: Path) -> dict[str, Callable[[list[Record]], int]]:
    """Format name -> encode one round, return its bytes (payloads + topics). Fresh state per call."""

    def native(codec: str) -> Callable[[list[Record]], int]:
        return lambda records: len(encode_envelope("site-1", 0.0, records, codec)) + len(NATIVE_TOPIC)

    def sparkplug() -> Callable[[list[Record]], int]:
        transport = SparkplugTransport(SparkplugConfig(url="mqtt://x:1", group_id="g"), client_id="site-1")
        transport.attach(_site(tmp))
        transport._ready_at = 0.0  # a live session: records stored since the link came up are not historical

        def encode(records: list[Record]) -> int:
            return sum(len(p.SerializeToString()) + len(t) for t, p in transport.format(records))
        return encode

    def thingsboard() -> Callable[[list[Record]], int]:
        transport = ThingsBoardTransport(ThingsBoardConfig(url="mqtt://x:1"), client_id="site-1")
        transport.attach(_site(tmp))

        def encode(records: list[Record]) -> int:
            return sum(len(json.dumps(d, separators=(",", ":"), default=str).encode()) + len(t)
                       for t, d in transport.format(records))
        return encode

    return {"native zstd": native("zstd"), "native lz4": native("lz4"), "native none": native("none"),
            "sparkplug": sparkplug(), "thingsboard": thingsboard()}


def measure(all_rounds: list[list[Record]], seconds: float, tmp: Path) -> dict[str, dict[str, float]]:
    readings = sum(r.count for records in all_rounds for r in records)
    names = list(encoders(tmp))
    out = {}
    for name in names:
        encode = encoders(tmp)[name]
        total = sum(encode(records) for records in all_rounds)  # first pass: bytes (births included)
        reps, cpu = 0, 0.0
        while cpu < seconds:
            encode = encoders(tmp)[name]
            started = time.process_time()
            for records in all_rounds:
                encode(records)
            cpu += time.process_time() - started
            reps += 1
        out[name] = {"bytes_per_reading": total / readings, "cpu_us_per_reading": cpu / reps / readings * 1e6,
                     "messages": len(all_rounds)}
    return out


_PEER = r"""
import json, sys, time
import pysparkplug as spb
ts, values = json.load(sys.stdin)
per_round, rounds = int(sys.argv[1]), int(sys.argv[2])
started = time.process_time(); total = 0
for _ in range(rounds):
    for start in range(0, len(ts), per_round):
        metrics = tuple(spb.Metric(timestamp=int(t * 1000), name=None, alias=a + 1, datatype=spb.DataType.DOUBLE, value=v)
                        for a, column in enumerate(values) for t, v in zip(ts[start:start + per_round], column[start:start + per_round]))
        total += len(spb.DData(timestamp=int(time.time() * 1000), seq=0, metrics=metrics).encode())
print(json.dumps({"cpu": (time.process_time() - started) / rounds, "bytes": total / rounds}))
"""


def peer(ts: np.ndarray, columns: dict[str, np.ndarray], per_round: int) -> dict[str, float] | None:
    if not PEER_PYTHON.exists():
        return None
    values = [np.nan_to_num(v).tolist() for v in columns.values()]
    result = subprocess.run([str(PEER_PYTHON), "-c", _PEER, str(per_round), "3"], input=json.dumps([ts.tolist(), values]),
                            capture_output=True, text=True, check=True)
    doc = json.loads(result.stdout)
    readings = len(ts) * len(values)
    topic = len("spBv1.0/g/DDATA/site-1/inv1") * -(-len(ts) // per_round)
    return {"bytes_per_reading": (doc["bytes"] + topic) / readings, "cpu_us_per_reading": doc["cpu"] / readings * 1e6}


def exception_savings(tmp: Path) -> list[dict[str, Any]]:
    sets = []
    frame = pd.read_parquet(DATA / "pv" / "system_50_ac_power_2011_2012.parquet")
    ts = (pd.to_datetime(frame["measured_on"], utc=True).astype("int64") / 1e9).to_numpy()
    sets.append(("PV system 50 AC power (3.4 kW), 2 years", ts, {"ac_power": frame["ac_power_2"].to_numpy(np.float64)},
                 {"deadband": 34.0, "max_interval": "1h"}))
    ts, columns = serf_west()
    sets.append(("SERF West AC power (about 6 kW peak)", ts, {"ac_power": columns["ac_power"]},
                 {"deadband": 60.0, "max_interval": "1h"}))
    ims = pd.read_csv(DATA / "ims" / "merged_dataset_BearingTest_2.csv")
    ts = (pd.to_datetime(ims.iloc[:, 0]).astype("int64") / 1e9).to_numpy()
    sets.append(("IMS test 2, 4 bearings' mean |vibration|", ts,
                 {c.replace(" ", "_"): ims[c].to_numpy(np.float64) for c in ims.columns[1:]},
                 {"deadband": "5%", "max_interval": "6h"}))
    out = []
    for name, ts, columns, exception in sets:
        raw = rounds(ts, columns, 96, {"topics": "inv1/#", "mode": "raw"})
        exc = rounds(ts, columns, 96, {"topics": "inv1/#", "mode": "exception", **exception})
        read = sum(r.count for records in raw for r in records)
        sent = sum(r.count for records in exc for r in records)
        row: dict[str, Any] = {"series": name, "readings_read": read, "readings_sent": sent}
        for fmt in ("native zstd", "sparkplug", "thingsboard"):
            encode = encoders(tmp)[fmt]
            up = sum(encode(records) for records in exc)
            encode = encoders(tmp)[fmt]
            raw_bytes = sum(encode(records) for records in raw)
            row[fmt] = {"bytes_up": up, "bytes_raw_mode": raw_bytes}
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--seconds", type=float, default=0.5, help="CPU seconds per format and regime at least")
    args = parser.parse_args()
    ts, columns = serf_west()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for regime, per_round in (("live", 1), ("backlog", 96)):
            all_rounds = rounds(ts, columns, per_round, {"topics": "inv1/#", "mode": "raw"})
            results[regime] = measure(all_rounds, args.seconds, tmp)
            peer_result = peer(ts, columns, per_round)
            if peer_result is not None:
                results[regime]["pysparkplug (peer, encode only)"] = peer_result
        savings = exception_savings(tmp)

    readings = len(ts) * len(columns)
    print(f"uplink formats on SERF West: {len(columns)} points x {len(ts)} rows = {readings} readings")
    for regime, rows in results.items():
        print(f"\n{regime} ({'1 reading' if regime == 'live' else '96 readings'} per point per message round)")
        print(f"{'format':34} {'bytes/reading':>14} {'CPU us/reading':>15}")
        for name, row in rows.items():
            print(f"{name:34} {row['bytes_per_reading']:14.2f} {row['cpu_us_per_reading']:15.2f}")
    print("\nreport-by-exception: readings sent / read; bytes up / bytes of the same format in raw mode")
    print(f"{'series':42} {'sent/read':>10} {'native zstd':>12} {'sparkplug':>10} {'thingsboard':>12}")
    for row in savings:
        ratios = [row[f]["bytes_up"] / row[f]["bytes_raw_mode"] for f in ("native zstd", "sparkplug", "thingsboard")]
        print(f"{row['series']:42} {row['readings_sent'] / row['readings_read']:10.1%} "
              f"{ratios[0]:12.1%} {ratios[1]:10.1%} {ratios[2]:12.1%}")
    if args.json:
        flat: dict[str, Any] = {}
        for regime, rows in results.items():
            for name, row in rows.items():
                key = name.split(" (")[0].replace(" ", "_")
                flat[f"{regime}_{key}_bytes_per_reading"] = round(row["bytes_per_reading"], 3)
                flat[f"{regime}_{key}_cpu_us_per_reading"] = round(row["cpu_us_per_reading"], 3)
        for n, row in enumerate(savings):
            flat[f"rbe_{n}_sent_over_read"] = round(row["readings_sent"] / row["readings_read"], 4)
            for fmt in ("native zstd", "sparkplug", "thingsboard"):
                flat[f"rbe_{n}_{fmt.replace(' ', '_')}_bytes_up_over_raw_mode"] = round(
                    row[fmt]["bytes_up"] / row[fmt]["bytes_raw_mode"], 4)
        print(json.dumps(flat))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
