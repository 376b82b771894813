"""Parts are keyed by PartKey: made once from kind and name, never split again."""

from __future__ import annotations

import pytest

from edgeplane import DeviceConfig, PointSpec, SolutionConfig, hookimpl
from edgeplane.components import Connector, PartKey, Solution


def test_a_part_key_knows_its_kind_and_name_and_is_still_the_same_text():
    key = PartKey.device("inv:1")  # a name may hold the separator: only the first one splits
    assert (key.kind, key.name) == ("device", "inv:1")
    assert key == "device:inv:1" and hash(key) == hash("device:inv:1")
    assert {"device:inv:1": 1}[key] == 1
    assert PartKey.solution("f").kind == "solution" and PartKey.simulator("s").name == "s"
    with pytest.raises(ValueError, match="not 'gadget'"):
        PartKey("gadget", "x")  # type: ignore[arg-type]  # a wrong kind, on purpose


async def test_the_host_keys_its_parts_and_tells_each_its_key(edgeplane_host):
    site = {"site": {"id": "keys"},
            "devices": {"m1": {"connector": "memory", "points": {"p": {}}}},
            "solutions": {"t1": {"type": "threshold", "points": ["m1/p"], "high": 10}}}
    async with edgeplane_host(site) as host:
        assert set(host.parts) == {"device:m1", "solution:t1"}
        assert all(isinstance(k, PartKey) for k in host.parts)
        assert host.device("m1").context.part == PartKey.device("m1")
        assert host.solution("t1").context.part.kind == "solution"
        plan = await host.reload(host.site)
        assert plan["kept"] == [PartKey.device("m1"), PartKey.solution("t1")]


class _ThermoConfig(DeviceConfig):
    sensor: str = "t1"


class _ThermoPoint(PointSpec):
    channel: int = 0


class _ThermoConnector(Connector[_ThermoConfig, _ThermoPoint]):
    """Declares its models once, as type arguments: no Config =, Point =, config: or __init__."""

    async def start(self) -> None:
        await self.publish("temp", 1.0, float(self.config.points["temp"].channel))


class _Alarm(SolutionConfig):
    limit: float = 1.0


class _AlarmSolution(Solution[_Alarm]):
    pass


class _Plugin:
    __name__ = "thermo"

    @hookimpl
    def edgeplane_register_connectors(self, register):
        register("thermo", _ThermoConnector)

    @hookimpl
    def edgeplane_register_solutions(self, register):
        register("alarm", _AlarmSolution)


def test_type_arguments_declare_the_config_and_point_models():
    assert _ThermoConnector.Config is _ThermoConfig and _ThermoConnector.Point is _ThermoPoint
    assert _AlarmSolution.Config is _Alarm
    assert Connector.Config is DeviceConfig  # the base keeps its defaults


async def test_a_connector_declared_by_type_arguments_validates_and_runs(edgeplane_host):
    site = {"site": {"id": "generic"},
            "devices": {"th": {"connector": "thermo", "sensor": "t9", "points": {"temp": {"channel": 7}}}},
            "solutions": {"al": {"type": "alarm", "limit": 3}}}
    async with edgeplane_host(site, plugins=[_Plugin()]) as host:
        device = host.device("th")
        assert isinstance(device.config, _ThermoConfig) and device.config.sensor == "t9"
        assert isinstance(device.config.points["temp"], _ThermoPoint)
        assert host.solution("al").config.limit == 3
