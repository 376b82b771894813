"""CPU of the cloud ingest worker's decoding: uplink envelopes to rows ready for COPY.

The worker's own work per message between the stream and PostgreSQL is ``decode_uplink``:
decompress, parse the index, decode every record's block, check it, make its row. This runs it
on envelopes shaped as the sites send them, in one process with nothing else, and reports CPU
seconds per 1,000 readings, against the part no decoder can skip in the same run
(``decode_envelope``: decompression and the index, the blocks left as bytes):

* ``fleet``: one record of 10 one-second readings per point, 100 points (the fleet simulator's
  envelope, ``benchmarks/fleet.py``);
* ``poll``: one record of one reading per point, 200 points (what an edge host polling every
  second sends: the outbox holds one record per point and poll).

    python benchmarks/ingest_decode.py [--seconds 3] [--json]

Compare two trees in one run by putting one ahead of the editable installs:
``PYTHONPATH=<tree>/platform:<tree>/platform/cloud/src python benchmarks/ingest_decode.py``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from edgeplane_cloud.ingest import decode_uplink

from edgeplane import Batch
from edgeplane.sync.codec import Record, decode_envelope, encode_batch, encode_envelope


def envelope(points: int, readings: int, seed: int = 7) -> bytes:
    rng = np.random.default_rng(seed)
    start = time.time() - 3600
    records = []
    for p in range(points):
        ts = start + np.arange(readings, dtype=float)
        block, n = encode_batch(Batch.of(f"dev{p // 20}/p{p}", ts, 230.0 + rng.normal(size=readings)))
        records.append(Record(f"dev{p // 20}/p{p}", 2**40 + p, "raw", 2, n, start, block))
    return encode_envelope("bench-site", start, records, "zstd")


def cpu_per_1000(func, payload: bytes, readings: int, seconds: float) -> float:
    func(payload)  # warm
    calls = 0
    began = time.process_time()
    while time.process_time() - began < seconds:
        for _ in range(20):
            func(payload)
        calls += 20
    return (time.process_time() - began) / (calls * readings) * 1000


def main(args: argparse.Namespace) -> dict[str, float]:
    result: dict[str, float] = {}
    for name, points, readings in (("fleet", 100, 10), ("poll", 200, 1)):
        payload = envelope(points, readings)
        total = points * readings
        rows, dead = decode_uplink("edgeplane.bench-site.up.data", payload, {})
        assert dead is None and sum(r.count for r in rows) == total, dead
        worker = cpu_per_1000(lambda p: decode_uplink("edgeplane.bench-site.up.data", p, {}), payload, total,
                              args.seconds)
        floor = cpu_per_1000(decode_envelope, payload, total, args.seconds)
        result[f"{name}_cpu_s_per_1000_readings"] = round(worker, 6)
        result[f"{name}_envelope_parse_cpu_s_per_1000_readings"] = round(floor, 6)
        result[f"{name}_ratio_vs_envelope_parse"] = round(floor / worker, 3)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="CPU seconds per measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    result = main(args)
    for name, shape in (("fleet", "100 points x 10 readings"), ("poll", "200 points x 1 reading")):
        print(f"{name} ({shape}): decode_uplink {result[f'{name}_cpu_s_per_1000_readings'] * 1e3:.3f} ms CPU per 1,000 "
              f"readings; envelope parse alone {result[f'{name}_envelope_parse_cpu_s_per_1000_readings'] * 1e3:.3f} ms "
              f"(ratio {result[f'{name}_ratio_vs_envelope_parse']})")
    if args.json:
        print(json.dumps(result))
