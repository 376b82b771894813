"""Read coalescing and the register codec (checked against pymodbus's own conversion)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, strategies as st
from pymodbus.client import ModbusTcpClient

from edgeplane_modbus import codec
from edgeplane_modbus.plan import Span, plan_reads


def spans(*items):
    return [Span(f"p{i}", table, address, count) for i, (table, address, count) in enumerate(items)]


def test_adjacent_and_nearby_points_share_a_request():
    blocks = plan_reads(spans(("holding", 0, 2), ("holding", 2, 1), ("holding", 10, 2), ("holding", 40, 1)), max_gap=8)
    assert [(b.start, b.count) for b in blocks] == [(0, 12), (40, 1)]


def test_max_span_splits_and_tables_never_mix():
    blocks = plan_reads(spans(*[("holding", a, 2) for a in range(0, 300, 2)], ("input", 0, 1), ("coil", 5, 1)),
                        max_span=125)
    holding = [b for b in blocks if b.table == "holding"]
    assert all(b.count <= 125 for b in holding) and sum(len(b.members) for b in holding) == 150
    assert len(holding) == 3 and {b.table for b in blocks} == {"holding", "input", "coil"}


def test_without_coalescing_one_request_per_point():
    assert len(plan_reads(spans(("holding", 0, 1), ("holding", 1, 1)), coalesce=False)) == 2


@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 4)), min_size=1, max_size=60),
       st.integers(1, 125), st.integers(0, 20))
def test_every_point_is_read_within_limits(items, max_span, max_gap):
    items = [(a, min(c, max_span)) for a, c in items]
    blocks = plan_reads(spans(*[("holding", a, c) for a, c in items]), max_span=max_span, max_gap=max_gap)
    assert sum(len(b.members) for b in blocks) == len(items)
    for b in blocks:
        assert b.count <= max_span
        for m in b.members:
            assert b.start <= m.address and m.end <= b.end


DT = ModbusTcpClient.DATATYPE


@pytest.mark.parametrize("type_, value, datatype", [
    ("int16", -1234, DT.INT16), ("uint16", 65000, DT.UINT16), ("int32", -123456789, DT.INT32),
    ("uint32", 4000000000, DT.UINT32), ("int64", -(2**60) + 7, DT.INT64), ("uint64", 2**63 + 11, DT.UINT64),
    ("float32", 1.5, DT.FLOAT32), ("float64", -2.25e10, DT.FLOAT64),
])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_codec_agrees_with_pymodbus(type_, value, datatype, word_order):
    theirs = ModbusTcpClient.convert_to_registers(value, datatype, word_order=word_order)
    assert codec.encode(value, type_, word_order=word_order) == theirs
    assert codec.decode(theirs, type_, word_order=word_order) == value


def test_byte_swapped_and_hand_written_layouts():
    # 1.5 as float32 is 0x3FC00000: ABCD, CDAB (word swap), BADC (byte swap), DCBA
    assert codec.decode([0x3FC0, 0x0000], "float32") == 1.5
    assert codec.decode([0x0000, 0x3FC0], "float32", word_order="little") == 1.5
    assert codec.decode([0xC03F, 0x0000], "float32", byte_order="little") == 1.5
    assert codec.decode([0x0000, 0xC03F], "float32", byte_order="little", word_order="little") == 1.5
    assert codec.decode([0x4142, 0x4300], "string") == "ABC"
    assert codec.decode([0x0008], "bool", bit=3) is True
    buf = struct.pack(">3H", 0xFFFF, 0x3FC0, 0x0000)
    assert codec.make_decoder("float32", "big", "big", None)(buf, 1) == 1.5
    assert codec.make_decoder("float32", "little", "little", None)(struct.pack(">2H", 0x0000, 0xC03F), 0) == 1.5


def test_encode_rejects_what_does_not_fit():
    with pytest.raises(ValueError, match="does not fit int16"):
        codec.encode(40000, "int16")
    with pytest.raises(ValueError, match="at most 4"):
        codec.encode("toolong", "string", length=4)
