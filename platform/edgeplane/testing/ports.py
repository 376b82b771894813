"""Free loopback ports for the servers a test starts (the one helper for this: import it)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing uses right now (TCP, or UDP with ``socket.SOCK_DGRAM``).

    It is picked below the kernel's ephemeral range: a port that ``bind(0)`` hands out is one any
    outgoing connection on the machine may take as its source port next, so a server restarted on
    its old port (a broker in a fault test) could find it taken. Ports below the range are only
    ever taken by a listener that asks for them.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, kind) as s:  # a crowded machine: any free port will do
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
