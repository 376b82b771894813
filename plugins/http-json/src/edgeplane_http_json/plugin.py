"""The hookimpls edgeplane calls for this plugin."""

from __future__ import annotations

from edgeplane import hookimpl

from edgeplane_http_json.connector import HttpJsonConnector


@hookimpl
def edgeplane_register_connectors(register):
    """Register ``connector: http_json``."""
    register("http_json", HttpJsonConnector)
