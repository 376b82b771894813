"""The plugin development kit: ``edgeplane plugin new|install|check``.

:data:`~edgeplane.kit.plugin_cli.plugin_group` renders the template in ``plugins/template`` into a new distribution,
installs a plugin refusing requirement conflicts, and checks a plugin folder before publishing
it. Site provisioning (``edgeplane site ...``) is :mod:`edgeplane.provisioning`.

A click group, registered by the built-in plugin's ``edgeplane_register_commands``. Nothing here
is imported by the host at run time.
"""
