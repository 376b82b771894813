"""The ntcip connector against a real SNMP agent (the controller simulator) on the loopback."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

import edgeplane_ntcip.plugin as plugin
from edgeplane import Quality, SimulatedClock
from edgeplane.testing import wait_for
from edgeplane_ntcip.config import NtcipConfig
from edgeplane_ntcip.connector import poll_wait
from edgeplane_ntcip.mib import OBJECTS
from edgeplane_ntcip.simulator import PhaseTiming
from edgeplane_ntcip.session import NtcipAuthError, NtcipNoSuchObject, NtcipRejected, NtcipTimeout, SnmpCredentials, SnmpSession

from edgeplane_ntcip.testing import SIM_START as START, SIM_USER as USER

GREENS = OBJECTS["phaseStatusGroupGreens"].instance(1)


def device(agent, **extra) -> dict:
    return {"connector": "ntcip", "host": "127.0.0.1", "port": agent.port, "community": "rw-secret", "poll": 0.05,
            "timeout": 0.3, "retries": 0, "reconnect_initial": 0.05, "reconnect_max": 0.2,
            "signal": {"name": "t", "stages": [[1], [2], [3], [4]]},
            "points": {"sb_occupancy": {"object": "detectorOccupancy", "index": 1, "scale": 0.5, "unit": "%"},
                       "sb_count": {"object": "detectorVolume", "index": 1},
                       "hold": {"object": "phaseControlGroupHold", "index": 1, "access": "rw"}},
            **extra}


async def test_v2c_and_v3_read_the_controller_and_bad_credentials_say_what_to_check(controller) -> None:
    agent = await controller()
    v2c = SnmpSession("ctl", "127.0.0.1", agent.port, SnmpCredentials(community="rw-secret"), 0.3, 0)
    v3 = SnmpSession("ctl", "127.0.0.1", agent.port, SnmpCredentials("3", user="tms", auth_protocol="sha256", auth_key=USER.auth_key,
                                                                  priv_protocol="aes128", priv_key=USER.priv_key), 0.3, 0)
    for session in (v2c, v3):
        values = await session.get([GREENS, OBJECTS["globalTime"].instance(), OBJECTS["phaseYellowChange"].instance(2)])
        assert values == {GREENS: 0b0001, OBJECTS["globalTime"].instance(): int(START), OBJECTS["phaseYellowChange"].instance(2): 30}
    wrong_community = SnmpSession("ctl", "127.0.0.1", agent.port, SnmpCredentials(community="public"), 0.2, 0)
    with pytest.raises(NtcipTimeout, match="community"):
        await wrong_community.get([GREENS])
    wrong_key = SnmpSession("ctl", "127.0.0.1", agent.port, SnmpCredentials("3", user="tms", auth_protocol="sha256",
                                                                         auth_key="not-the-key", priv_protocol="aes128",
                                                                         priv_key=USER.priv_key), 0.3, 0)
    with pytest.raises(NtcipAuthError, match="auth_key"):
        await wrong_key.get([GREENS])
    with pytest.raises(NtcipNoSuchObject, match=r"1\.3\.6\.1\.4\.1\.1206\.4\.2\.1\.1\.4\.1\.4\.3"):
        await v2c.get([GREENS, OBJECTS["phaseStatusGroupGreens"].instance(3)])  # phase group 3: phases 17-24
    with pytest.raises(NtcipRejected, match="notWritable"):
        await v2c.set({GREENS: 2})
    with pytest.raises(NtcipRejected, match="wrongValue"):
        await v2c.set({OBJECTS["phaseControlGroupHold"].instance(1): 300})
    for session in (v2c, v3, wrong_community, wrong_key):
        session.close()
    # GETNEXT walks the agent in OID order (snmpwalk works against the simulator)
    from pysnmp.hlapi.v3arch.asyncio import CommunityData, ContextData, ObjectIdentity, ObjectType, SnmpEngine, UdpTransportTarget, next_cmd

    engine = SnmpEngine()
    target = await UdpTransportTarget.create(("127.0.0.1", agent.port), timeout=0.5, retries=0)
    _, status, _, answer = await next_cmd(engine, CommunityData("rw-secret"), target, ContextData(),
                                          ObjectType(ObjectIdentity(OBJECTS["phaseStatusGroupReds"].oid)), lookupMib=False)
    engine.close_dispatcher()
    assert not int(status) and str(answer[0][0]) == OBJECTS["phaseStatusGroupReds"].instance(1) and int(answer[0][1]) == 0b1110


def test_config_errors_name_the_field_and_the_fix() -> None:
    base = {"connector": "ntcip", "host": "10.0.0.5"}
    cases = [
        ({"points": {"g": {"object": "phaseStatusGroupGreen", "index": 1}}}, "not an NTCIP object this connector knows"),
        ({"points": {"g": {"object": "phaseStatusGroupGreens", "index": 1, "access": "rw"}}}, "read-only in NTCIP 1202"),
        ({"points": {"g": {"object": "detectorVolume", "index": 0}}}, "rows are numbered 1..255"),
        ({"points": {"g": {"oid": "1.3.6.x"}}}, "not a numeric OID"),
        ({"version": "3"}, "needs 'user'"),
        ({"version": "3", "user": "tms", "auth_key": "short"}, "at least 8 characters"),
        ({"signal": {"name": "t", "stages": [[1], [1]]}}, "same phase set twice"),
        ({"signal": {"name": "t", "stages": [[1], [17]]}}, r"phases \(1..16\)"),
    ]
    for extra, message in cases:
        with pytest.raises(ValidationError, match=message):
            NtcipConfig.model_validate({**base, **extra})


async def test_the_connector_publishes_status_and_detectors_once_per_period(controller, edgeplane_host) -> None:
    agent = await controller()
    model = agent.model
    clock = SimulatedClock(START)
    site = {"site": {"id": "ntcip"}, "devices": {"ctl": device(agent, time_source="controller")}}
    async with edgeplane_host(site, plugins=[plugin], clock=clock) as host:
        sub = host.bus.subscribe(["ctl/sb_count", "ctl/t.phase"], name="probe", maxsize=1000)
        from edgeplane_ntcip.simulator import DetectorReading

        for second in range(1, 4):
            model.step({1: DetectorReading(volume=second, occupancy=0.25, active=True), 2: DetectorReading()})
            await wait_for(lambda: (host.bus.latest("ctl/t.phase") or (0, 0))[0] >= START + second, timeout=5)
        await asyncio.sleep(0.1)  # several more polls of an unchanged period publish nothing
        seen = []
        while (message := sub.get_nowait()) is not None:
            seen.append(message)
        counts = [float(b.values[-1]) for b in seen if b.topic == "ctl/sb_count"]
        assert counts == [1.0, 2.0, 3.0]  # one reading per period, none repeated
        assert clock.now() == START + 3  # the controller's globalTime drives the simulated clock
        assert float(host.bus.latest("ctl/sb_occupancy")[1]) == 25.0  # 50 half-percent steps
        assert float(host.bus.latest("ctl/t.phase")[1]) == 0  # green 0 = phase 1 shows
        assert host.metrics.value("edgeplane_ntcip_polls_total", device="ctl", result="unchanged") > 0


async def test_phase_commands_leave_the_controllers_timing_authoritative(controller, edgeplane_host) -> None:
    normal = PhaseTiming(min_green=5, max_green=50, yellow=3, red_clear=2)
    timing = {1: normal, 2: normal, 3: PhaseTiming(min_green=20, max_green=50, yellow=3, red_clear=2), 4: normal}
    agent = await controller(tick=0.05, timing=timing)  # 20 controller seconds per wall second
    model = agent.model
    site = {"site": {"id": "ntcip"}, "devices": {"ctl": device(agent, time_source="controller", confirm_timeout=0.5)}}
    async with edgeplane_host(site, plugins=[plugin], clock=SimulatedClock(START)) as host:
        await wait_for(lambda: host.bus.latest("ctl/t.phase") is not None, timeout=5)
        await wait_for(lambda: model.timer >= 5, timeout=5)
        # leave green 0 for green 2: the yellow (0, 2) of the phase table is index 4 + 0 * 3 + 1 = 5
        sequence = [5, 16, 2]  # yellow, all-red, green 2: each confirmed once the controller shows it
        for k, index in enumerate(sequence):
            result = await host.commands.execute("ctl", "t.phase", index, source="test", timeout=3)
            # or not yet / no longer: the controller times the clearance, not the command
            assert result.ok or result.readback in sequence[max(0, k - 1):], result
        await wait_for(lambda: model.display()[:2] == ("G", 2), timeout=3)
        await wait_for(lambda: model.control["hold"] == {3}, timeout=3)  # the connector holds the green it asked for
        # straight away, towards green 0: the controller keeps green 2 for its minimum green (20 s = 1 s here)
        result = await host.commands.execute("ctl", "t.phase", 4 + 2 * 3 + 0, source="test", timeout=3)
        assert result.status.value == "failed" and result.readback == 2
        await wait_for(lambda: model.display()[:2] == ("Y", 2), timeout=10)
    intervals = model.intervals()
    assert [(i, s) for i, s, _ in intervals[:4]] == [("G", 0), ("Y", 0), ("R", 0), ("G", 2)]
    assert [d for _, _, d in intervals[1:4]] == [3.0, 2.0, intervals[3][2]] and intervals[3][2] >= 20.0
    assert model.monitor.faults == []
    # at stop the connector hands the intersection back: no central control words remain
    assert all(not words for words in model.control.values())


async def test_a_controller_that_does_not_answer_degrades_the_device_and_recovers(controller, edgeplane_host) -> None:
    agent = await controller()
    port = agent.port
    await agent.stop()  # the controller goes off-line before the host starts
    site = {"site": {"id": "ntcip"}, "devices": {"ctl": device(agent)}}
    async with edgeplane_host(site, plugins=[plugin]) as host:
        ctl = host.device("ctl")
        await wait_for(lambda: host.metrics.value("edgeplane_ntcip_request_errors_total", device="ctl", reason="timeout") >= 2, timeout=10)
        assert ctl.health.state.value == "degraded" and "community" in ctl.health.detail
        assert host.bus.latest("ctl/t.phase")[2] == Quality.BAD
        await controller(port=port)  # back on the same port: the backoff finds it
        await wait_for(lambda: ctl.health.state.value == "ok", timeout=10)
        await wait_for(lambda: (host.bus.latest("ctl/t.phase") or (0, float("nan")))[1] == 0, timeout=5)


async def test_points_the_controller_lacks_are_published_bad_and_the_rest_good(controller, edgeplane_host) -> None:
    agent = await controller()
    points = {"ok": {"object": "phaseStatusGroupGreens", "index": 1},
              "absent": {"object": "detectorVolume", "index": 9},  # the simulator has detectors 1-2
              "vendor": {"oid": "1.3.6.1.4.1.1206.3.5.2.1.22.0"}}
    site = {"site": {"id": "ntcip"}, "devices": {"ctl": device(agent, signal=None, points=points)}}
    async with edgeplane_host(site, plugins=[plugin]) as host:
        await wait_for(lambda: host.bus.latest("ctl/vendor") is not None, timeout=5)
        assert float(host.bus.latest("ctl/ok")[1]) == 1.0
        for name in ("absent", "vendor"):
            _, value, quality = host.bus.latest(f"ctl/{name}")
            assert value != value and quality == Quality.BAD
        assert host.device("ctl").health.state.value == "ok"  # one missing object does not take the device down


async def test_a_simulators_private_objects_read_as_points_and_refuse_sets(edgeplane_host) -> None:
    from edgeplane_ntcip.simulator import NEMA_PRIVATE, ControllerAgent, SignalControllerModel

    measured = {"delay_cs": 1234}
    own = f"{NEMA_PRIVATE}.65535.1.3.0"
    with pytest.raises(ValueError, match="nemaPrivate"):
        ControllerAgent(SignalControllerModel([[1], [2]]), private={"1.3.6.1.2.1.1.1.0": lambda: 1})
    agent = ControllerAgent(SignalControllerModel([[1], [2]], start_time=START), community="rw-secret",
                            private={own: lambda: measured["delay_cs"], f"{NEMA_PRIVATE}.65535.1.9.0": lambda: None})
    await agent.start()
    try:
        points = {"delay": {"oid": own, "scale": 0.01, "unit": "s"}, "gone": {"oid": f"{NEMA_PRIVATE}.65535.1.9.0"}}
        site = {"site": {"id": "ntcip"}, "devices": {"ctl": device(agent, signal=None, points=points)}}
        async with edgeplane_host(site, plugins=[plugin]) as host:
            await wait_for(lambda: host.bus.latest("ctl/delay") is not None, timeout=5)
            assert float(host.bus.latest("ctl/delay")[1]) == pytest.approx(12.34)
            measured["delay_cs"] = 2500  # read live at every GET
            await wait_for(lambda: float(host.bus.latest("ctl/delay")[1]) == pytest.approx(25.0), timeout=5)
            assert host.bus.latest("ctl/gone")[2] == Quality.BAD  # None: no such instance
        session = SnmpSession("ctl", "127.0.0.1", agent.port, SnmpCredentials(community="rw-secret"), 0.3, 0)
        with pytest.raises(NtcipRejected, match="notWritable"):
            await session.set({own: 1})
        session.close()
    finally:
        await agent.stop()


async def test_v3_faulty_loops_and_control_that_lapses(controller, edgeplane_host) -> None:
    from edgeplane_ntcip.simulator import DetectorReading

    agent = await controller(control_timeout=10.0)
    model = agent.model
    v3 = device(agent, version="3", user=USER.user, auth_protocol="sha256", auth_key=USER.auth_key, priv_protocol="aes128",
                priv_key=USER.priv_key, time_source="controller")
    async with edgeplane_host({"site": {"id": "ntcip"}, "devices": {"ctl": v3}}, plugins=[plugin], clock=SimulatedClock(START)) as host:
        model.step({1: DetectorReading(volume=2, occupancy=0.5, fault=212), 2: DetectorReading()})  # loop 1: a fault code
        await wait_for(lambda: (host.bus.latest("ctl/sb_count") or (0,))[0] >= START + 1, timeout=5)
        _, occupancy, quality = host.bus.latest("ctl/sb_occupancy")
        assert occupancy != occupancy and quality == Quality.BAD  # 212 is a fault, not 106 %
        assert host.bus.latest("ctl/sb_count")[1:] == (2.0, Quality.GOOD)
        # central control over v3: a hold the controller keeps while it is rewritten ...
        assert (await host.commands.execute("ctl", "hold", 1, source="test", timeout=3)).ok
    assert model.control["hold"] == {1}  # (raw control points are the integrator's: not cleared at stop)
    for _ in range(11):  # ... and drops when nobody rewrites it for control_timeout (10 s)
        model.step({})
    assert model.control["hold"] == set() and model.control_lapses == 1


def test_polling_rests_after_a_new_period_but_never_past_two_polls():
    # a cabinet at 10x: 100 ms periods, 40 ms polls: rest 60 % of the period after a fresh one
    assert poll_wait(0.01, 0.04, None) == pytest.approx(0.03)
    assert poll_wait(0.01, 0.04, 0.1) == pytest.approx(0.05)
    # a field controller with a one-minute volume period, polled every second: phase status is read
    # again within two polls, not after 36 s
    assert poll_wait(0.1, 1.0, 60.0) == pytest.approx(1.9)
    assert poll_wait(0.1, 1.0, None) == pytest.approx(0.9)
