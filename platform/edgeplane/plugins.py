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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pluggy
import yaml
from pydantic import ValidationError, create_model

from edgeplane import hookspecs
from edgeplane.config.base import DeviceConfig, Profile, SolutionConfig
from edgeplane.errors import PluginLoadError, RegistrationError, UnknownTypeError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "edgeplane"
BUILTIN = "builtin"

_REGISTER_HOOKS = {
    "connectors": "edgeplane_register_connectors",
    "solutions": "edgeplane_register_solutions",
    "transports": "edgeplane_register_transports",
    "profiles": "edgeplane_register_profiles",
    "commands": "edgeplane_register_commands",
    "models": "edgeplane_register_models",
}


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


class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    def __init__(self) -> None:
        self.connectors: dict[str, type] = {}
        self.solutions: dict[str, type] = {}
        self.transports: dict[str, type] = {}
        self.profiles: dict[str, Profile] = {}
        self.commands: dict[str, Any] = {}
        self.models: list[Path] = []
        self.owners: dict[tuple[str, str], str] = {}
        self.failed: dict[str, PluginLoadError] = {}
        self._device_models: dict[str, type[DeviceConfig]] = {}
        self._solution_models: dict[str, type[SolutionConfig]] = {}

    def _add(self, kind: str, name: str, value: Any, plugin: str) -> None:
        table = getattr(self, kind)
        owner = self.owners.get((kind, name))
        if owner is not None:
            raise RegistrationError(
                f"plugin {plugin!r} registers {kind[:-1]} {name!r}, which plugin {owner!r} already registered: "
                f"uninstall one of them or block one with EDGEPLANE_DISABLE_PLUGINS"
            )
        table[name] = value
        self.owners[(kind, name)] = plugin

    def device_model(self, kind: str) -> type[DeviceConfig]:
        """The pydantic model a device entry of connector type ``kind`` is validated by."""
        model = self._device_models.get(kind)
        if model is None:
            from typing import Literal

            cls = self.connectors[kind]
            model = create_model(
                f"{cls.__name__}Device",
                __base__=cls.Config,
                connector=(Literal[kind], ...),  # type: ignore[valid-type]
                points=(dict[str, cls.Point], {}),  # type: ignore[name-defined]
            )
            self._device_models[kind] = model
        return model

    def solution_model(self, kind: str) -> type[SolutionConfig]:
        """The pydantic model a solution entry of type ``kind`` is validated by."""
        model = self._solution_models.get(kind)
        if model is None:
            from typing import Literal

            cls = self.solutions[kind]
            model = create_model(f"{cls.__name__}Entry", __base__=cls.Config, type=(Literal[kind], ...))  # type: ignore[valid-type]
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

    def require(self, kind: str, name: str) -> type:
        table = self.connectors if kind == "connector" else self.solutions
        if name not in table:
            raise UnknownTypeError(f"unknown {kind} type {name!r}: {self.explain_missing(kind, name)}")
        return table[name]


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
        extra: Iterable[Any] = (),
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

    def _register(self, obj: Any, name: str, dist: str | None, version: str | None) -> None:
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
        for kind, hook_name in _REGISTER_HOOKS.items():
            caller = getattr(self.pm.hook, hook_name)
            # call each plugin's implementation on its own: one failing plugin must not take
            # the others' registrations with it (pluggy would abort the whole call)
            for impl in caller.get_hookimpls():  # in load order: the built-in plugin first
                plugin = impl.plugin_name
                info = self.infos.get(plugin)
                if info is not None and info.error is not None:
                    continue
                register = self._registrar(registry, kind, plugin)
                kwargs = {"register": register}
                try:
                    impl.function(*[kwargs[a] for a in impl.argnames])
                except Exception as e:  # noqa: BLE001
                    self._fail(plugin, info.distribution if info else None, info.version if info else None, e)
                    self._forget(registry, plugin)
        registry.failed = {name: info.error for name, info in self.infos.items() if info.error is not None}
        return registry

    def _forget(self, registry: Registry, plugin: str) -> None:
        """Drop everything a plugin registered before it failed."""
        for (kind, name), owner in list(registry.owners.items()):
            if owner == plugin:
                table = getattr(registry, kind)
                if isinstance(table, dict):
                    table.pop(name, None)
                del registry.owners[(kind, name)]
        info = self.infos.get(plugin)
        if info is not None:
            info.registered.clear()

    def _registrar(self, registry: Registry, kind: str, plugin: str) -> Callable[..., None]:
        info = self.infos.setdefault(plugin, PluginInfo(plugin, None, None))

        def note(name: str) -> None:
            info.registered.setdefault(kind, []).append(name)

        def register_type(name: str, cls: type) -> None:
            from edgeplane.components import Connector, Solution

            base = {"connectors": Connector, "solutions": Solution}.get(kind)
            if not isinstance(name, str) or not name:
                raise RegistrationError(f"plugin {plugin!r}: a {kind[:-1]} name must be a non-empty string, got {name!r}")
            if base is not None:
                if not (isinstance(cls, type) and issubclass(cls, base)):
                    raise RegistrationError(f"plugin {plugin!r}: {kind[:-1]} {name!r} must subclass edgeplane.{base.__name__}")
                config_base = DeviceConfig if base is Connector else SolutionConfig
                if not (isinstance(cls.Config, type) and issubclass(cls.Config, config_base)):
                    raise RegistrationError(
                        f"plugin {plugin!r}: {cls.__name__}.Config must subclass edgeplane.{config_base.__name__}"
                    )
            if kind == "transports":
                from edgeplane.sync.settings import UplinkConfig
                from edgeplane.sync.transport import Transport

                # a subclass of Transport, or a class with its methods (the sync service's needs)
                needed = ("connect", "publish", "subscribe", "close")
                if not isinstance(cls, type) or not (issubclass(cls, Transport) or all(hasattr(cls, m) for m in needed)):
                    raise RegistrationError(f"plugin {plugin!r}: transport {name!r} must subclass edgeplane.sync.Transport")
                config_model = getattr(cls, "Config", UplinkConfig)
                if not (isinstance(config_model, type) and issubclass(config_model, UplinkConfig)):
                    raise RegistrationError(
                        f"plugin {plugin!r}: {cls.__name__}.Config must subclass edgeplane.sync.UplinkConfig")
            registry._add(kind, name, cls, plugin)
            note(name)

        def register_profile(profile: Profile | str | Path) -> None:
            if not isinstance(profile, Profile):
                path = Path(profile)
                docs = yaml.safe_load(path.read_text())
                for doc in docs if isinstance(docs, list) else [docs]:
                    try:
                        item = Profile.model_validate(doc)
                    except ValidationError as e:
                        raise RegistrationError(f"plugin {plugin!r}: profile file {str(path)!r} is invalid: {e}") from e
                    item.source = str(path)
                    register_profile(item)
                return
            registry._add("profiles", profile.profile, profile, plugin)
            note(profile.profile)

        def register_command(command: Any) -> None:
            name = command.name
            registry._add("commands", name, command, plugin)
            note(name)

        def register_model(path: str | Path) -> None:
            registry.models.append(Path(path))
            note(str(path))

        return {
            "connectors": register_type,
            "solutions": register_type,
            "transports": register_type,
            "profiles": register_profile,
            "commands": register_command,
            "models": register_model,
        }[kind]

    def describe(self) -> list[PluginInfo]:
        """Every plugin seen, loaded or failed, with what it registered."""
        return sorted(self.infos.values(), key=lambda i: (i.name != BUILTIN, i.name))

    # typed facade over pm.hook for the lifecycle hooks
    def host_started(self, host: Any) -> None:
        self._call_each("edgeplane_host_started", host=host)

    def host_stopping(self, host: Any) -> None:
        self._call_each("edgeplane_host_stopping", host=host)

    def console_panels(self) -> list[Any]:
        """Every console panel the plugins register (a plugin that raises is logged and skipped)."""
        panels: list[Any] = []
        self._call_each("edgeplane_register_console_panels", register=panels.append)
        return panels

    def _call_each(self, hook_name: str, **kwargs: Any) -> None:
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            try:
                impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception:  # noqa: BLE001 - a plugin's lifecycle hook must not stop the host
                log.exception("plugin %r raised in %s; the host goes on", impl.plugin_name, hook_name)


def _core_version() -> str:
    try:
        return importlib.metadata.version("edgeplane")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"

