"""Block decoding with numpy (codec.decode_many) gives what the per-point decoder gives."""

from __future__ import annotations

import math

import numpy as np
import pytest
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


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(codec.NUMPY_TYPES)), ORDERS, ORDERS,
       st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=125), st.sampled_from([3, 4]), st.data())
def test_wire_bytes_decode_like_pymodbus_registers(type_, byte_order, word_order, registers, function_code, data):
    """The connector reads a register answer's wire bytes (RawHoldingRegisters) with frombuffer;
    every type and order decodes as from pymodbus's own per-register list."""
    from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

    from edgeplane_modbus.link import RawHoldingRegisters, RawInputRegisters

    pdu = bytes([2 * len(registers)]) + b"".join(r.to_bytes(2, "big") for r in registers)
    theirs = (ReadHoldingRegistersResponse if function_code == 3 else ReadInputRegistersResponse)()
    theirs.decode(pdu)
    ours = (RawHoldingRegisters if function_code == 3 else RawInputRegisters)()
    ours.decode(pdu)
    assert ours.function_code == theirs.function_code == function_code
    wire = np.frombuffer(ours.raw, dtype=">u2")
    assert wire.tolist() == theirs.registers == ours.registers  # registers, unpacked when asked
    width = codec.REGISTERS[type_]
    offsets = np.array(data.draw(st.lists(st.integers(0, len(registers) - width), min_size=1, max_size=12)))
    index = codec.gather_index(offsets, type_)
    got = codec.decode_gathered(wire[index], type_, byte_order, word_order, np.float64)
    expected = codec.decode_many(theirs.registers, offsets, type_, byte_order, word_order).astype(np.float64)
    np.testing.assert_array_equal(got, expected)  # NaN where NaN, the same bits elsewhere
    for value, off in zip(got.tolist(), offsets.tolist()):
        one = codec.decode(theirs.registers[off:off + width], type_, byte_order=byte_order, word_order=word_order)
        assert value == float(one) or (math.isnan(value) and math.isnan(one))


def test_a_short_or_lying_register_answer_is_refused():
    from pymodbus.exceptions import ModbusIOException

    from edgeplane_modbus.link import RawHoldingRegisters

    ours = RawHoldingRegisters()
    with pytest.raises(ModbusIOException):
        ours.decode(bytes([10, 0, 1, 0, 2]))  # says 10 bytes, carries 4
    ours.registers = [1, 0xFFFF]  # as pymodbus's server side sets them: raw follows
    assert ours.raw == b"\x00\x01\xff\xff" and ours.registers == [1, 0xFFFF]
