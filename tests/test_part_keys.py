"""Parts are keyed by PartKey: made once from kind and name, never split again."""

from __future__ import annotations

import pytest

from edgeplane.components import PartKey


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
