"""Fixtures for the solar tests."""

from __future__ import annotations

import pytest

from edgeplane_solar.simulator import TmyWeather


@pytest.fixture(scope="session")
def tmy() -> TmyWeather:
    return TmyWeather()


@pytest.fixture
def mosquitto():
    """A Mosquitto broker on a free loopback port (its default, local-only configuration)."""
    import shutil
    import socket
    import subprocess
    import time

    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"mosquitto did not start on port {port} (apt-get install mosquitto)")
        time.sleep(0.05)
    yield f"mqtt://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(5)
