"""The repository's shape: rules that keep the many distributions installable and documented."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

import edgeplane
from edgeplane import hookspecs

REPO = Path(__file__).resolve().parents[1]


def test_platform_folder_is_not_a_package():
    # platform/__init__.py would shadow the standard library's `platform` module
    assert not (REPO / "platform" / "__init__.py").exists()
    import platform

    assert hasattr(platform, "python_version"), "the standard library's platform module is shadowed"
    assert Path(platform.__file__).parent != REPO / "platform"


def test_top_level_folders_exist():
    for folder in ("connectors", "solutions", "plugins", "configs", "tests", "benchmarks"):
        assert (REPO / folder).is_dir(), f"{folder}/ is missing"


def _distribution_folders() -> list[Path]:
    folders = [p.parent for group in ("connectors", "uplinks", "solutions", "plugins") for p in (REPO / group).glob("*/pyproject.toml")]
    return sorted(folders + [REPO / "platform" / "cloud"])  # edgeplane-cloud, the cloud end


def test_every_distribution_is_installed_by_the_setup_command():
    listed = set()
    for line in (REPO / "requirements-dev.txt").read_text().splitlines():
        m = re.match(r"^-e\s+(\S+)", line.strip())
        if m:
            listed.add((REPO / m.group(1).split("[")[0]).resolve())
    assert REPO.resolve() in listed, "the core distribution (-e .) is missing from requirements-dev.txt"
    missing = [str(d.relative_to(REPO)) for d in _distribution_folders() if d.resolve() not in listed]
    assert not missing, f"add '-e <folder>' lines to requirements-dev.txt for: {missing}"


def test_distributions_follow_the_layout():
    for folder in _distribution_folders():
        text = (folder / "pyproject.toml").read_text()
        name = re.search(r'^name\s*=\s*"([^"]+)"', text, re.M).group(1)
        assert name.startswith("edgeplane-"), f"{folder}: distributions are named edgeplane-<name>"
        package = name.replace("-", "_")
        assert (folder / "src" / package).is_dir(), f"{folder}: code lives in src/{package}/"
        assert (folder / "tests").is_dir(), f"{folder}: tests/ is missing"
        assert "[project.entry-points.edgeplane]" in text, f"{folder}: no entry point in group 'edgeplane'"


def test_every_hook_is_documented():
    hooks = [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("edgeplane_")]
    assert len(hooks) >= 8
    for hook in hooks:
        doc = inspect.getdoc(hook) or ""
        assert "Called" in doc, f"{hook.__name__}: say when it is called"
        assert re.search(r"Return", doc), f"{hook.__name__}: say what it returns"
        assert all(p.annotation is not inspect.Parameter.empty for p in inspect.signature(hook).parameters.values()), (
            f"{hook.__name__}: type every argument"
        )


def test_public_surface_is_complete():
    exported = set(edgeplane.__all__)
    public = {n for n, v in vars(edgeplane).items() if not n.startswith("_") and not inspect.ismodule(v)}
    assert public == exported, f"__all__ differs from the public names: {public ^ exported}"
    for name in edgeplane.__all__:
        assert getattr(edgeplane, name) is not None


def test_core_never_imports_heavy_dependencies():
    heavy = {"torch", "pvlib", "sumo", "traci", "libsumo", "stable_baselines3"}
    before = set(sys.modules)
    for module in ("edgeplane", "edgeplane.cli", "edgeplane.host", "edgeplane.testing"):
        importlib.import_module(module)
    loaded = {m.split(".")[0] for m in set(sys.modules) - before}
    assert not (loaded & heavy)
    for path in (REPO / "platform" / "edgeplane").rglob("*.py"):
        text = path.read_text()
        for name in heavy:
            assert not re.search(rf"^\s*(import|from)\s+{name}\b", text, re.M), f"{path} imports {name}"


def test_the_core_imports_no_plugin_distribution():
    """Imports flow one way: connectors, solutions, uplinks and the cloud end import the core, never
    the reverse (the console's commissioning and the reference sites come in through hooks)."""
    import ast

    offenders = []
    for path in (REPO / "platform" / "edgeplane").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(REPO)}:{node.lineno}: {n}" for n in names if n.startswith("edgeplane_")]
    assert not offenders, offenders


def test_plugins_import_only_the_plugin_api():
    """The other direction: a plugin distribution (connectors, solutions, uplinks, plugins, the cloud
    end; code and tests) imports from the core only the modules ``edgeplane.PLUGIN_API`` lists, and
    no private name from them. Widen the list deliberately (and say why in edgeplane/__init__.py)."""
    import ast
    import importlib.util

    assert all(importlib.util.find_spec(m) is not None for m in edgeplane.PLUGIN_API), "PLUGIN_API names a lost module"

    def core(module: str) -> bool:
        return module == "edgeplane" or module.startswith("edgeplane.")

    offenders = []
    for folder in _distribution_folders():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(REPO).as_posix()
            if "/build/" in relative or "/node_modules/" in relative:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                where = f"{relative}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.ImportFrom) and node.level == 0 and core(node.module or ""):
                    if node.module not in edgeplane.PLUGIN_API:
                        offenders.append(f"{where}: from {node.module} import ...")
                    offenders += [f"{where}: {node.module}.{a.name} is private" for a in node.names if a.name.startswith("_")]
                elif isinstance(node, ast.Import):
                    offenders += [f"{where}: import {a.name}" for a in node.names
                                  if core(a.name) and a.name not in edgeplane.PLUGIN_API]
    assert not offenders, "outside edgeplane.PLUGIN_API:\n" + "\n".join(offenders)
