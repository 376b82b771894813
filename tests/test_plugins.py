"""Plugin loading: entry points one by one, broken plugins named, filters, the list command."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from click.testing import CliRunner

from edgeplane import Connector, Plugins, SiteError, hookimpl, parse_site
from edgeplane.cli import main


def install_fake_distribution(root, dist_name, version, module_name, module_source, entry_name):
    """A real installed distribution as importlib.metadata sees it: a module and a .dist-info."""
    (root / f"{module_name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[edgeplane]\n{entry_name} = {module_name}\n")


GOOD_PLUGIN = """
from edgeplane import hookimpl, Connector

class Thermo(Connector):
    pass

@hookimpl
def edgeplane_register_connectors(register):
    register("thermo", Thermo)
"""


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    root = tmp_path / "site-packages"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in ("good_thermo_plugin", "broken_plugin", "typo_plugin"):
        sys.modules.pop(name, None)


def test_broken_plugin_is_named_and_others_still_load(plugin_path):
    install_fake_distribution(plugin_path, "edgeplane-thermo", "1.2.0", "good_thermo_plugin", GOOD_PLUGIN, "thermo")
    install_fake_distribution(plugin_path, "edgeplane-broken", "0.3.1", "broken_plugin",
                              "import a_module_that_does_not_exist\n", "broken")
    plugins = Plugins.load()
    registry = plugins.registry
    assert "thermo" in registry.connectors
    error = plugins.infos["broken"].error
    assert error is not None
    assert "edgeplane-broken 0.3.1" in str(error)
    assert "ModuleNotFoundError" in str(error) and "a_module_that_does_not_exist" in str(error)
    assert isinstance(error.__cause__, ModuleNotFoundError)

    # a site that does not use the broken plugin is fine
    site = parse_site({"site": {"id": "s"}, "devices": {"t": {"connector": "thermo"}}}, registry)
    assert site.devices["t"].connector == "thermo"
    # a site that uses it fails, and says why
    with pytest.raises(SiteError) as excinfo:
        parse_site({"site": {"id": "s"}, "devices": {"b": {"connector": "broken"}}}, registry)
    assert "edgeplane-broken 0.3.1" in str(excinfo.value) and "failed to load" in str(excinfo.value)


def test_environment_switches_select_plugins(plugin_path, monkeypatch):
    install_fake_distribution(plugin_path, "edgeplane-thermo", "1.2.0", "good_thermo_plugin", GOOD_PLUGIN, "thermo")
    monkeypatch.setenv("EDGEPLANE_DISABLE_PLUGINS", "thermo")
    assert "thermo" not in Plugins.load().registry.connectors
    monkeypatch.delenv("EDGEPLANE_DISABLE_PLUGINS")
    monkeypatch.setenv("EDGEPLANE_PLUGINS", "somethingelse")
    plugins = Plugins.load()
    assert "thermo" not in plugins.registry.connectors
    assert "memory" in plugins.registry.connectors  # the built-in plugin always loads
    monkeypatch.setenv("EDGEPLANE_PLUGINS", "thermo")
    assert "thermo" in Plugins.load().registry.connectors


def test_misspelled_hook_fails_that_plugin_loudly(plugin_path):
    install_fake_distribution(plugin_path, "edgeplane-typo", "0.1.0", "typo_plugin", """
        from edgeplane import hookimpl

        @hookimpl
        def edgeplane_register_conectors(register):
            pass
    """, "typo")
    plugins = Plugins.load()
    assert "edgeplane_register_conectors" in str(plugins.infos["typo"].error)
    assert plugins.registry.connectors  # the others are unaffected


def test_a_hook_that_raises_or_registers_twice_fails_only_its_plugin():
    class Twin(Connector):
        pass

    class Raiser:
        __name__ = "raiser"

        @hookimpl
        def edgeplane_register_connectors(self, register):
            register("raiser-type", Twin)
            raise RuntimeError("boom while registering")

    class Duplicate:
        __name__ = "duplicate"

        @hookimpl
        def edgeplane_register_connectors(self, register):
            register("memory", Twin)

    plugins = Plugins.load(entry_points=False, extra=[Raiser(), Duplicate()])
    registry = plugins.registry
    assert "raiser-type" not in registry.connectors  # what it registered before failing is dropped
    assert "boom while registering" in str(plugins.infos["raiser"].error)
    assert "already registered" in str(plugins.infos["duplicate"].error)
    assert registry.connectors["memory"].__name__ == "MemoryConnector"


def test_registering_a_malformed_class_is_refused():
    class NotAConnector:
        pass

    class Bad:
        __name__ = "bad"

        @hookimpl
        def edgeplane_register_connectors(self, register):
            register("bad", NotAConnector)

    plugins = Plugins.load(entry_points=False, extra=[Bad()])
    assert "must subclass edgeplane.Connector" in str(plugins.infos["bad"].error)


def test_plugins_list_command(plugin_path):
    install_fake_distribution(plugin_path, "edgeplane-thermo", "1.2.0", "good_thermo_plugin", GOOD_PLUGIN, "thermo")
    install_fake_distribution(plugin_path, "edgeplane-broken", "0.3.1", "broken_plugin", "raise ImportError('nope')\n", "broken")
    runner = CliRunner()
    result = runner.invoke(main, ["plugins", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = {item["name"]: item for item in json.loads(result.output)}
    assert listed["thermo"]["distribution"] == "edgeplane-thermo"
    assert listed["thermo"]["version"] == "1.2.0"
    assert listed["thermo"]["registered"] == {"connectors": ["thermo"]}
    assert listed["builtin"]["registered"]["connectors"] == ["memory", "replay"]
    assert "nope" in listed["broken"]["error"]
    text = runner.invoke(main, ["plugins", "list"]).output
    assert "BROKEN" in text and "edgeplane-broken 0.3.1" in text


def test_run_loads_only_the_plugins_a_site_names(plugin_path):
    install_fake_distribution(plugin_path, "edgeplane-thermo", "1.2.0", "good_thermo_plugin", GOOD_PLUGIN, "thermo")
    install_fake_distribution(plugin_path, "edgeplane-broken", "0.3.1", "broken_plugin", "raise ImportError('nope')\n", "broken")
    lean = Plugins.load_for_site({"site": {"id": "s"}, "devices": {"t": {"connector": "thermo"}}})
    assert set(lean.infos) == {"builtin", "thermo"}  # the broken one is not even imported
    # a type whose plugin is named otherwise makes it load everything, to find it or explain it
    full = Plugins.load_for_site({"site": {"id": "s"}, "devices": {"t": {"connector": "unknown-kind"}}})
    assert {"builtin", "thermo", "broken"} <= set(full.infos)
