"""Site provisioning: ``edgeplane site init|certs|revoke|render|doctor``.

:data:`site_group` makes a site folder from a vertical's reference deployment (or any site
file), its certificates and keys, Kubernetes manifests or a systemd unit, and runs preflight
checks. Publishing a site file as signed desired state is the cloud end's
``edgeplane cloud push-site``, which reads the folder with :func:`~edgeplane.provisioning.site_cli.read_site`.

A click group, registered by the built-in plugin's ``edgeplane_register_commands``. Nothing here
is imported by the host at run time.
"""

from __future__ import annotations

from typing import Any

__all__ = ["site_group"]


def __getattr__(name: str) -> Any:
    # the CLI imports this package for every command; the group's modules pull in more
    if name == "site_group":
        from edgeplane.provisioning.site_cli import site_group

        return site_group
    raise AttributeError(f"module 'edgeplane.provisioning' has no attribute {name!r}")
