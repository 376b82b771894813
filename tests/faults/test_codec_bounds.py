"""Every decode of the shared wire format is bounded and fails only with the project's own error.

A hostile (or broken) site must not grow the cloud end by decompressing a bomb, and a wrong-shaped
record must be an :class:`EnvelopeError` the receive loop can count and dead-letter, never a
``TypeError`` out of paho's thread.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import zstandard

from edgeplane import Batch
from edgeplane.errors import EdgeplaneError
from edgeplane.sync.codec import (
    MAX_BODY_BYTES,
    MAX_ENVELOPE_BYTES,
    EnvelopeError,
    Record,
    decode_block,
    decode_envelope,
    encode_batch,
    encode_envelope,
)


def _envelope(index: object, blocks: bytes = b"", codec: int = 1) -> bytes:
    index_bytes = json.dumps(index).encode()
    body = struct.pack("<I", len(index_bytes)) + index_bytes + blocks
    compressed = zstandard.ZstdCompressor().compress(body) if codec == 1 else body
    return b"EPS" + bytes((1, codec)) + compressed


def test_the_envelope_error_is_the_projects_own():
    assert issubclass(EnvelopeError, EdgeplaneError)


@pytest.mark.parametrize("write_size", [True, False], ids=["size-in-header", "streamed-no-size"])
def test_a_zstd_bomb_is_refused_before_it_is_inflated(write_size: bool):
    # 12.8 kB of zstd that would inflate to 400 MB grew the cloud end to 410 MB before
    bomb_body = b"\0" * (MAX_BODY_BYTES + 1_000_000)
    compressor = zstandard.ZstdCompressor(level=19, write_content_size=write_size)
    if write_size:
        compressed = compressor.compress(bomb_body)
    else:
        compressed = b"".join(compressor.read_to_iter(bomb_body))
    assert len(compressed) < 100_000
    with pytest.raises(EnvelopeError, match="larger than"):
        decode_envelope(b"EPS" + bytes((1, 1)) + compressed)


def test_an_lz4_bomb_is_refused():
    import lz4.frame

    compressed = lz4.frame.compress(b"\0" * (MAX_BODY_BYTES + 1_000_000))
    with pytest.raises(EnvelopeError, match="larger than"):
        decode_envelope(b"EPS" + bytes((1, 2)) + compressed)


def test_an_oversized_envelope_is_refused_unread():
    with pytest.raises(EnvelopeError, match="larger than"):
        decode_envelope(b"EPS\x01\x00" + b"x" * MAX_ENVELOPE_BYTES)


@pytest.mark.parametrize("index", [
    [],                                                   # not an object
    {"site": "s", "sent": 1.0},                           # no records
    {"site": 5, "sent": 1.0, "r": []},                    # site is not text
    {"site": "s", "sent": "soon", "r": []},               # sent is not a number
    {"site": "s", "sent": 1.0, "r": [["a", 1, "raw"]]},   # short record
    {"site": "s", "sent": 1.0, "r": [[{"x": 1}, 1, "raw", 2, 0, 0, 0.0]]},  # stream is a dict
    {"site": "s", "sent": 1.0, "r": [["a", 1, "raw", 2, 0, -5, 0.0]]},      # negative length
    {"site": "s", "sent": 1.0, "r": [["a", 1, "raw", 2, 0, 10**12, 0.0]]},  # length past the body
    {"site": "s", "sent": 1.0, "r": "x" * 10},
])
def test_a_wrong_shaped_index_is_an_envelope_error(index: object):
    with pytest.raises(EnvelopeError):
        decode_envelope(_envelope(index))


@pytest.mark.parametrize("block", [
    b"\x01",                                              # the 1-byte block
    b"",
    struct.pack("<BI", 1, 1000) + b"\0" * 10,             # says 1000 readings, holds none
    struct.pack("<BI", 1, 2**32 - 1),                     # huge count, no data
    struct.pack("<BI", 2, 1) + b"{not json",
    struct.pack("<BI", 2, 1) + b'{"ts": [1], "values": [1, 2], "quality": [0]}',  # ragged columns
    struct.pack("<BI", 2, 1) + b'[1, 2]',
    struct.pack("<BI", 4, 1) + b'[1, "x"]',               # events that are not objects
    struct.pack("<BI", 4, 1) + b'{"topic": "a"}',
    struct.pack("<BIdH", 3, 1, 1.0, 200) + b"[]",         # names longer than the block
    struct.pack("<BIdH", 3, 0, 1.0, 4) + b"{}{}",         # names not a list
    struct.pack("<BI", 9, 0),                             # unknown kind
])
def test_a_malformed_block_is_an_envelope_error(block: bytes):
    with pytest.raises(EnvelopeError):
        decode_block(block)


def test_valid_envelopes_still_round_trip():
    block, n = encode_batch(Batch.of("d/p", np.arange(5.0), np.arange(5.0) * 2))
    env = decode_envelope(encode_envelope("s", 1.0, [Record("d/p", 7, "raw", 2, n, 0.0, block)], "zstd"))
    assert env.records[0].seq == 7
    assert decode_block(env.records[0].block)["values"].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
