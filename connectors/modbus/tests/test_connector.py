"""The connector against pymodbus's TCP server on the loopback, inside a whole host."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from pymodbus.client import ModbusTcpClient

from edgeplane import Quality
from edgeplane.testing import wait_for
from edgeplane_modbus.testing import PLUGINS, PymodbusServer, SilentServer, device, site
from edgeplane.testing import free_port

DT = ModbusTcpClient.DATATYPE
conv = ModbusTcpClient.convert_to_registers


def fill(store):
    # values laid out with pymodbus's own converter, so the connector's decoding is checked against it
    store.holding[0:2] = conv(1.5, DT.FLOAT32)
    store.holding[2:4] = conv(-123456, DT.INT32, word_order="little")
    store.holding[4] = conv(-7, DT.INT16)[0]
    store.holding[5] = 0b1000_0000_0000_1000
    store.holding[6:10] = conv(2**40 + 3, DT.UINT64)
    store.holding[10:14] = conv(-0.125, DT.FLOAT64)
    store.holding[20:24] = conv("INV-01", DT.STRING)[:3] + [0]
    store.holding[30] = 2315  # 231.5 V with scale 0.1
    store.holding[31] = 500  # temperature: raw * 0.1 - 40
    store.inputs[7:9] = conv(4000000000, DT.UINT32)
    store.coils[3] = True
    store.discrete[9] = True


POINTS = {
    "f32": {"address": 0, "type": "float32"},
    "i32": {"address": 2, "type": "int32", "word_order": "little"},
    "i16": {"address": 4, "type": "int16"},
    "flag3": {"address": 5, "type": "bool", "bit": 3},
    "flag15": {"address": 5, "type": "bool", "bit": 15},
    "flag0": {"address": 5, "type": "bool", "bit": 0},
    "u64": {"address": 6, "type": "uint64"},
    "f64": {"address": 10, "type": "float64"},
    "name": {"address": 20, "type": "string", "length": 8},
    "volts": {"address": 30, "scale": 0.1, "unit": "V"},
    "temp": {"address": 31, "scale": 0.1, "offset": -40},
    "energy": {"table": "input", "address": 7, "type": "uint32"},
    "run": {"table": "coil", "address": 3},
    "door": {"table": "discrete", "address": 9},
}


async def latest_values(host, name, points, timeout=5.0):
    await wait_for(lambda: all(host.bus.latest(f"{name}/{p}") for p in points), timeout)
    return {p: host.bus.latest(f"{name}/{p}")[1] for p in points}


async def test_typed_map_is_decoded(edgeplane_host, pymodbus_server):
    server = await pymodbus_server(fill)
    async with edgeplane_host(site({"d": device(server.port, POINTS)}), plugins=PLUGINS) as host:
        values = await latest_values(host, "d", POINTS)
        assert values["f32"] == 1.5 and values["i32"] == -123456 and values["i16"] == -7
        assert (values["flag3"], values["flag15"], values["flag0"]) == (1.0, 1.0, 0.0)
        assert values["u64"] == float(2**40 + 3) and values["f64"] == -0.125
        assert values["name"] == "INV-01"
        assert np.isclose(values["volts"], 231.5) and np.isclose(values["temp"], 10.0)
        assert values["energy"] == 4000000000.0 and values["run"] == 1.0 and values["door"] == 1.0
        assert host.bus.latest("d/volts") and host.bus.latest_batch("d/volts").unit == "V"
        # holding 0..31 in one request, plus one each for input, coil and discrete
        assert len(host.device("d").blocks) == 4


async def test_coalescing_and_span_limits_show_in_requests(edgeplane_host, pymodbus_server):
    server = await pymodbus_server()
    points = {f"p{a}": {"address": a} for a in range(0, 300, 3)}
    async with edgeplane_host(site({"d": device(server.port, points, max_span=50, poll="1h")}), plugins=PLUGINS) as host:
        await latest_values(host, "d", points)
        reads = [r for r in server.store.requests if r[0] == 3]
        assert all(count <= 50 for _, _, count in reads)
        assert len(reads) == len(host.device("d").blocks) == 6  # 298 registers in spans of <= 50
        assert host.metrics.value("edgeplane_modbus_requests_total", device="d") == 6


async def test_guarded_writes_use_fc_5_6_15_16_and_read_back(edgeplane_host, pymodbus_server):
    server = await pymodbus_server()
    points = {"sp": {"address": 40, "type": "float32", "access": "rw"},
              "limit": {"address": 42, "scale": 0.1, "access": "rw", "limits": {"min": 0, "max": 100}},
              "bit2": {"address": 43, "type": "bool", "bit": 2, "access": "rw"},
              "label": {"address": 44, "type": "string", "length": 6, "access": "rw"},
              "relay": {"table": "coil", "address": 8, "access": "rw"}}
    devices = {"a": device(server.port, points),
               "b": device(server.port, {"relay": {"table": "coil", "address": 9, "access": "rw"},
                                         "word": {"address": 60, "access": "rw"}}, write_function="multiple")}
    async with edgeplane_host(site(devices), plugins=PLUGINS) as host:
        run = host.commands.execute
        result = await run("a", "sp", 12.75, source="test")
        assert result.ok and result.readback == 12.75, result
        result = await run("a", "limit", 55.5, source="test")
        assert result.ok and np.isclose(result.readback, 55.5), result
        assert (await run("a", "limit", 150, source="test")).status.value == "rejected"
        assert (await run("a", "bit2", True, source="test")).ok
        assert (await run("a", "label", "abc", source="test")).readback == "abc"
        assert (await run("a", "relay", True, source="test")).ok
        assert (await run("b", "relay", True, source="test")).ok
        assert (await run("b", "word", 777, source="test")).ok
        codes = [fc for fc, _, _ in server.store.requests]
        assert {5, 6, 15, 16} <= set(codes)
        # what the server holds, read by pymodbus's client: the writes really landed
        from pymodbus.client import AsyncModbusTcpClient

        client = AsyncModbusTcpClient("127.0.0.1", port=server.port)
        await client.connect()
        regs = (await client.read_holding_registers(40, count=5, device_id=1)).registers
        assert ModbusTcpClient.convert_from_registers(regs[0:2], DT.FLOAT32) == 12.75
        assert regs[2] == 555 and regs[3] == 0b100
        coils = (await client.read_coils(8, count=2, device_id=1)).bits[:2]
        assert coils == [True, True]
        client.close()
        assert host.bus.latest("a/sp")[1] == 12.75  # the read-back is published


async def test_exception_gives_bad_quality_counted_and_logged_once(edgeplane_host, pymodbus_server, caplog):
    server = await pymodbus_server(lambda s: s.holding.__setitem__(0, 42))
    server.store.fail_addresses.add(500)
    points = {"ok": {"address": 0}, "broken": {"address": 500}}
    caplog.set_level(logging.INFO)
    async with edgeplane_host(site({"d": device(server.port, points)}), plugins=PLUGINS) as host:
        metric = lambda: host.metrics.value("edgeplane_modbus_request_errors_total", device="d", reason="exception_4")
        await wait_for(lambda: metric() >= 4)
        assert host.bus.latest("d/broken")[2] is Quality.BAD and np.isnan(host.bus.latest("d/broken")[1])
        assert host.bus.latest("d/ok")[1:] == (42.0, Quality.GOOD)
        assert host.health()["device:d"]["state"] == "degraded"
        failing = [r for r in caplog.records if "fails" in r.getMessage() and "exception 4" in r.getMessage()]
        assert len(failing) == 1
        server.store.fail_addresses.clear()
        await wait_for(lambda: host.bus.latest("d/broken")[2] is Quality.GOOD)
        await wait_for(lambda: host.health()["device:d"]["state"] == "ok")
        assert any("recovered" in r.getMessage() for r in caplog.records)


async def test_reconnects_after_the_server_comes_back(edgeplane_host):
    server = PymodbusServer()
    server.store.holding[0] = 1
    port = await server.start()
    try:
        async with edgeplane_host(site({"d": device(port, {"v": {"address": 0}}, reconnect_initial="50ms",
                                                      reconnect_max="200ms")}), plugins=PLUGINS) as host:
            await wait_for(lambda: (host.bus.latest("d/v") or (0, 0))[1] == 1.0)
            await server.stop()
            await wait_for(lambda: host.bus.latest("d/v")[2] is Quality.BAD, timeout=10)
            assert host.health()["device:d"]["state"] == "degraded"
            server = PymodbusServer()
            server.store.holding[0] = 2
            await server.start(port)
            await wait_for(lambda: host.bus.latest("d/v")[1:] == (2.0, Quality.GOOD), timeout=10)
            assert host.metrics.value("edgeplane_modbus_request_errors_total", device="d", reason="link_down") >= 1
    finally:
        await server.stop()


async def test_slow_device_does_not_delay_others(edgeplane_host, pymodbus_server):
    server = await pymodbus_server(lambda s: s.holding.__setitem__(0, 5), units=(1, 2))
    silent = SilentServer()
    silent_port = await silent.start()
    devices = {
        "fast": device(server.port, {"v": {"address": 0}}, poll="20ms"),
        "fast2": device(server.port, {"v": {"address": 0}}, poll="20ms", unit=2),
        # same link as fast, a unit nobody answers for: it costs fast at most its own timeout per poll
        "ghost": device(server.port, {"v": {"address": 0}}, poll="20ms", unit=9, timeout="200ms", retries=0),
        "hung": device(silent_port, {"v": {"address": 0}}, timeout="2s", retries=2),
    }
    try:
        async with edgeplane_host(site(devices), plugins=PLUGINS) as host:
            sub = host.bus.subscribe("fast/v")
            assert host.device("fast").link is host.device("fast2").link is host.device("ghost").link
            assert host.device("hung").link is not host.device("fast").link
            got = 0
            loop = asyncio.get_running_loop()
            began = loop.time()
            while got < 5:
                await asyncio.wait_for(sub.get(), 3.0)
                got += 1
            # five readings of 'fast' while 'hung' waits 6 s for its first answer
            assert loop.time() - began < 6
            await wait_for(lambda: host.bus.latest("ghost/v") is not None, timeout=5)
            assert host.bus.latest("ghost/v")[2] is Quality.BAD
            assert host.bus.latest("fast2/v")[1:] == (5.0, Quality.GOOD)
    finally:
        await silent.stop()


async def test_one_multipoint_batch_per_block_read(edgeplane_host, pymodbus_server):
    server = await pymodbus_server(fill)
    async with edgeplane_host(site({"d": device(server.port, POINTS, poll="1h")}), plugins=PLUGINS) as host:
        await wait_for(lambda: host.bus.latest("d/energy") is not None, 10)  # the first poll is over
        rows = host.bus.subscribe("d/#", multipoint=True, maxsize=100)
        points = host.bus.subscribe("d/#", maxsize=100)
        dev = host.device("d")
        before = host.bus.published_batches
        await dev.poll_once()
        batches = []
        while (got := rows.get_nowait()) is not None:
            batches.append(got)
        # four blocks (holding, input, coil, discrete): four multi-point batches, plus the text point's own
        assert host.bus.published_batches - before == 5
        multi = [b for b in batches if b.multipoint]
        assert len(multi) == 4 and sum(len(b) for b in multi) == len(POINTS) - 1
        holding = next(b for b in multi if "d/f32" in b.table)
        assert holding.table.topics[:3] == ("d/f32", "d/i32", "d/i16")  # address order
        assert holding.values[holding.table.id_of("d/i32")] == -123456
        assert (holding.quality == 0).all()
        # single-point subscribers see one batch per point, as before
        seen = {}
        while (got := points.get_nowait()) is not None:
            seen[got.topic] = got.last()[1]
        assert seen["d/name"] == "INV-01" and seen["d/f32"] == 1.5 and len(seen) == len(POINTS)


async def test_a_failed_block_read_publishes_one_bad_batch(edgeplane_host, pymodbus_server):
    server = await pymodbus_server(fill)
    points = {"a": {"address": 0, "type": "float32"}, "b": {"address": 2, "type": "int32"}}
    async with edgeplane_host(site({"d": device(server.port, points, poll="1h", unit=9)}), plugins=PLUGINS) as host:
        rows = host.bus.subscribe("d/#", multipoint=True, maxsize=100)
        await host.device("d").poll_once()  # unit 9 does not exist: the server answers with an exception
        await wait_for(lambda: rows.depth > 0, 10)
        bad = rows.get_nowait()
        assert bad.table.topics == ("d/a", "d/b") and bad.quality.tolist() == [2, 2]
        assert np.isnan(bad.values).all()
