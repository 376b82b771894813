"""``python -m edgeplane.kit plugin ...``: the kit's commands before the CLI registers them."""

import click

from edgeplane.kit.plugin_cli import plugin_group

main = click.Group("edgeplane-kit", commands={"plugin": plugin_group}, help="The plugin development kit.")

if __name__ == "__main__":
    main()
