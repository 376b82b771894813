"""Test kit: an independent Sparkplug B host application (pysparkplug) to run a site against.

pysparkplug needs paho-mqtt 1.x, so it runs in an environment of its own as a subprocess:
``$EDGEPLANE_SPARKPLUG_PEER`` or ``<venv>/peers/sparkplug/bin/python`` (scripts/setup.sh makes it)::

    peer = await PeerHost.start(broker, "scada")      # connects, subscribes spBv1.0/#
    await peer.send(op="state", online=True)            # the primary host comes online
    nbirth = await peer.wait(lambda m: m["type"] == "NBIRTH")
    await peer.close()
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["PEER_PYTHON", "PeerHost", "by_name"]

PEER_PYTHON = Path(os.environ.get("EDGEPLANE_SPARKPLUG_PEER", Path(sys.prefix) / "peers" / "sparkplug" / "bin" / "python"))
HOST_SCRIPT = Path(__file__).with_name("peer_host.py")


def by_name(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The metrics of a message the peer printed, by name."""
    return {m["name"]: m for m in message["metrics"]}


class PeerHost:
    """The pysparkplug host application as a subprocess: JSON lines out, commands in."""

    def __init__(self, proc: asyncio.subprocess.Process):
        assert proc.stdin is not None and proc.stdout is not None  # started with both piped
        self.proc = proc
        self.stdin, self.stdout = proc.stdin, proc.stdout
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, broker: Any, host_id: str) -> PeerHost:
        if not PEER_PYTHON.exists():
            raise RuntimeError(f"{PEER_PYTHON} is missing: run scripts/setup.sh (it installs pysparkplug there) "
                               f"or point EDGEPLANE_SPARKPLUG_PEER at a Python that has pysparkplug")
        proc = await asyncio.create_subprocess_exec(str(PEER_PYTHON), str(HOST_SCRIPT), broker.host, str(broker.port),
                                                    host_id, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE)
        peer = cls(proc)
        await peer.wait(lambda m: m["type"] == "connected")
        return peer

    async def wait(self, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        for message in self.seen:
            if predicate(message) and not message.get("_taken"):
                message["_taken"] = True
                return message
        async with asyncio.timeout(timeout):
            while True:
                line = await self.stdout.readline()
                if not line:
                    raise AssertionError(f"the peer host ended; it saw {self.seen[-5:]}")
                message = json.loads(line)
                self.seen.append(message)
                if predicate(message):
                    message["_taken"] = True
                    return message

    async def send(self, **command: Any) -> None:
        self.stdin.write((json.dumps(command) + "\n").encode())
        await self.stdin.drain()
        await self.wait(lambda m: m["type"] == "done" and m["op"] == command["op"])

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
