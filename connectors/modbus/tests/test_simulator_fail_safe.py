"""The simulated inverter fails safe on its own timer, as SunSpec inverters do: written over Modbus by a plain
pymodbus client, with the firmware clock under the test's control."""

from __future__ import annotations

from pymodbus.client import AsyncModbusTcpClient

from edgeplane_modbus import sunspec
from edgeplane_modbus.simulator import SunSpecInverterSimulator

FULL = round(11_000 * 0.8 * 0.97)  # 10 kW inverter, DC 10 % larger, 800 W/m2, 97 % conversion


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def _write(client: AsyncModbusTcpClient, sim: SunSpecInverterSimulator, **points: int) -> None:
    """Write raw values to points named like 123.WMaxLimPct (keyword: 123__WMaxLimPct)."""
    for key, raw in points.items():
        point = sim.points[key.replace("__", ".").replace("_dot_", ".")]
        response = await client.write_registers(point.address, sunspec.encode_value(raw, point.type, point.size),
                                                device_id=1)
        assert not response.isError(), (key, response)


async def test_a_legacy_limit_reverts_unless_renewed_and_ramps():
    clock = Clock()
    async with SunSpecInverterSimulator(irradiance=800.0, interval=None, timer_clock=clock, family="legacy") as sim:
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port)
        await client.connect()
        try:
            w = {"123.WMaxLimPct_RvrtTms": 10, "123.WMaxLimPct_RmpTms": 0, "123.WMaxLimPct": 500, "123.WMaxLim_Ena": 1}
            await _write(client, sim, **{k.replace(".", "__"): v for k, v in w.items()})
            sim.update()
            assert sim.get("103.W") == 5000
            clock.t += 9
            await _write(client, sim, **{"123__WMaxLimPct": 500})  # the edge renews it
            clock.t += 9
            sim.update()
            assert sim.get("103.W") == 5000 and not sim.reverts
            clock.t += 1.5  # 10.5 s since the last renewal: the inverter gives up on the edge
            sim.update()
            assert sim.reverts == [("123.limit", clock.t)] and sim.get("123.WMaxLim_Ena") == 0
            assert sim.get("103.W") == FULL
            # a new limit with a 10 s ramp: half way after 5 s
            await _write(client, sim, **{"123__WMaxLimPct_RvrtTms": 60, "123__WMaxLimPct_RmpTms": 10,
                                         "123__WMaxLimPct": 500, "123__WMaxLim_Ena": 1})
            sim.update()
            clock.t += 5
            sim.update()
            assert 7400 <= sim.get("103.W") <= 7600
            clock.t += 5
            sim.update()
            assert sim.get("103.W") == 5000
        finally:
            client.close()


async def test_a_der_limit_reverts_to_its_reversion_values():
    clock = Clock()
    async with SunSpecInverterSimulator(irradiance=800.0, interval=None, timer_clock=clock, family="der") as sim:
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port)
        await client.connect()
        try:
            await _write(client, sim, **{"704__WMaxLimPctRvrtTms": 5, "704__WMaxLimPctRvrt": 800,
                                         "704__WMaxLimPctEnaRvrt": 1, "704__WMaxLimPct": 300, "704__WMaxLimPctEna": 1})
            sim.update()
            assert sim.get("701.W") == 3000 and sim.get("701.InvSt") == 4  # throttled
            assert sim.get("704.WMaxLimPctRvrtRem") == 5
            clock.t += 5
            sim.update()
            assert sim.reverts == [("704.limit", clock.t)]
            assert sim.get("704.WMaxLimPct") == 800 and sim.get("704.WMaxLimPctEna") == 1
            assert sim.get("701.W") == 8000
        finally:
            client.close()
