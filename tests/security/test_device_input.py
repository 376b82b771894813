"""Hostile field-device input found by fuzzing (issue 14): a Modbus device that answers fewer
registers than asked, and a SunSpec scale factor outside the standard's range, must give BAD or
unknown readings, never a crashed connector."""

from __future__ import annotations

import asyncio
import struct

import numpy as np

from edgeplane import Quality
from edgeplane.testing import wait_for
from edgeplane_modbus import sunspec
from edgeplane_modbus.testing import PLUGINS, device, site


class ShortAnswers:
    """A Modbus TCP device (raw frames on the loopback) whose every read answers one register only."""

    def __init__(self) -> None:
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.requests = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(7)
                transaction, _, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                self.requests += 1
                answer = bytes([pdu[0], 2]) + struct.pack(">H", 1234)  # byte count 2: one register, whatever was asked
                writer.write(struct.pack(">HHHB", transaction, 0, len(answer) + 1, unit) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_a_short_modbus_answer_is_a_bad_reading_not_a_crash(edgeplane_host):
    device_sim = ShortAnswers()
    await device_sim.start()
    try:
        points = {"a": {"address": 0, "type": "uint16"}, "b": {"address": 1, "type": "uint16"}}
        async with edgeplane_host(site({"d": device(device_sim.port, points)}), plugins=PLUGINS) as host:
            await wait_for(lambda: device_sim.requests >= 5, timeout=20)
            await wait_for(lambda: host.bus.latest("d/b") is not None, timeout=10)
            assert host.bus.latest("d/b")[2] is Quality.BAD and np.isnan(host.bus.latest("d/b")[1])
            assert host.bus.latest("d/a")[2] is Quality.BAD  # the block failed as a whole: nothing half-decoded
            assert not host.metrics.value("edgeplane_restarts_total", part="device:d")  # never crashed
            assert host.metrics.value("edgeplane_modbus_request_errors_total", device="d", reason="error") >= 5
            assert host.health()["device:d"]["state"] == "degraded"
    finally:
        await device_sim.stop()


def test_a_scale_factor_outside_the_standard_range_is_unknown_not_an_overflow():
    for raw in (11, 309, 32767, -11, -32767):
        register = raw & 0xFFFF
        assert sunspec.decode_value([register], "sunssf") is None
    assert sunspec.decode_value([(-2) & 0xFFFF], "sunssf") == -2
