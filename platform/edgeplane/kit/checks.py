"""``edgeplane plugin check PATH``: what a plugin folder needs before it is published.

Each check gives one :class:`Check` (name, passed, detail with the fix). The plugin's package is
imported from ``PATH/src`` (or ``PATH``) in this process, registered with a fresh plugin manager
(never the host's), and its registrations inspected.
"""

from __future__ import annotations

import importlib
import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edgeplane import hookspecs

__all__ = ["Check", "check_plugin"]


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name}" + (f": {self.detail}" if self.detail else "")


def _undocumented_fields(model: type[BaseModel], base: type[BaseModel]) -> list[str]:
    """Fields a plugin's model adds (or redefines) without a description."""
    missing = []
    for field_name, info in model.model_fields.items():
        inherited = base.model_fields.get(field_name)
        if inherited is not None and info.description == inherited.description and info.annotation == inherited.annotation:
            continue
        if not info.description:
            missing.append(field_name)
    return missing


def _import_entry(module_path: str, search: list[Path]) -> Any:
    saved_path = list(sys.path)
    sys.path[:0] = [str(p) for p in search]
    top = module_path.split(".")[0]
    try:
        # a stale copy of the same package (installed, or checked before) would hide the folder's
        for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            del sys.modules[name]
        importlib.invalidate_caches()
        return importlib.import_module(module_path.split(":")[0])
    finally:
        sys.path[:] = saved_path


def check_plugin(folder: Path) -> list[Check]:
    """Run every check on the plugin distribution in ``folder``."""
    from edgeplane.components import Connector, Solution
    from edgeplane.config import DeviceConfig, PointSpec, SolutionConfig, site_json_schema
    from edgeplane.plugins import Plugins

    folder = Path(folder).resolve()
    checks: list[Check] = []
    pyproject = folder / "pyproject.toml"
    try:
        meta = tomllib.loads(pyproject.read_text())
    except OSError:
        return [Check("pyproject.toml", False, f"no {pyproject}: a plugin is a distribution; run 'edgeplane plugin new'")]
    except tomllib.TOMLDecodeError as e:
        return [Check("pyproject.toml", False, f"{pyproject} is not valid TOML: {e}")]
    project = meta.get("project", {})
    dist = project.get("name", "")
    entry_points = project.get("entry-points", {}).get("edgeplane", {})
    if not entry_points:
        checks.append(Check("entry point", False, f"{pyproject}: add [project.entry-points.edgeplane] "
                                                  f"<name> = \"<package>.plugin\""))
        return checks
    checks.append(Check("entry point", True, ", ".join(f"{k} = {v}" for k, v in entry_points.items())))
    deps = project.get("dependencies", [])
    has_core = any(str(d).replace(" ", "").lower().startswith("edgeplane") and not str(d).lower().startswith("edgeplane-")
                   for d in deps)
    checks.append(Check("depends on edgeplane", has_core,
                        "" if has_core else f"{pyproject}: add \"edgeplane>=0.1,<0.2\" to [project] dependencies"))

    search = [folder / "src", folder] if (folder / "src").is_dir() else [folder]
    modules = {}
    for name, target in entry_points.items():
        try:
            modules[name] = _import_entry(target, search)
        except Exception as e:  # noqa: BLE001 - any import error is the plugin's
            checks.append(Check(f"entry point {name} imports", False, f"{target}: {type(e).__name__}: {e}"))
    if not modules:
        return checks
    checks.append(Check("entry point imports", True, ", ".join(m.__name__ for m in modules.values())))

    known = {n for n in dir(hookspecs) if n.startswith("edgeplane_")}
    for name, module in modules.items():
        of = f" ({name})" if len(modules) > 1 else ""
        impls = {n: f for n, f in vars(module).items() if callable(f) and hasattr(f, "edgeplane_impl")}
        unmarked = [n for n, f in vars(module).items() if n.startswith("edgeplane_") and callable(f) and n not in impls]
        unknown = sorted(set(impls) - known)
        if unknown or unmarked:
            detail = []
            if unknown:
                detail.append(f"unknown hooks {unknown} (misspelled? known: {', '.join(sorted(known))})")
            if unmarked:
                detail.append(f"{unmarked} lack @hookimpl (from edgeplane import hookimpl)")
            checks.append(Check(f"hooks known{of}", False, "; ".join(detail)))
        elif not impls:
            checks.append(Check(f"hooks known{of}", False, f"{module.__name__} implements no hook: add e.g. "
                                                       "@hookimpl def edgeplane_register_connectors(register)"))
        else:
            checks.append(Check(f"hooks known{of}", True, ", ".join(sorted(impls))))
        undocumented = sorted(n for n, f in impls.items() if not (f.__doc__ or "").strip())
        checks.append(Check(f"hooks documented{of}", not undocumented,
                            f"add a docstring to {undocumented}: say what it registers" if undocumented else
                            "every hookimpl has a docstring; hookspecs: edgeplane.hookspecs"))

    plugins = Plugins.load(entry_points=False, extra=list(modules.values()))
    broken = [info for info in plugins.describe() if info.error is not None]
    if broken:
        checks.append(Check("registers", False, "; ".join(str(i.error) for i in broken)))
        return checks
    registry = plugins.registry
    mine = {(kind, n) for (kind, n), owner in registry.owners.items() if owner != "builtin"}
    if not mine:
        checks.append(Check("registers", False, "the hooks registered nothing"))
        return checks
    checks.append(Check("registers", True, ", ".join(f"{k[:-1]} {n}" for k, n in sorted(mine))))

    problems = []
    for kind, name in sorted(mine):
        if kind not in ("connectors", "solutions"):
            continue
        cls = getattr(registry, kind)[name]
        if not (cls.__doc__ or "").strip() or cls.__doc__ in (Connector.__doc__, Solution.__doc__):
            problems.append(f"{cls.__name__} has no docstring")
        pairs: list[tuple[type[BaseModel], type[BaseModel]]] = [
            (cls.Config, DeviceConfig if kind == "connectors" else SolutionConfig)]
        if kind == "connectors":
            pairs.append((cls.Point, PointSpec))
        for model, base in pairs:
            missing = _undocumented_fields(model, base)
            if missing:
                problems.append(f"{model.__name__} fields without a description: {missing} (Field(description=...))")
    checks.append(Check("classes and config fields documented", not problems, "; ".join(problems)))

    try:
        for kind, name in sorted(mine):
            if kind == "connectors":
                json.dumps(registry.device_model(name).model_json_schema())
            elif kind == "solutions":
                json.dumps(registry.solution_model(name).model_json_schema())
        json.dumps(site_json_schema(registry))
        checks.append(Check("config model exportable", True, "JSON Schema of every registered type and of site files"))
    except Exception as e:  # noqa: BLE001 - pydantic raises several kinds
        checks.append(Check("config model exportable", False, f"{type(e).__name__}: {e}: use JSON-compatible field types"))

    tests = [p for p in (folder / "tests").rglob("test_*.py") if "def test_" in p.read_text()] if (folder / "tests").is_dir() else []
    checks.append(Check("tests present", bool(tests),
                        f"{len(tests)} test files" if tests else f"add {folder / 'tests'}/test_*.py using the edgeplane_host fixture"))
    readme = folder / "README.md"
    checks.append(Check("README", readme.is_file(), "" if readme.is_file() else f"add {readme}: what it does, a site-file example"))
    if dist and not dist.startswith("edgeplane-"):
        checks.append(Check("distribution name", False, f"{dist!r}: name it edgeplane-<name> so people find it"))
    return checks
