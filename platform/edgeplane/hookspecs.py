"""The plugin author's reference: every hook edgeplane calls.

A plugin is a module (or object) with functions named after these hooks, each decorated with
``@edgeplane.hookimpl``, exposed through an entry point in the group ``edgeplane``::

    # pyproject.toml of edgeplane-modbus
    [project.entry-points.edgeplane]
    modbus = "edgeplane_modbus.plugin"

    # edgeplane_modbus/plugin.py
    from edgeplane import hookimpl
    from edgeplane_modbus.connector import ModbusConnector

    @hookimpl
    def edgeplane_register_connectors(register):
        register("modbus", ModbusConnector)

A registration hook receives ``register``, a registrar object bound to the plugin
(:class:`edgeplane.plugins.ConnectorRegistrar` and its siblings, as tox hands its plugins a
registry): calling it registers one thing, which edgeplane checks and records under the
plugin's name.

Hooks are synchronous and declarative: they hand edgeplane classes and descriptions, and the
objects made from those classes do the async work (``start``, ``run``, ``write``, ``on_batch``,
``stop``). No reading, batch or command ever travels through a hook. A plugin implements only
the hooks it needs and may take only the arguments it uses.

Each hook is called once per plugin when the host (or the CLI) builds its registry, in the order
plugins were loaded; a hook that raises marks its plugin as failed, and the other plugins go on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from edgeplane.console.commissioning import Scanner
    from edgeplane.console.panels import Panel
    from edgeplane.host import Host
    from edgeplane.plugins import (
        CommandRegistrar,
        ConnectorRegistrar,
        ModelRegistrar,
        ProfileRegistrar,
        ReferenceSiteRegistrar,
        SolutionRegistrar,
        TransportRegistrar,
    )

PROJECT = "edgeplane"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def edgeplane_register_connectors(register: ConnectorRegistrar) -> None:
    """Register connector types: ``register(name, ConnectorClass)``.

    Called when the registry is built, before any site file is validated. ``name`` is what a
    device's ``connector:`` key names (e.g. ``"modbus"``); it must be unique across plugins.
    The class subclasses :class:`edgeplane.Connector`, with ``Config`` (a subclass of
    :class:`edgeplane.DeviceConfig`) and ``Point`` (a subclass of :class:`edgeplane.PointSpec`)
    describing what a device entry and each of its points may hold. Returns nothing.
    """


@hookspec
def edgeplane_register_solutions(register: SolutionRegistrar) -> None:
    """Register solution types: ``register(name, SolutionClass)``.

    Called when the registry is built. ``name`` is what a solution's ``type:`` key names
    (e.g. ``"solar.forecast"``). The class subclasses :class:`edgeplane.Solution` and declares
    ``Config`` (a subclass of :class:`edgeplane.SolutionConfig`). Returns nothing.
    """


@hookspec
def edgeplane_register_transports(register: TransportRegistrar) -> None:
    """Register uplink transports for the sync layer: ``register(name, TransportClass)``.

    Called when the registry is built. ``name`` is what a site's ``sync.uplink.transport``
    selects (``"mqtt"``, the default, is built in; ``"sparkplug"``, ``"thingsboard"``). The class
    subclasses :class:`edgeplane.sync.Transport` and declares ``Config``, a subclass of
    :class:`edgeplane.sync.UplinkConfig` that ``sync.uplink`` is validated by when it is chosen.
    A transport that sends its own format sets ``native_envelope = False`` and implements
    ``send_records``; the outbox in front of it is the same for every transport. Returns nothing.
    """


@hookspec
def edgeplane_register_profiles(register: ProfileRegistrar) -> None:
    """Register device profiles shipped with the plugin: ``register(profile_or_yaml_path)``.

    Called when the registry is built. A profile is a reusable point map (see
    :class:`edgeplane.Profile`) that devices name with ``profile:``. Pass a ``Profile`` or the
    path of a YAML file holding one (or a list of them). Returns nothing.
    """


@hookspec
def edgeplane_register_commands(register: CommandRegistrar) -> None:
    """Register CLI commands: ``register(click_command_or_group)``.

    Called when the ``edgeplane`` CLI starts. Each command or group becomes a subcommand
    (``edgeplane modbus scan`` comes from a group named ``modbus``). Names must not clash with the
    core's commands or another plugin's. Returns nothing.
    """


@hookspec
def edgeplane_register_models(register: ModelRegistrar) -> None:
    """Register model folders shipped with the plugin: ``register(path)``.

    Called when the registry is built. ``path`` is a folder of models the inference service can
    load (each model an ONNX file with its manifest: name, version, sha256, signature,
    provenance). Returns nothing.
    """


@hookspec
def edgeplane_register_reference_sites(register: ReferenceSiteRegistrar) -> None:
    """Register the reference deployment of a vertical: ``register(ReferenceSite(vertical, path, summary))``.

    Called when the registry is built. ``path`` is a site file inside the plugin's package (package
    data), the one place that deployment is kept: ``edgeplane site init --vertical <vertical>``
    starts a site folder from it, and the plugin's demo runs it. The core names no vertical.
    Returns nothing.
    """


@hookspec
def edgeplane_register_console_panels(register: Callable[[Panel], None]) -> None:
    """Register panels for the site console: ``register(Panel(solution_type, title, view))``.

    Called when the console is mounted on the host's HTTP port (a site with a ``console:``
    section). A :class:`edgeplane.console.Panel` is shown once per running solution of its
    ``solution_type``; its ``view(solution, data)`` returns widgets (``Stats``, ``Plot``,
    ``Table`` from :mod:`edgeplane.console`) that the console draws, so a plugin ships no
    JavaScript. ``view`` runs on the event loop: it must be quick and never block. Returns nothing.
    """


@hookspec
def edgeplane_register_console_scanners(register: Callable[[Scanner], None]) -> None:
    """Register how the site console discovers a device of a connector:
    ``register(Scanner(connector, scan, point_spec))``.

    Called when the console is mounted. The console's commissioning page posts its form to
    ``/console/api/commissioning/<connector>``, which awaits ``scan(form)`` (it must bound what it
    reads from the network and never block the event loop), and saves the rows an operator ticks
    as a device profile through ``point_spec(row)``. Returns nothing.
    """


@hookspec
def edgeplane_host_started(host: Host) -> None:
    """Called once after the host has started every part of the site and is ready.

    Use it for plugin-wide set-up that needs the running host (its bus, clock, metrics).
    Must not block: start tasks with ``asyncio.get_running_loop().create_task`` if needed.
    Returns nothing.
    """


@hookspec
def edgeplane_host_stopping(host: Host) -> None:
    """Called once when the host begins to stop, before any part of the site is stopped.

    Must not block. Returns nothing.
    """
