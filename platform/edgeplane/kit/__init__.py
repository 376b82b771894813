"""The plugin development kit and site provisioning: ``edgeplane plugin ...`` and ``edgeplane site ...``.

* :data:`plugin_group` (``edgeplane plugin new|install|check``): render the template in
  ``plugins/template`` into a new distribution, install a plugin refusing requirement conflicts,
  check a plugin folder before publishing it;
* :data:`site_group` (``edgeplane site init|certs|render|push|doctor``): make a site folder
  from a vertical's reference deployment, its certificates and keys, Kubernetes manifests or a
  systemd unit, publish its site file as signed desired state, and run preflight checks.

Both are click groups, registered by the built-in plugin's ``edgeplane_register_commands``.
Nothing here is imported by the host at run time.
"""

from __future__ import annotations

from typing import Any

__all__ = ["plugin_group", "site_group"]


def __getattr__(name: str) -> Any:
    # the CLI imports this package for every command; the groups' modules pull in more
    if name == "plugin_group":
        from edgeplane.kit.plugin_cli import plugin_group

        return plugin_group
    if name == "site_group":
        from edgeplane.kit.site_cli import site_group

        return site_group
    raise AttributeError(f"module 'edgeplane.kit' has no attribute {name!r}")
