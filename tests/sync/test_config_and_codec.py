"""The sync section's validation, the envelope format and the cloud CLI."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from edgeplane import Batch, Event
from edgeplane.sync import SyncConfig, decode_envelope, encode_envelope
from edgeplane_cloud.cli import cloud
from edgeplane_cloud.embedded import CloudStore
from edgeplane.sync.codec import EnvelopeError, Record, decode_block, encode_batch, encode_events


def test_sync_config_reads_durations_sizes_and_secrets():
    config = SyncConfig.model_validate({
        "uplink": {"url": "mqtts://cloud:8883", "username": "plant-1", "password": "s3cret", "backlog_rate": "600/min"},
        "policy": [{"topics": "*/ac_power", "mode": "aggregate", "window": "5min", "ttl": "7d", "priority": "high"}],
        "quota": "512MB", "compression": "lz4"})
    assert config.quota == 512_000_000 and config.uplink.backlog_rate == 10.0
    assert config.policy[0].window == 300 and config.policy[0].ttl == 7 * 86400
    assert "s3cret" not in repr(config)
    assert config.rule_for("inv1/ac_power") is config.policy[0] and config.rule_for("inv1/dc") is None


@pytest.mark.parametrize("doc, fragment", [
    ({"uplink": {"url": "http://x"}}, "mqtt://host:1883"),
    ({"uplink": {"url": "mqtt://x", "cert": "a.pem"}}, "both 'cert' and 'key'"),
    ({"uplink": {"url": "mqtt://x"}, "policy": [{"topics": "a/#", "mode": "aggregate"}]}, "needs a 'window'"),
    ({"uplink": {"url": "mqtt://x"}, "quota": "lots"}, "not a size"),
    ({"uplink": {"url": "mqtt://x"}, "compresion": "zstd"}, "Extra inputs"),
])
def test_sync_config_errors_say_what_to_write(doc, fragment):
    with pytest.raises(ValidationError, match=fragment.replace("(", r"\(").replace("'", ".")):
        SyncConfig.model_validate(doc)


@pytest.mark.parametrize("codec", ["zstd", "lz4", "none"])
def test_envelope_round_trip(codec):
    block, n = encode_batch(Batch.of("inv1/p", [1.0, 2.5, 4.0], [10.0, np.nan, 12.5], [0, 2, 0]))
    strings, m = encode_batch(Batch.of("inv1/state", [1.0, 2.0], np.array(["on", "off"], dtype=object)))
    events, k = encode_events([Event("alerts/x", "alert", 3.0, "sol", {"v": 1}, "high")])
    records = [Record("inv1/p", 7, "raw", 2, n, 1.0, block), Record("inv1/state", 8, "raw", 2, m, 1.0, strings),
               Record("alerts/x", 9, "events", 0, k, 1.0, events)]
    env = decode_envelope(encode_envelope("plant-1", 5.0, records, codec))
    assert env.site == "plant-1" and [r.seq for r in env.records] == [7, 8, 9]
    raw = decode_block(env.records[0].block)
    assert raw["ts"].tolist() == [1.0, 2.5, 4.0] and raw["values"][2] == 12.5 and np.isnan(raw["values"][1])
    assert raw["quality"].tolist() == [0, 2, 0]
    assert decode_block(env.records[1].block)["values"] == ["on", "off"]
    assert decode_block(env.records[2].block)["events"][0]["data"] == {"v": 1}


def test_bad_envelopes_are_rejected_with_the_reason(tmp_path):
    with pytest.raises(EnvelopeError, match="bad magic"):
        decode_envelope(b"{json}")
    good = encode_envelope("plant-1", 0.0, [], "zstd")
    with pytest.raises(EnvelopeError, match="version 9"):
        decode_envelope(good[:3] + b"\x09" + good[4:])
    store = CloudStore(tmp_path)
    with pytest.raises(EnvelopeError, match="came on site 'plant-2'"):
        store.store_envelope("plant-2", good)
    store.close()


def test_cloud_status_and_keygen_commands(tmp_path):
    store = CloudStore(tmp_path / "data")
    block, n = encode_batch(Batch.of("a/b", [1.0, 2.0], [1.0, 2.0]))
    payload = encode_envelope("plant-1", 0.0, [Record("a/b", 1, "raw", 2, n, 0.0, block)], "zstd")
    assert store.store_envelope("plant-1", payload) == (1, 0)
    assert store.store_envelope("plant-1", payload) == (0, 1)  # the same record again: dropped
    store.close()
    runner = CliRunner()
    result = runner.invoke(cloud, ["status", "--data", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "plant-1: last seen" in result.output and "2 readings in 1 records, 1 duplicates dropped" in result.output
    result = runner.invoke(cloud, ["keygen", str(tmp_path / "k"), str(tmp_path / "k.pub")])
    assert result.exit_code == 0 and "key id" in result.output


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compression_from_many_threads_at_once(codec):
    """Several outboxes (or the cloud's ingest threads) compress and decompress at the same time;
    a shared zstandard object did this unsafely (a segfault in the cloud end's tests)."""
    from concurrent.futures import ThreadPoolExecutor

    from edgeplane.sync.codec import compress, decompress

    rng = np.random.default_rng(0)
    bodies = [rng.integers(0, 8, size=200_000, dtype=np.uint8).tobytes() for _ in range(8)]

    def round_trips(body: bytes) -> bool:
        return all(decompress(compress(body, codec), codec) == body for _ in range(20))

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(round_trips, bodies * 2))


def test_raw_blocks_decoded_together_equal_each_decoded_alone():
    """decode_raw_blocks (the cloud worker: a whole envelope at once) gives decode_block's columns,
    bit for bit, for blocks of any length mixed; anything else is left to decode_block."""
    import struct

    from edgeplane.sync.codec import RAW, decode_raw_blocks, encode_aggregate

    rng = np.random.default_rng(3)
    blocks = []
    for n in rng.choice([1, 1, 2, 10, 57], size=120):
        ts = 1.7e9 + np.cumsum(rng.random(n) * 5)
        quality = rng.integers(0, 3, n).astype(np.uint8)
        blocks.append(encode_batch(Batch.of("d/p", ts, rng.normal(size=n) * 1e3, quality))[0])
    others = [encode_batch(Batch.of("d/s", [1.7e9], np.array(["text"], dtype=object)))[0],  # JSON raw block
              encode_aggregate(60.0, np.array([1.7e9]), {"mean": np.array([1.0])})[0],
              struct.pack("<BI", RAW, 3) + b"\0" * 17,  # says 3 readings, holds 1
              b"\x01\x00"]
    got = decode_raw_blocks(blocks + others)
    assert got[len(blocks):] == [None] * len(others)
    for block, columns in zip(blocks, got[:len(blocks)], strict=True):
        alone = decode_block(block)
        assert columns is not None
        for mine, theirs in zip(columns, (alone["ts"], alone["values"], alone["quality"]), strict=True):
            assert mine.dtype == theirs.dtype and mine.tobytes() == theirs.tobytes()
