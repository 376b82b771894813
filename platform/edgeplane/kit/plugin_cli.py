"""``edgeplane plugin new|install|check``: write, install and check plugins."""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["plugin_group"]


@click.group(name="plugin")
def plugin_group() -> None:
    """Write, install and check plugins (connectors and solutions)."""


@plugin_group.command("new")
@click.argument("kind", type=click.Choice(["connector", "solution"]))
@click.argument("name")
@click.option("--dir", "parent", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="Folder to create edgeplane-NAME in.")
def new(kind: str, name: str, parent: Path) -> None:
    """Render the plugin template into a new distribution edgeplane-NAME that installs and passes its tests."""
    from edgeplane.kit.template import TemplateError, names_for, render

    try:
        target = render(kind, name, parent)
        names = names_for(name)
    except TemplateError as e:
        raise click.ClickException(str(e)) from None
    example = f"connector: {names.type}" if kind == "connector" else f"type: {names.type}.monitor"
    click.echo(f"created {target} ({kind} {example!r})\n"
               f"next:\n  cd {target}\n  pip install -e '.[testing]' && pytest\n  edgeplane plugin check .")


@plugin_group.command("install")
@click.argument("target", metavar="NAME_OR_PATH")
@click.option("-e", "--editable", is_flag=True, help="Install a folder in editable mode (for development).")
@click.option("--no-build-isolation", is_flag=True, help="Build with the packages already installed (offline hosts).")
@click.option("--index-url", default=None, help="Package index to install from.")
@click.option("--no-index", is_flag=True, help="Use no package index: every requirement must be installed already or local.")
def install(target: str, editable: bool, no_build_isolation: bool, index_url: str | None, no_index: bool) -> None:
    """Install a plugin into this host's environment; refuse if its requirements conflict with what is installed."""
    from edgeplane.kit.install import InstallError, install_plugin

    pip_args: tuple[str, ...] = ()
    if no_build_isolation:
        pip_args += ("--no-build-isolation",)
    if index_url:
        pip_args += ("--index-url", index_url)
    if no_index:
        pip_args += ("--no-index",)
    try:
        dist, registered, _ = install_plugin(target, editable=editable, pip_args=pip_args)
    except InstallError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo(f"installed {dist}")
    if not registered:
        click.echo("warning: it registers no plugin in the entry-point group 'edgeplane'", err=True)
    for info in registered:
        if info["error"]:
            click.echo(f"  plugin {info['name']}: BROKEN: {info['error']}")
            continue
        click.echo(f"  plugin {info['name']} {info['version'] or ''}".rstrip())
        for kind, names in sorted(info["registered"].items()):
            click.echo(f"    {kind}: {', '.join(names)}")


@plugin_group.command("check")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("."))
def check(path: Path) -> None:
    """Check a plugin folder: entry point, hooks known and documented, config model exportable, tests present."""
    from edgeplane.kit.checks import check_plugin

    results = check_plugin(path)
    for result in results:
        click.echo(result.line())
    failed = [r for r in results if not r.passed]
    click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        sys.exit(1)
