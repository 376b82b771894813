"""Fixtures for the sync tests: a real Mosquitto broker per test, restartable on the same port."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from edgeplane.testing import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Broker:
    """A Mosquitto process with persistence (so a restart keeps sessions and queued messages)."""

    def __init__(self, folder: Path, extra: str = "", port: int | None = None):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = folder / "mosquitto.conf"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def write_config(self) -> None:
        listener = self.extra or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        self.conf.write_text(
            "user root\n"
            f"{listener}"
            "persistence true\n"
            f"persistence_location {self.folder}/\n"
            "autosave_interval 1\n"
            # bursts of QoS 1 messages: the default queue of 1000 per client would drop them
            "max_queued_messages 1000000\n"
            "max_inflight_messages 100\n"
            f"log_dest file {self.folder}/mosquitto.log\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )

    def start(self, timeout: float = 10.0) -> None:
        self.write_config()
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''} "
                                   f"{(self.folder / 'mosquitto.log').read_text() if (self.folder / 'mosquitto.log').exists() else ''}")
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not open its port")
            time.sleep(0.05)

    def stop(self) -> None:
        """Graceful stop (SIGTERM): Mosquitto writes its persistence file."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


async def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> None:
    """Poll ``predicate`` (sync) until true; fail with ``what`` after a generous timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
