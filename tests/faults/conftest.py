"""Fixtures for fault injection: a small real filesystem that can be filled up; the MQTT
plugin's publisher (opt-in, imported by name; the broker is the core kit's ``mqtt_broker``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from edgeplane_mqtt.testing import mqtt_publisher  # noqa: F401 - a fixture


class SmallDisk:
    """A tmpfs of a few MB (as root), or, where mounting is not allowed, a folder whose outboxes
    are capped with SQLite's ``max_page_count`` (same SQLITE_FULL, no real filesystem)."""

    def __init__(self, path: Path, size: int, mounted: bool):
        self.path = path
        self.size = size
        self.mounted = mounted

    def fill(self, leave: int = 0) -> Path:
        """Write a ballast file until only ``leave`` bytes are free; returns it (delete it to free space)."""
        ballast = self.path / "ballast.bin"
        free = shutil.disk_usage(self.path).free
        with open(ballast, "ab") as f:
            chunk = b"\0" * 65536
            remaining = free - leave
            try:
                while remaining > 0:
                    remaining -= f.write(chunk[: min(len(chunk), remaining)])
                    f.flush()
            except OSError:
                pass
        return ballast


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    path = tmp_path / "small-disk"
    path.mkdir()
    size = 16 * 1024 * 1024
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0
    if not mounted:
        pytest.fail("a small filesystem is needed: run the tests as root (CI does), so a tmpfs can be mounted")
    try:
        yield SmallDisk(path, size, mounted)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
