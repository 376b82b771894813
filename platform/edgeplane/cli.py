"""The ``edgeplane`` command line.

Core commands: ``run``, ``validate``, ``schema``, ``plugins list``. Plugins add theirs through
the ``edgeplane_register_commands`` hook (``edgeplane modbus scan`` ...).

Exit codes: 0 ok, 1 runtime failure, 2 invalid site file or usage.
"""

from __future__ import annotations

import asyncio
import json
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from edgeplane.errors import EdgeplaneError, SiteError

if TYPE_CHECKING:
    from edgeplane.config import Site
    from edgeplane.plugins import Plugins

DEFAULT_SITE = "default.yaml"


def default_site_path() -> Path:
    """The built-in site that ``edgeplane run`` runs when given no site file."""
    return Path(str(resources.files("edgeplane.builtin") / "sites" / DEFAULT_SITE))


def _plugins(ctx: click.Context | None = None) -> Plugins:
    from edgeplane.plugins import Plugins

    root = ctx.find_root() if ctx is not None else None
    loaded = root.obj.get("plugins") if root is not None and root.obj is not None else None
    if isinstance(loaded, Plugins):
        return loaded
    plugins = Plugins.load()
    if root is not None:
        root.obj = {**(root.obj or {}), "plugins": plugins}
    return plugins


def _load(site_path: Path, plugins: Plugins) -> Site:
    from edgeplane.config import load_site

    return load_site(site_path, plugins.registry)


def load_with_cloud_overlay(site_path: Path, plugins: Plugins) -> tuple[Site, dict[str, Any]]:
    """The local site file, with the last desired config the cloud sent merged on top.

    A site that was reconfigured from the cloud starts, offline too, from its last good
    configuration; if that no longer validates (a plugin was removed), the local file is used.
    Returns the site and the local document the overlay was merged onto.
    """
    import copy
    import logging

    from edgeplane.config import parse_site

    local = _load(site_path, plugins)
    if local.core.sync is None:
        return local, local.raw
    from edgeplane.sync.downlink import with_last_good

    merged = with_last_good(copy.deepcopy(local.raw), local.store_dir() / "sync")
    if merged == local.raw:
        return local, local.raw
    try:
        site = parse_site(merged, plugins.registry, source=f"{site_path} + last good cloud config",
                          base_dir=site_path.parent.resolve())
    except SiteError as e:
        logging.getLogger("edgeplane.cli").error("the last config from the cloud is invalid now; using %s alone\n%s", site_path, e)
        return local, local.raw
    return site, local.raw


def _fail_site(error: SiteError) -> NoReturn:
    click.echo(str(error), err=True)
    sys.exit(2)


class EdgeplaneGroup(click.Group):
    """The root group: core commands plus every command a plugin registers."""

    def _plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        try:
            return _plugins(ctx).registry.commands
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the core commands
            click.echo(f"warning: plugin commands unavailable: {e}", err=True)
            return {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugin_commands(ctx)))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or self._plugin_commands(ctx).get(name)


@click.group(cls=EdgeplaneGroup)
@click.version_option(package_name="edgeplane")
def main() -> None:
    """edgeplane: run industrial edge sites made of protocol connectors and domain solutions."""


@main.command()
@click.argument("site", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--http-port", type=int, default=None, help="Serve /metrics, /healthz, /readyz here (overrides the site file).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None)
@click.pass_context
def run(ctx: click.Context, site: Path | None, http_port: int | None, log_level: str | None, log_format: str | None) -> None:
    """Run a site until SIGTERM or Ctrl-C; SIGHUP applies a changed site file.

    With no SITE, runs the built-in default site, which needs no hardware and no network.
    """
    from edgeplane.config import read_yaml_file
    from edgeplane.host import Host
    from edgeplane.logs import configure_logging
    from edgeplane.plugins import Plugins

    site_path = site or default_site_path()
    try:
        raw, _ = read_yaml_file(site_path)  # bounded: size, encoding, aliases, nesting, duplicate keys
    except SiteError as e:
        _fail_site(e)
    plugins = Plugins.load_for_site(raw)
    try:
        loaded, local = load_with_cloud_overlay(site_path, plugins)
    except SiteError as e:
        _fail_site(e)
    configure_logging(log_level or loaded.core.log.level, log_format or loaded.core.log.format, loaded.redactor)
    host = Host(loaded, plugins, http_port=http_port if http_port is not None else -1, local_site=local)

    def reload_site() -> Site:
        fresh, host.local_site = load_with_cloud_overlay(site_path, plugins)
        loaded.redactor.merge(fresh.redactor)  # the log filter holds this one: new secrets are redacted too
        return fresh

    try:
        asyncio.run(host.run_until_stopped(reload_site=reload_site))
    except EdgeplaneError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


@main.command()
@click.argument("site", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def validate(ctx: click.Context, site: Path, as_json: bool) -> None:
    """Check a site file against the core and every installed plugin; exit 2 if invalid."""
    plugins = _plugins(ctx)
    try:
        loaded = _load(site, plugins)
    except SiteError as e:
        if as_json:
            click.echo(json.dumps({"valid": False, "problems": [p.__dict__ for p in e.problems]}))
            sys.exit(2)
        _fail_site(e)
    points = sum(len(d.points) for d in loaded.devices.values())
    summary = {
        "valid": True,
        "site": loaded.id,
        "devices": {n: d.connector for n, d in loaded.devices.items()},
        "solutions": {n: s.type for n, s in loaded.solutions.items()},
        "points": points,
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"{site}: valid: site {loaded.id!r}, {len(loaded.devices)} devices ({points} points), "
               f"{len(loaded.solutions)} solutions")


@main.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file instead of stdout.")
@click.pass_context
def schema(ctx: click.Context, output: Path | None) -> None:
    """Print the JSON Schema of site files, with every installed plugin's sections."""
    from edgeplane.config import site_json_schema

    text = json.dumps(site_json_schema(_plugins(ctx).registry), indent=2)
    if output:
        output.write_text(text + "\n")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text)


@main.group()
def plugins() -> None:
    """Inspect installed plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
def plugins_list(ctx: click.Context, as_json: bool) -> None:
    """Each plugin: distribution, version, what it registers, and its load error if any."""
    infos = _plugins(ctx).describe()
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in infos], indent=2))
        return
    for info in infos:
        dist = f"{info.distribution or '-'} {info.version or ''}".strip()
        status = "BROKEN" if info.error else "ok"
        click.echo(f"{info.name:<16} {dist:<28} {status}")
        for kind, names in sorted(info.registered.items()):
            click.echo(f"    {kind}: {', '.join(names)}")
        if info.error:
            click.echo(f"    error: {info.error}")
if __name__ == "__main__":
    main()
