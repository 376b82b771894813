"""Item 3 of issue 14: no write reaches a connector around its limits, whatever the point's type,
and limits themselves must be finite."""

from __future__ import annotations

import pytest

from edgeplane import CommandStatus
from edgeplane.errors import SiteError

SITE = {
    "site": {"id": "guard"},
    "devices": {
        "inv": {
            "connector": "memory",
            "write_delay": 0,
            "points": {
                # type auto (the default): the guard used to skip every check but 'allowed'
                "WMaxLimPct": {"access": "rw", "value": 50, "limits": {"min": 0, "max": 100}},
                "mode": {"access": "rw", "value": 1, "limits": {"allowed": [0, 1, 2, 3]}},
                "free": {"access": "rw", "value": 0},
                "sentinel": {"access": "rw", "value": 0, "limits": {"allow_non_finite": True}},
            },
        }
    },
    "limits": {"inv/Site*": {"min": 0, "max": 10}},
}


async def execute(host, point, value):
    return await host.commands.execute("inv", point, value, source="test")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), "1000", "50", True, False,
                                   {"x": 999}, [999], None, 1000, -1],
                         ids=lambda v: repr(v))
async def test_an_auto_point_with_limits_takes_only_finite_numbers_inside_them(edgeplane_host, value):
    async with edgeplane_host(SITE) as host:
        result = await execute(host, "WMaxLimPct", value)
        assert result.status is CommandStatus.REJECTED, result
        assert host.device("inv").writes == []
        assert host.metrics.value("edgeplane_commands_total", device="inv", status="rejected") == 1


async def test_a_number_inside_the_limits_still_goes_through(edgeplane_host):
    async with edgeplane_host(SITE) as host:
        assert (await execute(host, "WMaxLimPct", 40)).ok
        assert (await execute(host, "WMaxLimPct", 60.5)).ok
        assert host.device("inv").writes == [("WMaxLimPct", 40), ("WMaxLimPct", 60.5)]


@pytest.mark.parametrize("value", [True, 1.5, "1", float("nan")], ids=repr)
async def test_allowed_values_compare_by_type_too(edgeplane_host, value):
    # True == 1 in Python: an allow-list of integers must not let a bool (or a float, or a string) through
    async with edgeplane_host(SITE) as host:
        result = await execute(host, "mode", value)
        assert result.status is CommandStatus.REJECTED, result
        assert host.device("inv").writes == []
    async with edgeplane_host(SITE) as host:
        assert (await execute(host, "mode", 2)).ok


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=repr)
async def test_non_finite_values_are_refused_unless_the_point_allows_them(edgeplane_host, value):
    async with edgeplane_host(SITE) as host:
        refused = await execute(host, "free", value)
        assert refused.status is CommandStatus.REJECTED and "finite" in refused.message
        allowed = await execute(host, "sentinel", value)
        assert allowed.status is not CommandStatus.REJECTED, allowed


@pytest.mark.parametrize("limits", [{"min": float("nan")}, {"max": float("inf")}, {"min": -float("inf"), "max": 5},
                                    {"max_rate": float("nan")}, {"max_rate": float("inf")}, {"max_rate": -1}],
                         ids=repr)
def test_limits_that_would_switch_the_guard_off_are_a_site_error(edgeplane_site, limits):
    site = {"site": {"id": "guard"}, "limits": {"inv/WMaxLimPct": limits}}
    with pytest.raises(SiteError) as info:
        edgeplane_site(site)
    assert "limits" in str(info.value) and ("finite" in str(info.value) or "greater than 0" in str(info.value))


def test_yaml_nan_and_inf_in_limits_are_refused_with_the_line(tmp_path, edgeplane_site):
    path = tmp_path / "site.yaml"
    path.write_text("site: {id: guard}\nlimits:\n  'inv/WMaxLimPct': {min: .nan, max: .inf}\n")
    with pytest.raises(SiteError) as info:
        edgeplane_site(path)
    text = str(info.value)
    assert "site.yaml:3:" in text and "limits.inv/WMaxLimPct.min" in text and "finite" in text
