"""Faults injected into the SunSpec simulators are found by the diagnosis within 2 poll intervals.

Each fault is injected between two polls; the test then counts the inverter's polls (batches of
its AC power on the bus) until the alert is out, and asserts it took at most 2.
"""

from __future__ import annotations

import asyncio

import pytest

from edgeplane_modbus import plugin as modbus_plugin
from edgeplane.testing import wait_for, wait_for_batch

from edgeplane_solar import plugin as solar_plugin
from edgeplane_solar.sites import plant_site
from edgeplane_solar.testing import RampSun, SteadySun, running_plant

PLUGINS = [modbus_plugin, solar_plugin]


def _inject(plant, fault: str) -> None:
    inv2 = plant.inverters["inv2"]
    if fault == "offline":
        inv2.trip()
    elif fault == "lost_string":
        inv2.lose_string(2)
    elif fault == "derating":
        inv2.clip(5000)
    elif fault == "frozen_power":
        inv2.freeze("103.W")
    elif fault == "frozen_irradiance":
        plant.inject(0, 7)
    elif fault == "implausible_sensor":
        plant.station.values["poa"] = 2500.0  # a broken pyranometer
        plant.station.frozen = True


@pytest.mark.parametrize("fault,weather", [
    ("offline", SteadySun), ("lost_string", SteadySun), ("derating", SteadySun), ("frozen_power", RampSun),
    ("frozen_irradiance", RampSun), ("implausible_sensor", SteadySun),
])
async def test_injected_fault_is_detected_within_two_polls(edgeplane_host, fault, weather):
    async with running_plant(weather=weather()) as (plant, ports):
        async with edgeplane_host(plant_site(ports, forecast=False), plugins=PLUGINS) as host:
            diag = host.solution("diagnosis")
            await wait_for(lambda: len(diag.state) == 3 and all(s.get("state") == "ok" for s in diag.state.values()),
                           timeout=20)
            await asyncio.sleep(1.5)  # a few clean polls first: nothing may be raised on a healthy plant
            assert not [a for a in diag.alerts if a["active"]], diag.alerts
            polls = host.bus.subscribe("inv2/103.W", name="test-polls", overflow="drop_oldest")
            await wait_for_batch(polls, timeout=5)  # right after a poll: inject between two polls
            _inject(plant, fault)
            device = "station" if fault in ("frozen_irradiance", "implausible_sensor") else "inv2"
            found = lambda: [a for a in diag.alerts if a["active"] and a["fault"] == fault and a["device"] == device]
            counted = 0
            while not found() and counted < 4:
                await wait_for_batch(polls, timeout=5)
                counted += 1
                await asyncio.sleep(0.15)  # the diagnosis judges a poll ~20 ms after it arrives
            assert found(), f"{fault} not raised after {counted} polls; alerts: {diag.alerts}"
            assert counted <= 2, f"{fault} took {counted} polls"
            alert = found()[0]
            assert alert["evidence"], "an alert carries its evidence"
            if fault == "offline":  # the trip's alarm, named by pysunspec2's model 103 definition
                assert alert["evidence"]["events"] == ["OVER_TEMP"], alert["evidence"]
            others = [a for a in diag.alerts if a["active"] and (a["fault"], a["device"]) != (fault, device)]
            assert not others, f"only {fault} should be raised, also got {others}"


async def test_alert_clears_with_hysteresis_after_restore(edgeplane_host):
    async with running_plant() as (plant, ports):
        async with edgeplane_host(plant_site(ports, forecast=False), plugins=PLUGINS) as host:
            diag = host.solution("diagnosis")
            events = host.bus.subscribe("alerts/#", name="test-alerts", overflow="drop_oldest")
            await wait_for(lambda: len(diag.state) == 3 and all(s.get("state") == "ok" for s in diag.state.values()),
                           timeout=20)
            plant.inverters["inv1"].trip()
            await wait_for(lambda: any(a["fault"] == "offline" and a["active"] for a in diag.alerts), timeout=10)
            plant.inverters["inv1"].restore()
            await wait_for(lambda: any(a["fault"] == "offline" and not a["active"] for a in diag.alerts), timeout=10)
            kinds = []
            while events.depth:
                message = await events.get()
                kinds.append((message.kind, message.severity, message.data["fault"]))
            assert ("alarm", "critical", "offline") in kinds and ("clear", "info", "offline") in kinds
            # hysteresis: it needed clear_after healthy polls, so exactly one alarm and one clear
            assert sum(1 for k in kinds if k[2] == "offline") == 2


async def test_comms_lost_when_an_inverter_goes_silent(edgeplane_host):
    async with running_plant() as (plant, ports):
        async with edgeplane_host(plant_site(ports, forecast=False), plugins=PLUGINS) as host:
            diag = host.solution("diagnosis")
            await wait_for(lambda: len(diag.state) == 3, timeout=20)
            await plant.inverters["inv3"].stop()
            await wait_for(lambda: any(a["fault"] == "comms_lost" and a["device"] == "inv3" for a in diag.alerts),
                           timeout=15)


@pytest.mark.parametrize("fault,weather,models", [
    ("offline", SteadySun, [1, 701, 702, 704]),  # no 160 and no 714: the evidence says the DC side is missing
    ("lost_string", SteadySun, [1, 701, 702, 704, 160]),
    ("lost_string", SteadySun, [1, 701, 702, 704, 714]),  # its DC side in DER DC measurements (714), no 160
    ("frozen_power", RampSun, [1, 701, 702, 704, 160]),
])
async def test_der_inverter_fault_is_diagnosed_on_its_701_points(edgeplane_host, fault, weather, models):
    """inv2 is an IEEE 1547-2018 DER inverter (701/704, no 103): judged on 701.W, InvSt, Alrm and its DC side,
    read from 160 or from model 714, served by pymodbus."""
    family = "der714" if 714 in models else "der"
    async with running_plant(weather=weather(), families={"inv2": family}) as (plant, ports):
        site = plant_site(ports, forecast=False)
        site["devices"]["inv2"]["sunspec"]["models"] = models
        site["limits"]["inv*/704.WMaxLimPct"] = {"min": 0, "max": 100}
        async with edgeplane_host(site, plugins=PLUGINS) as host:
            diag, dispatch = host.solution("diagnosis"), host.solution("dispatch")
            await wait_for(lambda: len(diag.state) == 3 and all(s.get("state") == "ok" for s in diag.state.values()),
                           timeout=20)
            # the same choice as dispatch's, from what the scan published
            assert diag.points_for("inv2").family == "der" and dispatch.controls_for("inv2").family == "der"
            assert diag.points_for("inv1").family == "legacy" and dispatch.controls_for("inv1").family == "legacy"
            assert diag.state["inv2"]["family"] == "der" and diag.state["inv2"]["power_w"] > 1000
            await asyncio.sleep(1.0)
            assert not [a for a in diag.alerts if a["active"]], diag.alerts
            polls = host.bus.subscribe("inv2/701.W", name="test-polls", overflow="drop_oldest")
            await wait_for_batch(polls, timeout=5)
            if fault == "offline":
                plant.inverters["inv2"].trip()
            elif fault == "lost_string":
                plant.inverters["inv2"].lose_string(2)
            else:
                plant.inverters["inv2"].freeze("701.W")
            found = lambda: [a for a in diag.alerts if a["active"] and a["fault"] == fault and a["device"] == "inv2"]
            counted = 0
            while not found() and counted < 4:
                await wait_for_batch(polls, timeout=5)
                counted += 1
                await asyncio.sleep(0.15)
            assert found(), f"{fault} not raised after {counted} polls; alerts: {diag.alerts}"
            assert counted <= 2, f"{fault} took {counted} polls"
            evidence = found()[0]["evidence"]
            assert evidence["family"] == "der"
            if 160 in models or 714 in models:
                assert evidence["dc_power_w"] > 0 and "missing" not in evidence
                assert len(evidence["string_currents_a"]) == 2
                if 714 in models:  # read from 714's ports: string 2 dark, string 1 at the simulator's 4.4 kW / 600 V
                    v = diag.values["inv2"]
                    assert "714.DCW" in v and not any(k.startswith("160.") for k in v), sorted(v)
                    assert evidence["string_currents_a"][1] == 0 and evidence["string_currents_a"][0] > 5
            else:
                assert evidence["dc_power_w"] is None and evidence["status"] == 6  # 701.InvSt FAULT
                # the same alarm as a legacy inverter's trip (103.Evt1), by model 701's own definition of Alrm
                assert evidence["events"] == ["OVER_TEMP"], evidence
                assert any("714.DCW" in note for note in evidence["missing"]), evidence
            others = [a for a in diag.alerts if a["active"] and (a["fault"], a["device"]) != (fault, "inv2")]
            assert not others, f"only {fault} should be raised, also got {others}"
