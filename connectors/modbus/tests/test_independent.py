"""Against modbus-tk's TCP server (not pymodbus), with registers written by hand: decoding that
only agreed with pymodbus's own conversions would fail here."""

from __future__ import annotations

import asyncio

import modbus_tk.defines as cst
import modbus_tk.modbus_tcp as modbus_tcp
import numpy as np
import pytest

from edgeplane.testing import wait_for
from edgeplane_modbus.testing import PLUGINS, device, site
from edgeplane.testing import free_port

pytestmark = pytest.mark.filterwarnings("ignore:isSet:DeprecationWarning")


@pytest.fixture
def tk_server():
    port = free_port()
    server = modbus_tcp.TcpServer(port=port, address="127.0.0.1")
    slave = server.add_slave(3)
    slave.add_block("hr", cst.HOLDING_REGISTERS, 0, 100)
    slave.add_block("ir", cst.ANALOG_INPUTS, 0, 20)
    slave.add_block("co", cst.COILS, 0, 16)
    # 1.5 = 0x3FC00000; -2 as int32 = 0xFFFFFFFE; 0x12345678 with words swapped; 'Hi!' in ASCII
    slave.set_values("hr", 0, [0x3FC0, 0x0000, 0xFFFF, 0xFFFE, 0x5678, 0x1234, 0x4869, 0x2100, 0xC03F, 0x0000])
    slave.set_values("hr", 10, [0x4009, 0x21FB, 0x5444, 0x2D18])  # pi as float64
    slave.set_values("ir", 0, [65535, 0x8000])
    slave.set_values("co", 0, [0, 1, 0, 1])
    server.start()
    yield port, slave
    server.stop()


async def test_decoding_matches_hand_written_registers(edgeplane_host, tk_server):
    port, slave = tk_server
    points = {
        "f": {"address": 0, "type": "float32"},
        "neg": {"address": 2, "type": "int32"},
        "swapped": {"address": 4, "type": "uint32", "word_order": "little"},
        "text": {"address": 6, "type": "string", "length": 4},
        "byteswapped": {"address": 8, "type": "float32", "byte_order": "little"},
        "pi": {"address": 10, "type": "float64"},
        "u": {"table": "input", "address": 0},
        "s": {"table": "input", "address": 1, "type": "int16"},
        "c1": {"table": "coil", "address": 1},
        "c2": {"table": "coil", "address": 2},
        "sp": {"address": 20, "type": "int32", "access": "rw", "scale": 0.01},
        "k": {"table": "coil", "address": 7, "access": "rw"},
    }
    async with edgeplane_host(site({"tk": device(port, points, unit=3)}), plugins=PLUGINS) as host:
        await wait_for(lambda: all(host.bus.latest(f"tk/{p}") for p in points))
        v = {p: host.bus.latest(f"tk/{p}")[1] for p in points}
        assert v["f"] == 1.5 and v["neg"] == -2 and v["swapped"] == 0x12345678 and v["text"] == "Hi!"
        assert v["byteswapped"] == 1.5 and v["pi"] == pytest.approx(np.pi, abs=1e-15)
        assert v["u"] == 65535 and v["s"] == -32768 and (v["c1"], v["c2"]) == (1.0, 0.0)
        result = await host.commands.execute("tk", "sp", -1234.56, source="test")
        assert result.ok, result
        # -123456 = 0xFFFE1DC0, high word first
        assert list(slave.get_values("hr", 20, 2)) == [0xFFFE, 0x1DC0]
        assert (await host.commands.execute("tk", "k", True, source="test")).ok
        assert slave.get_values("co", 7, 1) == (1,)
