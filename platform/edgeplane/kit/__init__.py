"""The plugin development kit: ``edgeplane plugin new|install|check``.

:data:`plugin_group` renders the template in ``plugins/template`` into a new distribution,
installs a plugin refusing requirement conflicts, and checks a plugin folder before publishing
it. Site provisioning (``edgeplane site ...``) is :mod:`edgeplane.provisioning`.

A click group, registered by the built-in plugin's ``edgeplane_register_commands``. Nothing here
is imported by the host at run time.
"""

from __future__ import annotations

from typing import Any

__all__ = ["plugin_group"]


def __getattr__(name: str) -> Any:
    # the CLI imports this package for every command; the group's modules pull in more
    if name == "plugin_group":
        from edgeplane.kit.plugin_cli import plugin_group

        return plugin_group
    raise AttributeError(f"module 'edgeplane.kit' has no attribute {name!r}")
