"""RTU framing over a serial line: a virtual serial pair from socat, pymodbus's serial server at one
end, the connector (url rtu:///path) at the other. And RTU framing over TCP (rtu+tcp://)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edgeplane.testing import wait_for
from edgeplane_modbus.simulator import SimServer
from edgeplane_modbus.testing import PLUGINS, site


def sim_device(unit: int, values: list[int]) -> SimDevice:
    return SimDevice(unit, simdata=[SimData(0, values=values, datatype=DataType.REGISTERS)])


@pytest.fixture
async def serial_pair(tmp_path):
    assert shutil.which("socat"), "socat is missing: apt-get install socat (scripts/setup.sh installs it)"
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if a.exists() and b.exists():
                break
            await asyncio.sleep(0.05)
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(5)


async def test_rtu_over_a_serial_line(edgeplane_host, serial_pair):
    server_end, client_end = serial_pair
    server = ModbusSerialServer([sim_device(5, [11, 22, 0x3FC0, 0]), sim_device(6, [66] * 4)], port=server_end,
                                framer=FramerType.RTU, baudrate=19200)
    await server.serve_forever(background=True)
    try:
        common = {"connector": "modbus", "url": f"rtu://{client_end}", "poll": "100ms", "timeout": "1s",
                  "baudrate": 19200, "parity": "N"}
        devices = {"m5": {**common, "unit": 5, "points": {"a": {"address": 1}, "f": {"address": 2, "type": "float32"},
                                                          "w": {"address": 0, "access": "rw"}}},
                   "m6": {**common, "unit": 6, "points": {"a": {"address": 0}}}}
        async with edgeplane_host(site(devices), plugins=PLUGINS) as host:
            await wait_for(lambda: host.bus.latest("m5/f") and host.bus.latest("m6/a"), timeout=10)
            assert host.bus.latest("m5/a")[1] == 22 and host.bus.latest("m5/f")[1] == 1.5
            assert host.bus.latest("m6/a")[1] == 66
            assert host.device("m5").link is host.device("m6").link  # one line, two units
            result = await host.commands.execute("m5", "w", 99, source="test")
            assert result.ok and result.readback == 99, result
    finally:
        await server.shutdown()


async def test_rtu_framing_over_tcp(edgeplane_host):
    server = SimServer(framer=FramerType.RTU)
    port = await server.start({2: [SimData(0, values=[7, 8, 9], datatype=DataType.REGISTERS)]})
    try:
        devices = {"g": {"connector": "modbus", "url": f"rtu+tcp://127.0.0.1:{port}", "unit": 2, "poll": "50ms",
                         "points": {"x": {"address": 2}}}}
        async with edgeplane_host(site(devices), plugins=PLUGINS) as host:
            await wait_for(lambda: host.bus.latest("g/x") is not None)
            assert host.bus.latest("g/x")[1] == 9
    finally:
        await server.stop()
