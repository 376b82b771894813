"""ThingsBoard gateway API uplink for edgeplane (``sync.uplink.transport: thingsboard``)."""

from __future__ import annotations

from edgeplane_thingsboard.transport import ThingsBoardConfig, ThingsBoardTransport

__all__ = ["ThingsBoardConfig", "ThingsBoardTransport"]
