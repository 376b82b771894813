"""Stopping a real ``edgeplane run``: bounded in time whatever the uplink does, and no process it
started is left behind, on SIGINT, SIGTERM, a second Ctrl-C, or a SIGKILL of the host itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgeplane.testing import free_port

# a device simulator that has a child of its own (as a shell script or a broker wrapper would)
SIMULATOR = """
import os, signal, socket, subprocess, sys, time
if sys.argv[3] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stop has to wait for its stop_timeout
child = subprocess.Popen(["sleep", "300"])
open(sys.argv[2], "w").write(f"{os.getpid()} {child.pid}")
if os.geteuid() == 0:
    # drop root as Mosquitto does: the kernel then clears any parent-death signal of this process
    os.setgid(65534); os.setuid(65534)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
while True:
    c, _ = s.accept(); c.close()
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.fixture
def black_hole():
    """A TCP port that completes the handshake and never answers: an uplink that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield f"mqtt://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def start_site(tmp_path: Path, uplink: str, stubborn: bool = False) -> tuple[subprocess.Popen[bytes], list[int]]:
    pids_file = tmp_path / "pids"
    port = free_port()
    site = {
        "site": {"id": "stopper"},
        "simulators": {"line": {"command": ["{python}", "-c", SIMULATOR, str(port), str(pids_file),
                                            "stubborn" if stubborn else "polite"],
                                "ready": f"tcp://127.0.0.1:{port}", "stop_timeout": 30}},
        "devices": {"m": {"connector": "memory", "points": {"x": {"value": 1.0}}}},
        "sync": {"uplink": {"url": uplink}, "policy": [{"topics": "m/#", "priority": "low"}]},
        "store": {"path": str(tmp_path / "store")},
        "http": {"port": None},
    }
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site))
    proc = subprocess.Popen([sys.executable, "-m", "edgeplane.cli", "run", str(tmp_path / "site.yaml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not (pids_file.exists() and pids_file.read_text().count(" ") == 1):
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the site did not start its simulator"
        time.sleep(0.05)
    time.sleep(1.0)  # the host is running: devices up, uplink hanging on the black hole
    return proc, [int(p) for p in pids_file.read_text().split()]


def wait_exit(proc: subprocess.Popen[bytes], within: float) -> float:
    began = time.monotonic()
    try:
        proc.wait(within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"edgeplane run did not exit within {within} s") from None
    return time.monotonic() - began


def reap(pids: list[int]) -> list[int]:
    """The pids still alive after a short grace; kills them so the test leaves nothing either."""
    deadline = time.monotonic() + 3
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_host_in_bounded_time_and_reaps_its_children(tmp_path, black_hole, sig):
    proc, pids = start_site(tmp_path, black_hole)
    proc.send_signal(sig)
    wait_exit(proc, within=20)
    assert proc.returncode == 0
    assert reap(pids) == []


def test_a_second_ctrl_c_exits_at_once_and_still_reaps_children(tmp_path, black_hole):
    proc, pids = start_site(tmp_path, black_hole, stubborn=True)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)  # the graceful stop now waits up to 30 s for the simulator that ignores SIGTERM
    proc.send_signal(signal.SIGINT)
    wait_exit(proc, within=5)
    assert proc.returncode == 130  # what a shell reports for a Ctrl-C
    assert reap(pids) == []


def test_a_sigkilled_host_takes_its_simulators_with_it(tmp_path, black_hole):
    proc, pids = start_site(tmp_path, black_hole)
    proc.kill()
    proc.wait()
    # the host cannot act when killed: each simulator's guard is told (parent-death signal) and
    # ends its whole group, also a simulator that dropped root and its own child
    assert reap(pids) == []
