"""SunSpec: discovery and decoding against the simulator, guarded control writes, failures, CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

from edgeplane import Quality
from edgeplane.testing import wait_for
from edgeplane_modbus import sunspec
from edgeplane_modbus.simulator import SunSpecInverterSimulator
from edgeplane_modbus.testing import PLUGINS, site
from edgeplane.testing import free_port


@pytest.fixture
async def inverter():
    sim = SunSpecInverterSimulator(rating_w=10_000, strings=2, irradiance=800.0, interval=0.05)
    await sim.start()
    yield sim
    await sim.stop()


def sunspec_device(port: int, **extra):
    return {"connector": "modbus", "url": f"tcp://127.0.0.1:{port}", "poll": "50ms", "sunspec": {}, **extra}


async def test_models_are_discovered_and_decoded_with_scale_factors(edgeplane_host, inverter):
    async with edgeplane_host(site({"inv": sunspec_device(inverter.port)}), plugins=PLUGINS) as host:
        dev = host.device("inv")
        assert [m.id for m in dev.models] == [1, 103, 120, 123, 160, 704] and dev.sunspec_base == 40000
        await wait_for(lambda: host.bus.latest("inv/103.W") is not None and host.bus.latest("inv/160.module.2.DCW"))
        latest = lambda p: host.bus.latest(f"inv/{p}")[1]
        # 800 W/m2 on a 10 kW inverter with an 11 kWp array: 8.8 kW DC, 97 % efficient
        assert latest("103.W") == pytest.approx(8536, abs=1)
        assert latest("103.Hz") == pytest.approx(60.0) and latest("103.PhVphA") == pytest.approx(230.0)
        assert latest("120.WRtg") == 10000 and latest("1.Mn") == "edgeplane"
        assert latest("160.module.2.DCW") == pytest.approx(4400, abs=1)
        assert latest("123.WMaxLimPct") == pytest.approx(100.0)
        assert host.bus.latest("inv/103.W_SF") is None  # scale factors are applied, not published
        assert host.bus.latest("inv/103.StVnd") is None  # not implemented by the device: not published
        spec = dev.point_specs()["123.WMaxLimPct"]
        assert spec.writable and spec.scale == pytest.approx(0.1)
        # discovered points reach the guard through point_specs(); the site's config is not rewritten
        assert "123.WMaxLimPct" not in dev.config.points and "123.WMaxLimPct" not in host.site.devices["inv"].points


async def test_power_limit_write_is_guarded_scaled_and_obeyed(edgeplane_host, inverter):
    limits = {"inv*/123.WMaxLimPct": {"min": 0, "max": 100}}
    async with edgeplane_host(site({"inv": sunspec_device(inverter.port)}, limits=limits), plugins=PLUGINS) as host:
        run = host.commands.execute
        assert (await run("inv", "123.WMaxLimPct", 150, source="test")).status.value == "rejected"
        assert (await run("inv", "103.W", 5, source="test")).status.value == "rejected"  # read-only
        result = await run("inv", "123.WMaxLimPct", 40.5, source="test")
        assert result.ok and result.readback == pytest.approx(40.5), result
        assert inverter.get("123.WMaxLimPct") == 405  # raw, with WMaxLimPct_SF = -1
        assert (await run("inv", "123.WMaxLim_Ena", 1, source="test")).ok
        await wait_for(lambda: host.bus.latest("inv/103.W")[1] == pytest.approx(4050, abs=1))
        assert host.bus.latest("inv/103.St")[1] == 5  # throttled
        assert ("123.WMaxLimPct", 405) in inverter.writes


async def test_der_model_704_power_limit_is_scaled_and_obeyed(edgeplane_host, inverter):
    limits = {"inv*/704.WMaxLimPct": {"min": 0, "max": 100}}
    async with edgeplane_host(site({"inv": sunspec_device(inverter.port)}, limits=limits), plugins=PLUGINS) as host:
        run = host.commands.execute
        spec = host.device("inv").point_specs()["704.WMaxLimPct"]
        assert spec.writable and spec.scale == pytest.approx(0.1)
        result = await run("inv", "704.WMaxLimPct", 25.5, source="test")
        assert result.ok and result.readback == pytest.approx(25.5), result
        assert inverter.get("704.WMaxLimPct") == 255  # raw, with 704's own WMaxLimPct_SF = -1
        assert (await run("inv", "704.WMaxLimPctEna", 1, source="test")).ok
        await wait_for(lambda: host.bus.latest("inv/103.W")[1] == pytest.approx(2550, abs=1))
        assert (await run("inv", "704.WMaxLimPct", 120, source="test")).status.value == "rejected"


async def test_listed_points_get_friendly_names(edgeplane_host, inverter):
    device = sunspec_device(inverter.port, points={"power": {"sunspec": "103.W"},
                                                   "limit": {"sunspec": "123.WMaxLimPct", "access": "rw"}},
                            sunspec={"publish": "listed"})
    async with edgeplane_host(site({"inv": device}), plugins=PLUGINS) as host:
        await wait_for(lambda: host.bus.latest("inv/power") is not None)
        assert host.bus.latest("inv/103.Hz") is None
        assert (await host.commands.execute("inv", "limit", 20, source="test")).ok
        assert inverter.get("123.WMaxLimPct") == 200


async def test_failures_show_in_the_readings(edgeplane_host, inverter):
    async with edgeplane_host(site({"inv": sunspec_device(inverter.port)}), plugins=PLUGINS) as host:
        latest = lambda p: (host.bus.latest(f"inv/{p}") or (0, None, 0))[1]
        inverter.lose_string(2)
        await wait_for(lambda: latest("160.module.2.DCW") == 0 and latest("160.module.1.DCW") > 4000)
        inverter.clip(3000)
        await wait_for(lambda: latest("103.W") == 3000)
        inverter.freeze("103.TmpCab", 999)
        await wait_for(lambda: latest("103.TmpCab") == pytest.approx(99.9))
        inverter.trip()
        await wait_for(lambda: latest("103.W") == 0 and latest("103.St") == 7)


async def test_irradiance_series_drives_output():
    sim = SunSpecInverterSimulator(irradiance=[0, 500, 1000], interval=None)
    sim.update(0)
    assert sim.get("103.W") == 0 and sim.get("103.St") == 2
    sim.update(1)
    assert sim.get("103.W") == round(5500 * 0.97)
    sim.update(2)
    assert sim.get("103.W") == 10000  # rating caps it


async def test_pysunspec2_reads_the_simulator_the_same_way(inverter):
    # pysunspec2's own Modbus client (not pymodbus) checks the simulator's layout independently
    import sunspec2.modbus.client as client

    def scan():
        dev = client.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=inverter.port)
        try:
            dev.scan()
            inv = dev.models[103][0]
            inv.read()
            return sorted(k for k in dev.models if isinstance(k, int)), inv.W.cvalue, dev.models[1][0].Mn.cvalue
        finally:
            dev.close()

    ids, watts, maker = await asyncio.to_thread(scan)
    assert ids == [1, 103, 120, 123, 160, 704]
    assert watts == pytest.approx(8536, abs=1) and maker == "edgeplane"


async def test_discovery_fails_clearly_without_suns(pymodbus_server):
    server = await pymodbus_server()

    async def read(address, count):
        from pymodbus.client import AsyncModbusTcpClient

        c = AsyncModbusTcpClient("127.0.0.1", port=server.port)
        await c.connect()
        try:
            r = await c.read_holding_registers(address, count=count, device_id=1)
            if r.isError():
                raise RuntimeError(str(r))
            return r.registers
        finally:
            c.close()

    with pytest.raises(sunspec.SunSpecError, match="no 'SunS' marker"):
        await sunspec.discover(read)


def test_cli_simulate_scan_and_read():
    port = free_port()
    exe = [sys.executable, "-m", "edgeplane.cli"]
    sim = subprocess.Popen([*exe, "modbus", "simulate", "sunspec", "--port", str(port), "--irradiance", "500"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = sim.stderr.readline()
        assert f"127.0.0.1:{port}" in line, line
        out = subprocess.run([*exe, "modbus", "scan", f"127.0.0.1:{port}", "--json"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert result["base"] == 40000 and [m["id"] for m in result["models"]] == [1, 103, 120, 123, 160, 704]
        out = subprocess.run([*exe, "modbus", "read", f"127.0.0.1:{port}", "40000", "--type", "string", "--count", "2"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "SunS" in out.stdout, out.stderr
    finally:
        sim.terminate()
        sim.wait(10)
