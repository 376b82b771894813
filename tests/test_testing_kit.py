"""The test kit's helpers are written once: free_port lives in edgeplane.testing only."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from edgeplane.testing import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_free_port_gives_a_bindable_port_for_tcp_and_udp():
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        port = free_port(kind)
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", port))  # raises if it was taken
        assert 1024 <= port < 65536


def test_nobody_writes_free_port_again():
    copies = []
    paths = [p for top in ("platform", "connectors", "uplinks", "solutions", "plugins", "tests", "benchmarks")
             for p in (ROOT / top).rglob("*.py")]
    for path in paths:
        relative = path.relative_to(ROOT).as_posix()
        if relative == "platform/edgeplane/testing.py" or "/build/" in relative or "/node_modules/" in relative:
            continue
        if re.search(r"^def _?free_port\(", path.read_text(errors="replace"), re.M):
            copies.append(relative)
    assert not copies, f"import free_port from edgeplane.testing instead: {copies}"
