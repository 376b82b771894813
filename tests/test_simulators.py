"""Companion processes: started before the devices, waited for, supervised, stopped after."""

from __future__ import annotations

import os
import socket

import pytest

from edgeplane import SiteError
from edgeplane.testing import free_port, wait_for

SERVER = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "time.sleep(0.3)\n"  # slow to come up: the host must wait for it
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
    "print('listening', flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.close()\n"
)


def site_with(simulators, **extra):
    return {"site": {"id": "sim"}, "simulators": simulators, "supervision": {"backoff_initial": 0.05}, **extra}


async def test_simulator_is_ready_before_devices_and_stopped_after(edgeplane_host):
    port = free_port()
    site = site_with({"srv": {"command": ["{python}", "-c", SERVER, str(port)], "ready": f"tcp://127.0.0.1:{port}"}},
                     devices={"m": {"connector": "memory", "points": {"x": {"value": 1.0}}}})
    async with edgeplane_host(site) as host:
        # the device started only after the simulator accepted connections
        assert host.health()["simulator:srv"]["state"] == "ok"
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        pid = host.parts["simulator:srv"].obj.process.pid
        assert list(host.parts)[:1] == ["simulator:srv"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped with the host


async def test_a_simulator_that_exits_is_restarted(edgeplane_host, tmp_path):
    port = free_port()
    marker = tmp_path / "runs"
    # exits at once on the first run, serves on the second
    code = (f"import pathlib, sys\np = pathlib.Path({str(marker)!r})\nruns = int(p.read_text()) if p.exists() else 0\n"
            f"p.write_text(str(runs + 1))\nif runs == 0: sys.exit(3)\n" + SERVER)
    site = site_with({"flaky": {"command": ["{python}", "-c", code, str(port)], "ready": f"tcp://127.0.0.1:{port}"}})
    async with edgeplane_host(site) as host:
        await wait_for(lambda: host.health()["simulator:flaky"]["state"] == "ok", timeout=20)
        assert host.health()["simulator:flaky"]["restarts"] >= 1
        assert marker.read_text() == "2"


async def test_a_missing_program_is_a_clear_failure(edgeplane_host):
    site = site_with({"nope": {"command": ["edgeplane-no-such-program"], "ready": "tcp://127.0.0.1:9"}})
    async with edgeplane_host(site) as host:
        detail = host.health()["simulator:nope"]["detail"]
        assert "cannot start 'edgeplane-no-such-program'" in detail and "check 'command:'" in detail


def test_ready_must_be_a_tcp_address(edgeplane_site):
    with pytest.raises(SiteError, match="is not a tcp://HOST:PORT address"):
        edgeplane_site(site_with({"x": {"command": ["true"], "ready": "localhost:80"}}))
