"""Typed registration: registrar objects per hook, one facade method per hook, typed tables."""

from __future__ import annotations

import importlib
import inspect
import typing

import pytest

from edgeplane import DeviceConfig, PointSpec, ReferenceSite, hookimpl, hookspecs
from edgeplane.builtin.memory import MemoryConnector
from edgeplane.components import Connector
from edgeplane.errors import RegistrationError
from edgeplane.plugins import ConnectorRegistrar, PluginInfo, Plugins, Registry, Table


class ThermoConnector(Connector):
    Config = DeviceConfig
    Point = PointSpec


class _Good:
    __name__ = "good"

    @hookimpl
    def edgeplane_register_connectors(self, register):
        assert isinstance(register, ConnectorRegistrar) and register.plugin == "good"
        register("thermo", ThermoConnector)


class _HalfBroken:
    __name__ = "halfbroken"

    @hookimpl
    def edgeplane_register_connectors(self, register):
        register("half", ThermoConnector)
        raise RuntimeError("boom after one registration")


class _Squatter:
    __name__ = "squatter"

    @hookimpl
    def edgeplane_register_connectors(self, register):
        register("memory", MemoryConnector)


def test_every_registration_hook_has_a_typed_registrar_and_a_facade_method():
    specs = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("edgeplane_register_")]
    assert {"edgeplane_register_connectors", "edgeplane_register_solutions", "edgeplane_register_transports"} <= set(specs)
    namespace = vars(importlib.import_module("edgeplane.plugins"))
    for name in specs:
        kind = name.removeprefix("edgeplane_register_")
        # registry hooks: Plugins.register_<kind>(registry); console hooks: Plugins.<kind>()
        facade = getattr(Plugins, f"register_{kind}", None) or getattr(Plugins, kind, None)
        assert callable(facade), f"Plugins has no facade method for {name}"
        if kind.startswith("console_"):
            continue  # console hooks collect into a list the facade returns
        registrar = typing.get_type_hints(getattr(hookspecs, name), namespace)["register"]
        assert inspect.isclass(registrar) and registrar.__name__.endswith("Registrar"), (name, registrar)


def test_a_failing_plugin_loses_only_its_own_registrations_and_duplicates_name_the_kind():
    plugins = Plugins.load(extra=[_Good(), _HalfBroken(), _Squatter()], entry_points=False)
    registry = plugins.registry
    assert registry.connectors["thermo"] is ThermoConnector
    assert "half" not in registry.connectors and "boom" in str(registry.failed["halfbroken"])
    assert registry.connectors["memory"] is MemoryConnector  # the built-in one stays
    assert "registers connector 'memory', which plugin 'builtin' already registered" in str(registry.failed["squatter"])
    assert registry.owners[("connectors", "thermo")] == "good"
    assert plugins.infos["good"].registered == {"connectors": ["thermo"]}


def test_registrars_check_what_they_are_given():
    table: Table[type[Connector]] = Table("connector")
    register = ConnectorRegistrar(table, "p", PluginInfo("p", None, None))
    with pytest.raises(RegistrationError, match="connector 'x' must subclass edgeplane.Connector"):
        register("x", dict)  # type: ignore[arg-type]  # the wrong thing, on purpose
    with pytest.raises(RegistrationError, match="name must be a non-empty string"):
        register("", ThermoConnector)
    register("x", ThermoConnector)
    assert table.entries == {"x": ThermoConnector} and table.owners == {"x": "p"}
    registry = Registry()
    assert registry.connectors is registry.connector_table.entries


def test_reference_sites_are_registered_by_the_solution_plugins_and_checked(tmp_path):
    sites = Plugins.load().registry.reference_sites
    assert {"solar", "factory", "intersection"} <= set(sites)
    assert all(site.path.is_file() and "reference_sites" in site.path.parts for site in sites.values())

    class _Missing:
        __name__ = "missing"

        @hookimpl
        def edgeplane_register_reference_sites(self, register):
            register(ReferenceSite("nowhere", tmp_path / "absent.yaml"))

    plugins = Plugins.load(entry_points=False, extra=[_Missing()])
    assert "nowhere" not in plugins.registry.reference_sites
    error = str(plugins.registry.failed["missing"])
    assert "no file at" in error and "package data" in error
