"""Block decoding with numpy (codec.decode_many) gives what the per-point decoder gives."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeplane_modbus import codec

ORDERS = st.sampled_from(["big", "little"])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(codec.NUMPY_TYPES)), ORDERS, ORDERS,
       st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=40), st.data())
def test_decode_many_agrees_with_decode_for_every_type_and_order(type_, byte_order, word_order, registers, data):
    width = codec.REGISTERS[type_]
    offsets = data.draw(st.lists(st.integers(0, len(registers) - width), min_size=1, max_size=12))
    got = codec.decode_many(np.array(registers, dtype=np.uint16), np.array(offsets), type_, byte_order, word_order)
    assert got.dtype == np.dtype(codec.NUMPY_TYPES[type_][1:]) and got.dtype.isnative
    for value, off in zip(got.tolist(), offsets):
        expected = codec.decode(registers[off:off + width], type_, byte_order=byte_order, word_order=word_order)
        if isinstance(expected, float) and math.isnan(expected):
            assert math.isnan(value)
        else:
            assert value == expected and type(value) is type(expected)


@given(st.sampled_from(sorted(codec.NUMPY_TYPES)), ORDERS, ORDERS, st.data())
def test_encoded_values_come_back_through_decode_many(type_, byte_order, word_order, data):
    if type_.startswith("float"):
        raw = data.draw(st.floats(allow_nan=False, width=32 if type_ == "float32" else 64))
    else:
        lo, hi = codec.INTEGER_RANGES[type_]
        raw = data.draw(st.integers(lo, hi))
    registers = [7] + codec.encode(raw, type_, byte_order=byte_order, word_order=word_order)
    assert codec.decode_many(np.array(registers, dtype=np.uint16), np.array([1]), type_, byte_order,
                             word_order).tolist() == [raw]
