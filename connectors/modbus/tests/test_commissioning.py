"""Commissioning: ``edgeplane modbus scan`` prints the common model, ``read TARGET 701.W 1.Mn`` reads scaled points.

Checked against a SunSpec device that is not ours: pysunspec2's IEEE 1547 device image (models
1, 701-713) served by pyModbusTCP's server, with pysunspec2's own decoding as the expected values;
and against our simulator's DER family.
"""

from __future__ import annotations

import json
import struct
from importlib import resources

import pytest
from click.testing import CliRunner

from edgeplane_modbus.cli import modbus
from edgeplane_modbus.simulator import SunSpecInverterSimulator
from edgeplane.testing import free_port


@pytest.fixture(scope="module")
def image_1547():
    """pysunspec2's device_1547.json: its register image and its own decoded view."""
    import sunspec2.file.client as file_client

    path = str(resources.files("sunspec2") / "tests" / "test_data" / "device_1547.json")
    device = file_client.FileClientDevice(path)
    device.scan()
    data = device.get_mb()
    registers = list(struct.unpack(f">{len(data) // 2}H", data))
    return device, [0x5375, 0x6E53] + registers + [0xFFFF, 0]


@pytest.fixture
def pymodbustcp_device(image_1547):
    from pyModbusTCP.server import ModbusServer

    port = free_port()
    server = ModbusServer("127.0.0.1", port, no_block=True)
    server.start()
    _, registers = image_1547
    for i in range(0, len(registers), 100):
        assert server.data_bank.set_holding_registers(40000 + i, registers[i:i + 100])
    yield f"127.0.0.1:{port}"
    server.stop()


def test_scan_prints_the_common_model_of_another_implementation(pymodbustcp_device, image_1547):
    device, _ = image_1547
    common = device.models[1][0]
    result = CliRunner().invoke(modbus, ["scan", pymodbustcp_device])
    assert result.exit_code == 0, result.output
    for label, value in (("manufacturer", common.Mn.value), ("model", common.Md.value), ("serial", common.SN.value),
                         ("version", common.Vr.value)):
        assert f"{label} {value}" in result.output
    assert "model  701" in result.output and "model  713" in result.output
    figures = json.loads(CliRunner().invoke(modbus, ["scan", pymodbustcp_device, "--json"]).output)
    assert figures["devices"][0]["serial"] == common.SN.value == "sn-123456789"
    assert [m["id"] for m in figures["models"]] == [1, *range(701, 714)]


def test_read_points_by_name_scaled_as_pysunspec2_scales_them(pymodbustcp_device, image_1547):
    device, _ = image_1547
    names = ["701.W", "701.Hz", "701.LNV", "704.WMaxLimPct", "1.Mn"]
    result = CliRunner().invoke(modbus, ["read", pymodbustcp_device, *names, "--json"])
    assert result.exit_code == 0, result.output
    values = json.loads(result.output)
    for name in names:
        model, point = name.split(".")
        expected = getattr(device.models[int(model)][0], point).cvalue
        assert values[name]["value"] == pytest.approx(expected), (name, values[name], expected)
    assert values["701.W"]["units"] == "W" and values["1.Mn"]["value"] == "SunSpecTest"
    text = CliRunner().invoke(modbus, ["read", pymodbustcp_device, "701.W", "1.Mn"]).output
    assert f"701.W = {device.models[701][0].W.cvalue} W" in text and "1.Mn = SunSpecTest" in text


def test_read_a_point_the_device_lacks_says_what_it_has(pymodbustcp_device):
    result = CliRunner().invoke(modbus, ["read", pymodbustcp_device, "701.Watts"])
    assert result.exit_code == 2
    assert "no SunSpec point '701.Watts'" in result.output and "did you mean 701.W" in result.output
    result = CliRunner().invoke(modbus, ["read", pymodbustcp_device, "W"])
    assert result.exit_code == 2 and "<model>.<point>" in result.output


async def test_the_simulator_serves_the_der_family():
    async with SunSpecInverterSimulator(irradiance=500.0, family="der", serial="SIM-DER") as sim:
        target = f"127.0.0.1:{sim.port}"
        scanned = await _invoke(["scan", target, "--json"])
        assert [m["id"] for m in scanned["models"]] == [1, 701, 702, 704, 160]
        assert scanned["devices"][0]["serial"] == "SIM-DER"
        values = await _invoke(["read", target, "701.W", "701.InvSt", "702.WMaxRtg", "--json"])
        assert values["701.W"]["value"] == round(11_000 * 0.5 * 0.97) and values["701.InvSt"]["value"] == 3
        assert values["702.WMaxRtg"]["value"] == 10_000


async def _invoke(args: list[str]) -> dict:
    import asyncio

    result = await asyncio.to_thread(CliRunner().invoke, modbus, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)
