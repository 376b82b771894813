"""Registers the ``sparkplug`` uplink transport."""

from __future__ import annotations

from edgeplane import hookimpl


@hookimpl
def edgeplane_register_transports(register):
    from edgeplane_sparkplug.transport import SparkplugTransport

    register("sparkplug", SparkplugTransport)
