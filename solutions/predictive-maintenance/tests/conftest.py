"""Fixtures of edgeplane-pdm's tests (helpers live in edgeplane_pdm.testkit)."""

from __future__ import annotations

import pytest


@pytest.fixture
def plugins():
    import edgeplane_opcua.plugin
    import edgeplane_pdm.plugin

    return [edgeplane_opcua.plugin, edgeplane_pdm.plugin]


@pytest.fixture
def mosquitto(tmp_path):
    """A Mosquitto broker on a free loopback port; yields its mqtt:// URL."""
    import shutil
    import socket
    import subprocess
    import time

    from edgeplane_pdm.testkit import free_port

    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"mosquitto did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.05)
    yield f"mqtt://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
