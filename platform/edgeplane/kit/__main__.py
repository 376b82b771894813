"""``python -m edgeplane.kit plugin|site ...``: the kit's commands before the CLI registers them."""

import click

from edgeplane.kit.plugin_cli import plugin_group
from edgeplane.kit.site_cli import site_group

main = click.Group("edgeplane-kit", commands={"plugin": plugin_group, "site": site_group},
                   help="The plugin development kit and site provisioning.")

if __name__ == "__main__":
    main()
