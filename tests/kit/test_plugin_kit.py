"""plugin new / check / install: the integrator's path from a template to an installed, tested plugin."""

from __future__ import annotations

import importlib.metadata
import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from .conftest import plugin_cmd

REPO = Path(__file__).resolve().parents[2]


def pip_install_to(target: Path, *folders: Path) -> None:
    """Build and install plugin folders into ``target`` (a folder for PYTHONPATH), offline."""
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), *map(str, folders)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def env_with(path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("PYTEST_ADDOPTS", None)
    return env


def test_new_renders_both_kinds_which_install_and_pass_their_own_tests(tmp_path: Path):
    out = plugin_cmd("new", "connector", "weather-station", "--dir", tmp_path).output
    assert "connector: weather_station" in out
    plugin_cmd("new", "solution", "line-watch", "--dir", tmp_path)
    connector, solution = tmp_path / "edgeplane-weather-station", tmp_path / "edgeplane-line-watch"
    for folder, package in ((connector, "edgeplane_weather_station"), (solution, "edgeplane_line_watch")):
        assert (folder / "pyproject.toml").is_file() and (folder / "README.md").is_file()
        assert (folder / "src" / package / "plugin.py").is_file()
        assert not list(folder.rglob("*.tmpl")) and "{{" not in (folder / "pyproject.toml").read_text()

    installed = tmp_path / "site-packages"
    pip_install_to(installed, connector, solution)
    # installed: the entry points are found the way the host finds every plugin
    code = ("import json; from edgeplane.plugins import Plugins; "
            "print(json.dumps({i.name: i.registered for i in Plugins.load().describe() if i.distribution}))")
    done = subprocess.run([sys.executable, "-c", code], env=env_with(installed), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    registered = json.loads(done.stdout.strip().splitlines()[-1])
    assert registered["weather_station"] == {"connectors": ["weather_station"]}
    assert registered["line_watch"] == {"solutions": ["line_watch.monitor"]}

    for folder, count in ((connector, 4), (solution, 3)):
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=folder,
                              env=env_with(installed), capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert f"{count} passed" in done.stdout, done.stdout[-2000:]

    for folder in (connector, solution):
        out = plugin_cmd("check", folder).output
        assert "FAIL" not in out and " 0 failed" in out, out


def test_new_refuses_a_bad_name_and_a_used_folder(tmp_path: Path):
    assert "not a usable plugin name" in plugin_cmd("new", "connector", "Bad_Name", "--dir", tmp_path, ok=False).output
    plugin_cmd("new", "connector", "meter", "--dir", tmp_path)
    assert "not empty" in plugin_cmd("new", "solution", "meter", "--dir", tmp_path, ok=False).output


def test_check_names_each_problem_and_its_fix(tmp_path: Path):
    plugin_cmd("new", "connector", "meter", "--dir", tmp_path)
    folder = tmp_path / "edgeplane-meter"
    src = folder / "src" / "edgeplane_meter"
    plugin = src / "plugin.py"
    plugin.write_text(plugin.read_text().replace("def edgeplane_register_connectors", "def edgeplane_register_conectors"))
    out = plugin_cmd("check", folder, ok=False).output
    assert "FAIL  hooks known" in out and "edgeplane_register_conectors" in out and "misspelled" in out

    plugin.write_text(plugin.read_text().replace("def edgeplane_register_conectors", "def edgeplane_register_connectors"))
    config = src / "config.py"
    config.write_text(config.read_text().replace(
        'timeout: Duration = Field(5.0, description="how long one request may take")', "timeout: Duration = 5.0"))
    for test in (folder / "tests").glob("*.py"):
        test.unlink()
    out = plugin_cmd("check", folder, ok=False).output
    assert "PASS  hooks known" in out
    assert "FAIL  classes and config fields documented" in out and "['timeout']" in out
    assert "FAIL  tests present" in out
    assert "PASS  config model exportable" in out

    pyproject = folder / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[project.entry-points.edgeplane]", "[project.entry-points.other]"))
    out = plugin_cmd("check", folder, ok=False).output
    assert "FAIL  entry point" in out and "[project.entry-points.edgeplane]" in out


def test_check_passes_on_the_worked_example():
    out = plugin_cmd("check", REPO / "plugins" / "http-json").output
    assert "FAIL" not in out and "registers: connector http_json" in out


def test_install_refuses_requirements_that_conflict_with_the_host(tmp_path: Path):
    plugin_cmd("new", "connector", "old-thing", "--dir", tmp_path)
    folder = tmp_path / "edgeplane-old-thing"
    pyproject = folder / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"edgeplane>=0.1,<0.2",', '"edgeplane>=0.1,<0.2", "click<8", "pydantic>=99",'))
    out = plugin_cmd("install", folder, ok=False).output
    assert "refused to install edgeplane-old-thing" in out
    assert f"'click<8', but click {importlib.metadata.version('click')} is installed" in out
    assert "'pydantic>=99'" in out
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("edgeplane-old-thing")


@pytest.fixture
def host_env(tmp_path: Path) -> Path:
    """A virtual environment layered on this one (a .pth adds our site-packages): a host's environment
    a plugin can be installed into without touching the one the tests run in."""
    env = tmp_path / "host-env"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib, "_edgeplane_parent.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in ours))
    return python


def test_install_into_the_host_environment_lists_what_it_registered(tmp_path: Path, host_env: Path):
    plugin_cmd("new", "connector", "weather-station", "--dir", tmp_path)
    folder = tmp_path / "edgeplane-weather-station"
    done = subprocess.run([str(host_env), "-m", "edgeplane.kit", "plugin", "install", str(folder), "--no-build-isolation",
                           "--no-index"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "installed edgeplane-weather-station" in done.stdout
    assert "plugin weather_station 0.1.0" in done.stdout and "connectors: weather_station" in done.stdout
    listed = subprocess.run([str(host_env), "-m", "edgeplane.cli", "plugins", "list", "--json"], capture_output=True, text=True)
    assert any(p["distribution"] == "edgeplane-weather-station" for p in json.loads(listed.stdout))
    # the environment the tests run in is untouched
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("edgeplane-weather-station")


def test_the_groups_the_cli_registers_are_named_plugin_and_site():
    import click

    from edgeplane.cli import main
    from edgeplane.kit.plugin_cli import plugin_group
    from edgeplane.provisioning.site_cli import site_group

    assert isinstance(plugin_group, click.Group) and plugin_group.name == "plugin"
    assert isinstance(site_group, click.Group) and site_group.name == "site"
    assert set(plugin_group.commands) == {"new", "install", "check"}
    assert set(site_group.commands) == {"init", "certs", "revoke", "render", "doctor"}
    assert not {"plugin", "site"} & set(main.commands), "a core command already has that name"
