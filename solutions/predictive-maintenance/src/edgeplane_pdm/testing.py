"""Helpers for tests and demos of the factory line: the simulator in this event loop, and a site dict."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from edgeplane.testing import free_port
from edgeplane_pdm.features import CWRU_DRIVE_END

__all__ = ["free_port", "line_server", "line_site"]


@contextlib.asynccontextmanager
async def line_server(machines: int = 2, *, degrade_after: float = 4.0, degrade_over: float = 8.0, period: float = 0.25):
    """The line simulator serving in this event loop; yields its endpoint URL."""
    from edgeplane_pdm.linesim import animate, build

    port = free_port()
    server, line = await build(port, machines)
    async with server:
        task = asyncio.create_task(animate(server, line, period=period, degrade_after=degrade_after, degrade_over=degrade_over))
        try:
            yield f"opc.tcp://127.0.0.1:{port}/edgeplane/line/"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def line_site(url: str, machines: int = 2, *, commissioning: int = 6, persist: int = 2, sync: dict[str, Any] | None = None) -> dict[str, Any]:
    """A site: one OPC UA device for the line, the pdm solution over every machine, inference on CPU."""
    points: dict[str, Any] = {}
    solution_machines: dict[str, Any] = {}
    for i in range(1, machines + 1):
        points[f"m{i}_vibration"] = {"node": f"ns=2;s=Line.M{i}.Vibration", "sample_rate": 12000, "unit": "g"}
        points[f"m{i}_temperature"] = {"node": f"ns=2;s=Line.M{i}.Temperature", "unit": "degC"}
        solution_machines[f"m{i}"] = {
            "vibration": f"line/m{i}_vibration", "temperature": f"line/m{i}_temperature",
            "sample_rate": 12000, "shaft_rpm": 1797, "bearing": CWRU_DRIVE_END.model_dump(),
        }
    site: dict[str, Any] = {
        "site": {"id": "factory-test"},
        "devices": {"line": {"connector": "opcua", "url": url, "publishing_interval": "100ms", "sampling_interval": "50ms",
                             "queue_size": 4, "points": points}},
        "solutions": {"pdm": {"type": "pdm", "window": 4096, "commissioning": commissioning,
                              "alert": {"high": 6, "clear": 3, "critical": 12, "persist": persist}, "machines": solution_machines}},
        "inference": {"providers": ["cpu"], "models": "models"},
    }
    if sync:
        site["sync"] = sync
    return site
