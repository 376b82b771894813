"""``edgeplane plugin install NAME_OR_PATH``: install a plugin into this host's environment, safely.

Two guards keep a working host working:

1. the plugin's own requirements are compared with what is installed; a requirement that an
   installed distribution does not satisfy refuses the install and names both sides;
2. pip then runs with every installed distribution pinned as a constraint, so no transitive
   requirement can upgrade or downgrade what the host already runs: pip's own conflict report
   is shown instead.

Afterwards the plugins are loaded in a fresh process and what the new distribution registered
is listed.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from edgeplane.errors import PluginError

__all__ = ["Conflict", "InstallError", "find_conflicts", "install_plugin", "plugin_requirements", "registered_by"]


class InstallError(PluginError):
    """The plugin was not installed; the message says why and what to do."""


@dataclass
class Conflict:
    requirement: str
    installed: str
    version: str

    def __str__(self) -> str:
        return f"the plugin requires {self.requirement!r}, but {self.installed} {self.version} is installed"


def plugin_requirements(target: str, *, pip_args: tuple[str, ...] = ()) -> tuple[str, list[Requirement]]:
    """The distribution name and direct requirements of a plugin folder, or of a name pip can find."""
    folder = Path(target)
    if (folder / "pyproject.toml").is_file():
        try:
            project = tomllib.loads((folder / "pyproject.toml").read_text()).get("project", {})
        except tomllib.TOMLDecodeError as e:
            raise InstallError(f"{folder / 'pyproject.toml'} is not valid TOML: {e}") from None
        name = project.get("name")
        if not name:
            raise InstallError(f"{folder / 'pyproject.toml'} has no [project] name")
        raw = list(project.get("dependencies", []))
    else:
        # a name (or a wheel): ask pip what it would install, without installing or resolving deps
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.json"
            done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
                                   "--quiet", "--report", str(report), *pip_args, target],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise InstallError(f"pip cannot find {target!r}: {done.stderr.strip().splitlines()[-1:] or done.stdout}")
            items = json.loads(report.read_text()).get("install", [])
        if not items:
            raise InstallError(f"pip found nothing to install for {target!r}")
        metadata = items[0]["metadata"]
        name, raw = metadata["name"], list(metadata.get("requires_dist") or [])
    requirements = []
    for text in raw:
        try:
            requirements.append(Requirement(text))
        except InvalidRequirement as e:
            raise InstallError(f"{name}: requirement {text!r} is invalid: {e}") from None
    return name, requirements


def find_conflicts(requirements: list[Requirement]) -> list[Conflict]:
    """Requirements (for this Python, without extras) that an installed distribution does not satisfy."""
    conflicts = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            continue  # pip will install it
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            conflicts.append(Conflict(str(req), req.name, version))
    return conflicts


def _installed_pins(skip: str) -> str:
    pins = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and canonicalize_name(name) != canonicalize_name(skip):
            pins[canonicalize_name(name)] = dist.version
    return "".join(f"{n}=={v}\n" for n, v in sorted(pins.items()))


def registered_by(dist: str, python: str = sys.executable) -> list[dict[str, Any]]:
    """What the plugins of distribution ``dist`` register, loaded in a fresh ``python`` process."""
    code = ("import json; from edgeplane.plugins import Plugins; "
            "print(json.dumps([i.as_dict() for i in Plugins.load().describe()]))")
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise InstallError(f"loading the plugins after the install failed: {done.stderr.strip()[-2000:]}")
    infos = json.loads(done.stdout.strip().splitlines()[-1])
    return [i for i in infos if i["distribution"] and canonicalize_name(i["distribution"]) == canonicalize_name(dist)]


def install_plugin(target: str, *, editable: bool = False, pip_args: tuple[str, ...] = ()) -> tuple[str, list[dict[str, Any]], str]:
    """Install ``target`` (a folder or a name); returns (distribution, what it registered, pip's output).

    Raises :class:`InstallError` on a conflict (nothing was installed) or a failed install.
    """
    name, requirements = plugin_requirements(target, pip_args=pip_args)
    conflicts = find_conflicts(requirements)
    if conflicts:
        listed = "\n  ".join(str(c) for c in conflicts)
        raise InstallError(
            f"refused to install {name}: its requirements conflict with this host's environment:\n  {listed}\n"
            f"nothing was installed; widen the plugin's requirement ranges or upgrade the host's packages first"
        )
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "installed.txt"
        constraints.write_text(_installed_pins(name))
        command = [sys.executable, "-m", "pip", "install", "--constraint", str(constraints), *pip_args]
        command += ["-e", target] if editable else [target]
        done = subprocess.run(command, capture_output=True, text=True)
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        if "ResolutionImpossible" in output or "conflict" in output.lower():
            raise InstallError(
                f"refused to install {name}: a requirement of its requirements would change a package this host "
                f"runs (every installed distribution is pinned during the install); pip said:\n{output[-3000:]}"
            )
        raise InstallError(f"pip could not install {name}:\n{output[-3000:]}")
    registered = registered_by(name)
    return name, registered, output
