"""Report-by-exception (policy mode ``exception``) on real measured series.

Each series is replayed through the sync policy in connector-sized batches; what the policy emits
is decoded from the very blocks the outbox would store, and the cloud's view is rebuilt by holding
the last value received. Every reading read must be within the deadband of that view, and the
heartbeat must bound the gap between readings sent. The deadbands are the ones an integrator
would set from the nameplate (1 % of a 3.4 kW inverter's rating) or as a percent of the value,
not values fitted to these series.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edgeplane.bus import Batch
from edgeplane.sync.codec import Record, decode_block, encode_envelope
from edgeplane.sync.config import PolicyRule, SyncConfig
from edgeplane.sync.policy import PolicyMapper

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
BATCH = 96  # readings per connector batch


def _config(rule: dict) -> SyncConfig:
    return SyncConfig.model_validate({"uplink": {"url": "mqtt://127.0.0.1:1883"}, "policy": [rule]})


def _replay(topic: str, ts: np.ndarray, values: np.ndarray, rule: dict) -> tuple[list, PolicyMapper]:
    mapper = PolicyMapper(_config(rule))
    items = []
    for start in range(0, len(ts), BATCH):
        batch = Batch(topic, ts[start:start + BATCH], values[start:start + BATCH])
        items += mapper.map([batch], float(ts[min(start + BATCH, len(ts)) - 1]))
    return items, mapper


def _sent(items: list) -> tuple[np.ndarray, np.ndarray]:
    blocks = [decode_block(item.block) for item in items]
    assert all(b["kind"] == "raw" for b in blocks)
    return (np.concatenate([b["ts"] for b in blocks]), np.concatenate([b["values"] for b in blocks]))


def _envelope_bytes(items: list) -> int:
    records = [Record(i.stream, n, i.kind, i.priority, i.count, i.created, i.block) for n, i in enumerate(items)]
    return len(encode_envelope("site", 0.0, records, "zstd"))


def _check_reconstruction(ts, values, sent_ts, sent_values, threshold) -> float:
    """Hold the last value sent; every reading read must be within ``threshold(held)`` of it."""
    held_at = np.searchsorted(sent_ts, ts, side="right") - 1
    assert held_at.min() >= 0, "the first reading must be sent"
    held = sent_values[held_at]
    ok = ~np.isnan(values)
    assert np.array_equal(np.isnan(held), ~ok), "a NaN (and the return from one) must be sent at once"
    error = np.abs(values[ok] - held[ok])
    allowed = threshold(held[ok])
    assert (error <= allowed + 1e-9).all(), f"worst error {error.max():g} beyond the deadband"
    return float(error.max())


def _report(name: str, ts, items_exc, items_raw, worst: float) -> None:
    sent = sum(i.count for i in items_exc)
    up, raw = _envelope_bytes(items_exc), _envelope_bytes(items_raw)
    print(f"\n{name}: read {len(ts)} readings, sent {sent} ({sent / len(ts):.1%}); envelope bytes up {up} "
          f"vs {raw} raw ({up / raw:.1%}), {up / len(ts):.2f} B per reading read; worst error {worst:g}")


def test_pv_power_absolute_deadband_and_heartbeat():
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(DATA / "pv" / "system_50_ac_power_2011_2012.parquet")
    ts = (pd.to_datetime(frame["measured_on"], utc=True).astype("int64") / 1e9).to_numpy()
    values = frame["ac_power_2"].to_numpy(dtype=np.float64)
    rule = {"topics": "inv1/ac_power", "mode": "exception", "deadband": 34.0, "max_interval": "1h"}
    items, mapper = _replay("inv1/ac_power", ts, values, rule)
    raw_items, _ = _replay("inv1/ac_power", ts, values, {"topics": "inv1/ac_power", "mode": "raw"})
    sent_ts, sent_values = _sent(items)
    worst = _check_reconstruction(ts, values, sent_ts, sent_values, lambda held: np.full_like(held, 34.0))
    # heartbeat: never more than max_interval plus one sampling period without a reading
    assert np.diff(sent_ts).max() <= 3600 + 900
    assert mapper.suppressed == len(ts) - len(sent_ts) > 0
    assert _envelope_bytes(items) < _envelope_bytes(raw_items)
    _report("PV system 50 AC power, deadband 34 W, heartbeat 1 h", ts, items, raw_items, worst)


def test_bearing_vibration_percent_deadband():
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(DATA / "ims" / "merged_dataset_BearingTest_2.csv")
    ts = (pd.to_datetime(frame.iloc[:, 0]).astype("int64") / 1e9).to_numpy()
    for column in ("Bearing 1", "Bearing 3"):
        values = frame[column].to_numpy(dtype=np.float64)
        topic = f"bearing/{column.split()[1]}"
        rule = {"topics": "bearing/+", "mode": "exception", "deadband": "5%", "max_interval": "6h"}
        items, mapper = _replay(topic, ts, values, rule)
        raw_items, _ = _replay(topic, ts, values, {"topics": "bearing/+", "mode": "raw"})
        sent_ts, sent_values = _sent(items)
        worst = _check_reconstruction(ts, values, sent_ts, sent_values, lambda held: 0.05 * np.abs(held))
        assert np.diff(sent_ts).max() <= 6 * 3600 + 600 + 1
        assert 0 < len(sent_ts) < len(ts)
        # the run to failure is where the bearing changes: the last 5 % of the record is sent far
        # more densely than the healthy first half
        tail = ts[int(0.95 * len(ts))]
        assert (sent_ts >= tail).sum() / (ts >= tail).sum() > (sent_ts < ts[len(ts) // 2]).sum() / (len(ts) // 2)
        _report(f"IMS test 2 {column} mean |vibration|, deadband 5 %, heartbeat 6 h", ts, items, raw_items, worst)


def test_exception_mode_sends_changes_of_quality_and_text():
    mapper = PolicyMapper(_config({"topics": "plc/#", "mode": "exception", "deadband": 0}))
    ts = np.arange(6.0)
    batch = Batch("plc/state", ts, np.array(["run", "run", "stop", "stop", "stop", "run"], dtype=object))
    (item,) = mapper.map([batch], 6.0)
    assert decode_block(item.block)["values"] == ["run", "stop", "run"]
    quality = np.array([0, 0, 1, 1, 0, 0], dtype=np.uint8)
    (item,) = mapper.map([Batch("plc/speed", ts, np.full(6, 3.0), quality)], 6.0)
    assert decode_block(item.block)["ts"].tolist() == [0.0, 2.0, 4.0]
    assert mapper.suppressed == 3 + 3


@pytest.mark.parametrize("rule, message", [
    ({"topics": "a/b", "mode": "exception"}, "needs a 'deadband'"),
    ({"topics": "a/b", "mode": "raw", "deadband": 1}, "only apply to mode 'exception'"),
    ({"topics": "a/b", "mode": "exception", "deadband": "lots"}, "is not a deadband"),
    ({"topics": "a/b", "mode": "exception", "deadband": -1}, ">= 0"),
])
def test_bad_exception_rules_are_refused_with_the_fix(rule, message):
    with pytest.raises(ValidationError, match=message):
        _config(rule)


def test_deadband_round_trips_through_the_site_document():
    config = _config({"topics": "a/b", "mode": "exception", "deadband": "2%", "max_interval": "15min"})
    dumped = config.model_dump(mode="json")
    assert dumped["policy"][0]["deadband"] == "2%"
    assert SyncConfig.model_validate(dumped) == config
