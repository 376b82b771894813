"""Loading plugins and collecting what they register.

:class:`Plugins` owns one pluggy ``PluginManager`` (one per host, never a module global). It loads
entry points of the group ``edgeplane`` one by one, so that a plugin that fails to import is
recorded with its distribution, version and cause while the others load. Only a site that uses
a broken plugin fails to start.

Environment switches:

* ``EDGEPLANE_PLUGINS=a,b``: load only these entry points (the built-in plugin always loads);
* ``EDGEPLANE_DISABLE_PLUGINS=x,y``: never load these.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import pluggy
import yaml
from pydantic import ValidationError, create_model

from edgeplane import hookspecs
from edgeplane.components import AnyConnector, AnySolution, Connector, Solution
from edgeplane.config.base import DeviceConfig, Profile, SolutionConfig
from edgeplane.errors import PluginLoadError, RegistrationError, UnknownTypeError

if TYPE_CHECKING:
    import click

    from edgeplane.console.commissioning import Scanner
    from edgeplane.console.panels import Panel
    from edgeplane.host import Host
    from edgeplane.sync.transport import Transport

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "edgeplane"
BUILTIN = "builtin"

V = TypeVar("V")

@dataclass
class PluginInfo:
    """What ``edgeplane plugins list`` shows for one plugin."""

    name: str
    distribution: str | None
    version: str | None
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: PluginLoadError | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "registered": self.registered,
            "error": str(self.error) if self.error else None,
        }


class Table(Generic[V]):
    """One kind of registered thing: name -> value, and the plugin that registered each name.

    ``kind`` is the singular noun used in messages ("connector").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.entries: dict[str, V] = {}
        self.owners: dict[str, str] = {}

    def add(self, name: str, value: V, plugin: str) -> None:
        owner = self.owners.get(name)
        if owner is not None:
            raise RegistrationError(
                f"plugin {plugin!r} registers {self.kind} {name!r}, which plugin {owner!r} already registered: "
                f"uninstall one of them or block one with EDGEPLANE_DISABLE_PLUGINS"
            )
        self.entries[name] = value
        self.owners[name] = plugin

    def forget(self, plugin: str) -> None:
        """Drop everything ``plugin`` registered here."""
        for name, owner in list(self.owners.items()):
            if owner == plugin:
                del self.owners[name]
                self.entries.pop(name, None)


class Registry:
    """Everything the loaded plugins registered, by kind and name.

    Each kind is a typed :class:`Table`; ``connectors``, ``solutions``, ``transports``,
    ``profiles`` and ``commands`` are their name -> value mappings.
    """

    def __init__(self) -> None:
        self.connector_table: Table[type[AnyConnector]] = Table("connector")
        self.solution_table: Table[type[AnySolution]] = Table("solution")
        self.transport_table: Table[type[Transport]] = Table("transport")
        self.profile_table: Table[Profile] = Table("profile")
        self.command_table: Table[click.Command] = Table("command")
        self.reference_site_table: Table[ReferenceSite] = Table("reference site")
        self.models: list[Path] = []
        self.failed: dict[str, PluginLoadError] = {}
        self._device_models: dict[str, type[DeviceConfig]] = {}
        self._solution_models: dict[str, type[SolutionConfig]] = {}

    @property
    def connectors(self) -> dict[str, type[AnyConnector]]:
        return self.connector_table.entries

    @property
    def solutions(self) -> dict[str, type[AnySolution]]:
        return self.solution_table.entries

    @property
    def transports(self) -> dict[str, type[Transport]]:
        return self.transport_table.entries

    @property
    def profiles(self) -> dict[str, Profile]:
        return self.profile_table.entries

    @property
    def commands(self) -> dict[str, click.Command]:
        return self.command_table.entries

    @property
    def reference_sites(self) -> dict[str, ReferenceSite]:
        return self.reference_site_table.entries

    def tables(self) -> dict[str, Table[Any]]:
        """Every table by its plural name ("connectors", ...), as ``edgeplane plugins list`` shows them."""
        return {"connectors": self.connector_table, "solutions": self.solution_table,
                "transports": self.transport_table, "profiles": self.profile_table, "commands": self.command_table,
                "reference_sites": self.reference_site_table}

    @property
    def owners(self) -> dict[tuple[str, str], str]:
        """(plural kind, name) -> the plugin that registered it."""
        return {(kind, name): owner for kind, table in self.tables().items() for name, owner in table.owners.items()}

    def forget(self, plugin: str) -> None:
        """Drop everything ``plugin`` registered (it failed part way)."""
        for table in self.tables().values():
            table.forget(plugin)

    def device_model(self, kind: str) -> type[DeviceConfig]:
        """The pydantic model a device entry of connector type ``kind`` is validated by."""
        model = self._device_models.get(kind)
        if model is None:
            from typing import Literal

            cls = self.connectors[kind]
            tag: Any = Literal[kind]  # a type made at run time: a type form to pydantic, a value to mypy
            points: Any = types.GenericAlias(dict, (str, cls.Point))  # dict[str, cls.Point], made at run time
            model = cast("type[DeviceConfig]", create_model(f"{cls.__name__}Device", __base__=cls.Config,
                                                            connector=(tag, ...), points=(points, {})))
            self._device_models[kind] = model
        return model

    def solution_model(self, kind: str) -> type[SolutionConfig]:
        """The pydantic model a solution entry of type ``kind`` is validated by."""
        model = self._solution_models.get(kind)
        if model is None:
            from typing import Literal

            cls = self.solutions[kind]
            tag: Any = Literal[kind]  # a type made at run time: a type form to pydantic, a value to mypy
            model = cast("type[SolutionConfig]", create_model(f"{cls.__name__}Entry", __base__=cls.Config, type=(tag, ...)))
            self._solution_models[kind] = model
        return model

    def explain_missing(self, kind: str, name: str) -> str:
        """A fix for a site that names an unknown connector or solution type."""
        import difflib

        broken = [e for plugin, e in self.failed.items() if plugin == name or name.startswith(plugin + ".")]
        if broken:
            return f"the plugin that provides it is broken: {broken[0]}"
        known = sorted(self.connectors if kind == "connector" else self.solutions)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        if close:
            return f"did you mean {close[0]!r}?"
        hint = f"install the plugin that provides it (pip install edgeplane-{name.split('.')[0]})"
        return f"{hint}; installed {kind} types: {', '.join(known) or 'none'}"

    def require(self, kind: str, name: str) -> type[AnyConnector] | type[AnySolution]:
        table: dict[str, type[AnyConnector]] | dict[str, type[AnySolution]] = (
            self.connectors if kind == "connector" else self.solutions)
        if name not in table:
            raise UnknownTypeError(f"unknown {kind} type {name!r}: {self.explain_missing(kind, name)}")
        return table[name]


class Registrar:
    """What a registration hook receives as ``register``: a callable bound to one plugin.

    Plugins call it as before (``register("modbus", ModbusConnector)``); edgeplane checks what is
    registered and records it under the plugin's name.
    """

    def __init__(self, plugin: str, info: PluginInfo, kind: str) -> None:
        self.plugin = plugin
        self._info = info
        self._kind = kind

    def _note(self, name: str) -> None:
        self._info.registered.setdefault(self._kind, []).append(name)

    def _check_name(self, name: object, what: str) -> None:
        if not isinstance(name, str) or not name:
            raise RegistrationError(f"plugin {self.plugin!r}: a {what} name must be a non-empty string, got {name!r}")


class ConnectorRegistrar(Registrar):
    """``register(name, ConnectorClass)`` for :func:`~edgeplane.hookspecs.edgeplane_register_connectors`."""

    def __init__(self, table: Table[type[AnyConnector]], plugin: str, info: PluginInfo) -> None:
        super().__init__(plugin, info, "connectors")
        self._table = table

    def __call__(self, name: str, cls: type[AnyConnector]) -> None:
        self._check_name(name, "connector")
        _check_component(self.plugin, "connector", name, cls, Connector, DeviceConfig)
        self._table.add(name, cls, self.plugin)
        self._note(name)


class SolutionRegistrar(Registrar):
    """``register(name, SolutionClass)`` for :func:`~edgeplane.hookspecs.edgeplane_register_solutions`."""

    def __init__(self, table: Table[type[AnySolution]], plugin: str, info: PluginInfo) -> None:
        super().__init__(plugin, info, "solutions")
        self._table = table

    def __call__(self, name: str, cls: type[AnySolution]) -> None:
        self._check_name(name, "solution")
        _check_component(self.plugin, "solution", name, cls, Solution, SolutionConfig)
        self._table.add(name, cls, self.plugin)
        self._note(name)


class TransportRegistrar(Registrar):
    """``register(name, TransportClass)`` for :func:`~edgeplane.hookspecs.edgeplane_register_transports`."""

    def __init__(self, table: Table[type[Transport]], plugin: str, info: PluginInfo) -> None:
        super().__init__(plugin, info, "transports")
        self._table = table

    def __call__(self, name: str, cls: type[Transport]) -> None:
        from edgeplane.sync.config import UplinkConfig
        from edgeplane.sync.transport import Transport

        self._check_name(name, "transport")
        # a subclass of Transport, or a class with its methods (the sync service's needs)
        needed = ("connect", "publish", "subscribe", "close")
        if not isinstance(cls, type) or not (issubclass(cls, Transport) or all(hasattr(cls, m) for m in needed)):
            raise RegistrationError(f"plugin {self.plugin!r}: transport {name!r} must subclass edgeplane.sync.Transport")
        config_model = getattr(cls, "Config", UplinkConfig)
        if not (isinstance(config_model, type) and issubclass(config_model, UplinkConfig)):
            raise RegistrationError(
                f"plugin {self.plugin!r}: {cls.__name__}.Config must subclass edgeplane.sync.UplinkConfig")
        self._table.add(name, cls, self.plugin)
        self._note(name)


class ProfileRegistrar(Registrar):
    """``register(profile_or_yaml_path)`` for :func:`~edgeplane.hookspecs.edgeplane_register_profiles`."""

    def __init__(self, table: Table[Profile], plugin: str, info: PluginInfo) -> None:
        super().__init__(plugin, info, "profiles")
        self._table = table

    def __call__(self, profile: Profile | str | Path) -> None:
        if not isinstance(profile, Profile):
            path = Path(profile)
            docs = yaml.safe_load(path.read_text())
            for doc in docs if isinstance(docs, list) else [docs]:
                try:
                    item = Profile.model_validate(doc)
                except ValidationError as e:
                    raise RegistrationError(f"plugin {self.plugin!r}: profile file {str(path)!r} is invalid: {e}") from e
                item.source = str(path)
                self(item)
            return
        self._table.add(profile.profile, profile, self.plugin)
        self._note(profile.profile)


class CommandRegistrar(Registrar):
    """``register(click_command_or_group)`` for :func:`~edgeplane.hookspecs.edgeplane_register_commands`."""

    def __init__(self, table: Table[click.Command], plugin: str, info: PluginInfo) -> None:
        super().__init__(plugin, info, "commands")
        self._table = table

    def __call__(self, command: click.Command) -> None:
        name = command.name
        self._check_name(name, "command")
        assert name is not None  # checked above
        self._table.add(name, command, self.plugin)
        self._note(name)


@dataclass(frozen=True)
class ReferenceSite:
    """A vertical's reference deployment, shipped as a site file inside the plugin's package."""

    vertical: str  # the name ``edgeplane site init --vertical`` takes: "solar", "factory", ...
    path: Path  # the site file
    summary: str = ""  # one line: what runs


class ReferenceSiteRegistrar(Registrar):
    """``register(ReferenceSite(vertical, path, summary))`` for
    :func:`~edgeplane.hookspecs.edgeplane_register_reference_sites`."""

    def __init__(self, table: Table[ReferenceSite], plugin: str, info: PluginInfo) -> None:
        super().__init__(plugin, info, "reference_sites")
        self._table = table

    def __call__(self, site: ReferenceSite) -> None:
        if not isinstance(site, ReferenceSite):
            raise RegistrationError(f"plugin {self.plugin!r}: register(ReferenceSite(vertical, path)), not {site!r}")
        self._check_name(site.vertical, "reference site")
        if not Path(site.path).is_file():
            raise RegistrationError(f"plugin {self.plugin!r}: reference site {site.vertical!r}: no file at {site.path} "
                                    "(is it in the package data?)")
        self._table.add(site.vertical, site, self.plugin)
        self._note(site.vertical)


class ModelRegistrar(Registrar):
    """``register(path)`` for :func:`~edgeplane.hookspecs.edgeplane_register_models`."""

    def __init__(self, models: list[Path], plugin: str, info: PluginInfo) -> None:
        super().__init__(plugin, info, "models")
        self._models = models

    def __call__(self, path: str | Path) -> None:
        self._models.append(Path(path))
        self._note(str(path))


def _check_component(plugin: str, kind: str, name: str, cls: object, base: type, config_base: type) -> None:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise RegistrationError(f"plugin {plugin!r}: {kind} {name!r} must subclass edgeplane.{base.__name__}")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, config_base)):
        raise RegistrationError(f"plugin {plugin!r}: {cls.__name__}.Config must subclass edgeplane.{config_base.__name__}")


def _distribution_of(entry_point: importlib.metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _names_from_env(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {n.strip() for n in value.split(",") if n.strip()}


class Plugins:
    """One plugin manager and what its plugins registered.

    ``Plugins.load()`` finds and loads installed plugins; tests pass plugin objects directly with
    ``Plugins.load(extra=[my_plugin], entry_points=False)``.
    """

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registry: Registry | None = None

    @classmethod
    def load(
        cls,
        *,
        entry_points: bool = True,
        extra: Iterable[object] = (),
        only: Iterable[str] | None = None,
        disable: Iterable[str] | None = None,
    ) -> Plugins:
        """Load the built-in plugin, installed plugins (filtered) and ``extra`` plugin objects."""
        from edgeplane.builtin import plugin as builtin_plugin

        plugins = cls()
        plugins._register(builtin_plugin, BUILTIN, "edgeplane", _core_version())
        only_set = set(only) if only is not None else _names_from_env("EDGEPLANE_PLUGINS")
        disabled = set(disable) if disable is not None else (_names_from_env("EDGEPLANE_DISABLE_PLUGINS") or set())
        if entry_points:
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in disabled or (only_set is not None and ep.name not in only_set):
                    log.debug("plugin %s skipped by EDGEPLANE_PLUGINS/EDGEPLANE_DISABLE_PLUGINS", ep.name)
                    continue
                if ep.name in plugins.infos:
                    continue  # the same distribution seen twice on sys.path
                dist, version = _distribution_of(ep)
                try:
                    module = ep.load()
                except Exception as e:  # noqa: BLE001 - any import failure is the plugin's, not ours
                    plugins._fail(ep.name, dist, version, e)
                    continue
                plugins._register(module, ep.name, dist, version)
        for index, obj in enumerate(extra):
            name = getattr(obj, "__name__", None) or f"{type(obj).__name__}-{index}"
            plugins._register(obj, name, None, None)
        plugins.registry  # noqa: B018 - register now, so that failures show in infos at once
        return plugins

    @classmethod
    def load_for_site(cls, data: Any) -> Plugins:
        """Load only the plugins a site file names, so a node starts fast and lean.

        A plugin's entry-point name is the connector type or the first part of the solution
        type it provides (``modbus``, ``solar`` for ``solar.forecast``), or the uplink transport
        it provides (``sparkplug``). If a type is still
        unknown afterwards (a plugin that names its entry point otherwise), every plugin is
        loaded, so that validation can find it or name the broken plugin.
        """
        wanted: set[str] = set()
        if isinstance(data, dict):
            for entry in (data.get("devices") or {}).values():
                if isinstance(entry, dict) and isinstance(entry.get("connector"), str):
                    wanted.add(entry["connector"])
            for entry in (data.get("solutions") or {}).values():
                if isinstance(entry, dict) and isinstance(entry.get("type"), str):
                    wanted.add(entry["type"].split(".")[0])
            uplink = (data.get("sync") or {}).get("uplink") if isinstance(data.get("sync"), dict) else None
            if isinstance(uplink, dict) and isinstance(uplink.get("transport"), str) and uplink["transport"] != "mqtt":
                wanted.add(uplink["transport"])  # the built-in plugin provides mqtt
        env_only = _names_from_env("EDGEPLANE_PLUGINS")
        plugins = cls.load(only=wanted if env_only is None else wanted & env_only)
        registry = plugins.registry
        types = set(registry.connectors) | {t.split(".")[0] for t in registry.solutions} | set(registry.transports)
        if wanted - types:
            plugins = cls.load()
        return plugins

    def _fail(self, name: str, dist: str | None, version: str | None, cause: BaseException) -> None:
        error = PluginLoadError(name, dist, version, cause)
        error.__cause__ = cause
        log.error("%s", error)
        info = self.infos.setdefault(name, PluginInfo(name, dist, version))
        info.error = error

    def _register(self, obj: object, name: str, dist: str | None, version: str | None) -> None:
        try:
            self.pm.register(obj, name=name)
            # a misspelled hook name is an error of this plugin, not a silent no-op
            self.pm.check_pending()
        except Exception as e:  # noqa: BLE001 - pluggy raises several types; all mean "unusable"
            if self.pm.is_registered(obj):
                self.pm.unregister(obj)
            self._fail(name, dist, version, e)
            return
        self.infos[name] = PluginInfo(name, dist, version)

    @property
    def registry(self) -> Registry:
        """Call every registration hook (once) and return what was registered."""
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        registry = Registry()
        self.register_connectors(registry)
        self.register_solutions(registry)
        self.register_transports(registry)
        self.register_profiles(registry)
        self.register_commands(registry)
        self.register_models(registry)
        self.register_reference_sites(registry)
        registry.failed = {name: info.error for name, info in self.infos.items() if info.error is not None}
        return registry

    # the typed facade over pm.hook: one method per registration hook
    def register_connectors(self, registry: Registry) -> None:
        self._register_each(self.pm.hook.edgeplane_register_connectors, registry,
                            lambda plugin, info: ConnectorRegistrar(registry.connector_table, plugin, info))

    def register_solutions(self, registry: Registry) -> None:
        self._register_each(self.pm.hook.edgeplane_register_solutions, registry,
                            lambda plugin, info: SolutionRegistrar(registry.solution_table, plugin, info))

    def register_transports(self, registry: Registry) -> None:
        self._register_each(self.pm.hook.edgeplane_register_transports, registry,
                            lambda plugin, info: TransportRegistrar(registry.transport_table, plugin, info))

    def register_profiles(self, registry: Registry) -> None:
        self._register_each(self.pm.hook.edgeplane_register_profiles, registry,
                            lambda plugin, info: ProfileRegistrar(registry.profile_table, plugin, info))

    def register_commands(self, registry: Registry) -> None:
        self._register_each(self.pm.hook.edgeplane_register_commands, registry,
                            lambda plugin, info: CommandRegistrar(registry.command_table, plugin, info))

    def register_models(self, registry: Registry) -> None:
        self._register_each(self.pm.hook.edgeplane_register_models, registry,
                            lambda plugin, info: ModelRegistrar(registry.models, plugin, info))

    def register_reference_sites(self, registry: Registry) -> None:
        self._register_each(self.pm.hook.edgeplane_register_reference_sites, registry,
                            lambda plugin, info: ReferenceSiteRegistrar(registry.reference_site_table, plugin, info))

    def _register_each(self, hook: pluggy.HookCaller, registry: Registry,
                       registrar: Callable[[str, PluginInfo], Registrar]) -> None:
        """Call ``hook`` through pluggy once per plugin, each with its own registrar: one failing plugin
        must not take the others' registrations with it (one pluggy call would stop at the first error)."""
        plugins = self.pm.get_plugins()
        for impl in hook.get_hookimpls():  # in load order: the built-in plugin first
            plugin = impl.plugin_name
            info = self.infos.get(plugin)
            if info is not None and info.error is not None:
                continue
            info = self.infos.setdefault(plugin, PluginInfo(plugin, None, None))
            only_this = self.pm.subset_hook_caller(hook.name, [p for p in plugins if p is not impl.plugin])
            try:
                only_this(register=registrar(plugin, info))
            except Exception as e:  # noqa: BLE001 - whatever a plugin raises marks that plugin failed
                self._fail(plugin, info.distribution, info.version, e)
                registry.forget(plugin)
                info.registered.clear()

    def describe(self) -> list[PluginInfo]:
        """Every plugin seen, loaded or failed, with what it registered."""
        return sorted(self.infos.values(), key=lambda i: (i.name != BUILTIN, i.name))

    # the typed facade over pm.hook for the lifecycle hooks
    def host_started(self, host: Host) -> None:
        self._call_each(self.pm.hook.edgeplane_host_started, host=host)

    def host_stopping(self, host: Host) -> None:
        self._call_each(self.pm.hook.edgeplane_host_stopping, host=host)

    def console_panels(self) -> list[Panel]:
        """Every console panel the plugins register (a plugin that raises is logged and skipped)."""
        panels: list[Panel] = []
        self._call_each(self.pm.hook.edgeplane_register_console_panels, register=panels.append)
        return panels

    def console_scanners(self) -> dict[str, Scanner]:
        """Every console scanner the plugins register, by connector (a plugin that raises is logged and skipped)."""
        scanners: list[Scanner] = []
        self._call_each(self.pm.hook.edgeplane_register_console_scanners, register=scanners.append)
        return {scanner.connector: scanner for scanner in scanners}

    def _call_each(self, hook: pluggy.HookCaller, **kwargs: Any) -> None:
        """Call ``hook`` through pluggy once per plugin: one that raises is logged, the others still run."""
        plugins = self.pm.get_plugins()
        for impl in hook.get_hookimpls():
            try:
                self.pm.subset_hook_caller(hook.name, [p for p in plugins if p is not impl.plugin])(**kwargs)
            except Exception:  # noqa: BLE001 - a plugin's lifecycle hook must not stop the host
                log.exception("plugin %r raised in %s; the host goes on", impl.plugin_name, hook.name)


def _core_version() -> str:
    try:
        return importlib.metadata.version("edgeplane")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"

