"""The peer benchmark's counting and point map (benchmarks/peer_modbus_mqtt.py); the benchmark itself never runs here."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path

import pytest

from edgeplane.sync.codec import Record, encode_envelope

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peer_modbus_mqtt.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("peer_modbus_mqtt", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_thingsboard_telemetry_counts_one_reading_per_key_per_entry(bench):
    with_ts = {"tb-bench": [{"ts": 1, "values": {"a": 1, "b": 2.5}}, {"ts": 2, "values": {"a": 3}}],
               "other": [{"ts": 1, "values": {"c": True}}]}
    without_ts = {"tb-bench": [{"a": 1, "b": 2, "c": 3}]}
    assert bench.count_readings(bench.PEER_TELEMETRY, json.dumps(with_ts).encode()) == 4
    assert bench.count_readings(bench.PEER_TELEMETRY, json.dumps(without_ts).encode()) == 3
    with pytest.raises(ValueError):
        bench.count_readings(bench.PEER_TELEMETRY, b"[1, 2]")


def test_edgeplane_envelope_counts_only_raw_records(bench):
    records = [Record("plc/p000_uint16", 1, "raw", 1, 200, 0.0, b"x" * 40),
               Record("plc/p001_int16", 2, "raw", 1, 7, 0.0, b"y" * 10),
               Record("alerts/a", 3, "events", 0, 5, 0.0, b"z")]
    payload = encode_envelope("bench", 0.0, records, "zstd")
    assert bench.count_readings("edgeplane/bench/up/normal", payload) == 207
    with pytest.raises(ValueError):
        bench.count_readings("edgeplane/bench/up/state", b'{"reported": {}}')


def test_point_map_is_200_points_in_readable_blocks_holding_their_values(bench):
    points = bench.point_map()
    registers = bench.holding_registers(points)
    assert len(points) == 200 and len({name for name, *_ in points}) == 200
    for block in range(bench.BLOCKS):
        addresses = [a for _, a, _, _ in points if block * bench.BLOCK_STRIDE <= a < (block + 1) * bench.BLOCK_STRIDE]
        assert max(addresses) + 2 - min(addresses) <= 125  # one Modbus read per block
    for _, address, kind, value in points:
        width = 2 if kind in ("float32", "uint32") else 1
        raw = b"".join(r.to_bytes(2, "big") for r in registers[address : address + width])
        assert struct.unpack(bench.STRUCT_FORMATS[kind], raw)[0] == value
