"""Site provisioning: ``edgeplane site init|certs|revoke|render|doctor``.

:data:`~edgeplane.provisioning.site_cli.site_group` makes a site folder from a vertical's reference deployment (or any site
file), its certificates and keys, Kubernetes manifests or a systemd unit, and runs preflight
checks. Publishing a site file as signed desired state is the cloud end's
``edgeplane cloud push-site``, which reads the folder with :func:`~edgeplane.provisioning.site_cli.read_site`.

A click group, registered by the built-in plugin's ``edgeplane_register_commands``. Nothing here
is imported by the host at run time.
"""
