"""The ``cloud`` plugin: adds ``edgeplane cloud ...`` and ``edgeplane fleet ...`` to the edgeplane CLI."""

from __future__ import annotations

from edgeplane import hookimpl


@hookimpl
def edgeplane_register_commands(register):
    from edgeplane_cloud.cli import cloud, fleet

    register(cloud)
    register(fleet)
