"""The guarded command path: checks before any write, results, read-back, audit log."""

from __future__ import annotations

import sqlite3

import pytest

from edgeplane import CommandStatus

SITE = {
    "site": {"id": "cmd"},
    "devices": {
        "plc": {
            "connector": "memory",
            "write_delay": 0,
            "points": {
                "speed": {"type": "float64", "access": "rw", "value": 10.0, "limits": {"min": 0, "max": 50}},
                "mode": {"type": "string", "access": "rw", "value": "auto", "limits": {"allowed": ["auto", "manual"]}},
                "count": {"type": "int16", "access": "rw", "scale": 0.1},
                "temp": {"type": "float64", "value": 20.0},
            },
        }
    },
    "limits": {"plc/speed": {"max_rate": "5/s"}},
}
NO_RATE_LIMIT = {**SITE, "limits": {}}


async def execute(host, point, value, **kw):
    return await host.commands.execute("plc", point, value, source="test", **kw)


async def test_ok_write_is_confirmed_by_read_back(edgeplane_host, fake_clock):
    async with edgeplane_host(SITE, clock=fake_clock) as host:
        fake_clock.advance(10)
        result = await execute(host, "speed", 12.0)
        assert result.status is CommandStatus.OK and result.readback == 12.0
        assert host.device("plc").writes == [("speed", 12.0)]
        assert host.bus.latest("plc/speed")[1] == 12.0


@pytest.mark.parametrize(
    ("point", "value", "fragment"),
    [
        ("speed", 51.0, "above the maximum 50"),
        ("speed", -1.0, "below the minimum 0"),
        ("speed", "fast", "is float64; got str"),
        ("speed", float("nan"), "not a finite number"),
        ("mode", "off", "not one of the allowed values"),
        ("temp", 1.0, "read-only"),
        ("sped", 1.0, "did you mean 'speed'"),
        ("count", 4000.0, "does not fit int16"),
    ],
)
async def test_guard_rejects_before_any_write(edgeplane_host, fake_clock, point, value, fragment):
    async with edgeplane_host(SITE, clock=fake_clock) as host:
        result = await execute(host, point, value)
        assert result.status is CommandStatus.REJECTED
        assert fragment in result.message
        assert host.device("plc").writes == []
        assert host.metrics.value("edgeplane_commands_total", device="plc", status="rejected") == 1


async def test_unknown_device_suggests_a_name(edgeplane_host):
    async with edgeplane_host(SITE) as host:
        result = await host.commands.execute("plx", "speed", 1.0, source="test")
        assert result.status is CommandStatus.REJECTED and "did you mean 'plc'" in result.message


async def test_rate_of_change_limit_from_site_pattern(edgeplane_host, fake_clock):
    async with edgeplane_host(SITE, clock=fake_clock) as host:
        fake_clock.advance(1)  # 1 s after start, the device reports 10.0
        plc = host.device("plc")
        await plc.set("speed", 10.0)  # a fresh poll of an unchanged value does not reset the base
        assert (await execute(host, "speed", 16.0)).status is CommandStatus.REJECTED  # 6/s since start
        assert (await execute(host, "speed", 14.0)).ok  # 4/s
        fake_clock.advance(1)
        result = await execute(host, "speed", 24.0)  # 10/s
        assert result.status is CommandStatus.REJECTED and "above max_rate 5/s" in result.message
        fake_clock.advance(1)
        assert (await execute(host, "speed", 24.0)).ok  # 10 in 2 s since the last write: 5/s


async def test_failed_timeout_and_mismatched_read_back(edgeplane_host):
    async with edgeplane_host(NO_RATE_LIMIT) as host:
        plc = host.device("plc")
        plc.fail_writes = ConnectionResetError("socket closed by peer")
        result = await execute(host, "speed", 11.0)
        assert result.status is CommandStatus.FAILED and "socket closed by peer" in result.message
        plc.fail_writes = None
        plc.readback_offset = 1.0
        result = await execute(host, "speed", 11.0)
        assert result.status is CommandStatus.FAILED and "read back 12.0 instead of 11.0" in result.message
        plc.readback_offset = 0.0
        plc.config.write_delay = 5.0
        result = await execute(host, "speed", 11.0, timeout=0.05)
        assert result.status is CommandStatus.TIMEOUT and "state is unknown" in result.message


async def test_integer_read_back_within_half_a_step_is_confirmed(edgeplane_host):
    async with edgeplane_host(SITE) as host:
        host.device("plc").readback_offset = 0.04  # an int16 with scale 0.1 rounds to 0.1 steps
        assert (await execute(host, "count", 12.3)).ok


async def test_every_command_is_audited_append_only(edgeplane_host, tmp_path):
    async with edgeplane_host(NO_RATE_LIMIT) as host:
        await execute(host, "speed", 12.0, reason="operator request")
        await execute(host, "speed", 99.0)
        records = await host.store.audit()
        db_path = host.store.path
    assert [(r["value"], r["status"]) for r in records] == [(12.0, "ok"), (99.0, "rejected")]
    assert records[0]["reason"] == "operator request" and records[0]["source"] == "test"
    db = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET status = 'ok'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit")
    assert db.execute("SELECT count(*) FROM audit").fetchone()[0] == 2
