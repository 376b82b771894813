"""Registers the ``thingsboard`` uplink transport."""

from __future__ import annotations

from edgeplane import hookimpl


@hookimpl
def edgeplane_register_transports(register):
    from edgeplane_thingsboard.transport import ThingsBoardTransport

    register("thingsboard", ThingsBoardTransport)
