"""The config package's modules import one way, the core has no import cycle, and nothing dodges one with lazy imports."""

from __future__ import annotations

import ast
from pathlib import Path

import edgeplane

PLATFORM = Path(edgeplane.__file__).resolve().parent
# bottom first: a module may import only modules before it in this list
CONFIG_LAYERS = ["units", "base", "tls", "redaction", "yamlfile", "sections", "site_model", "schema"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PLATFORM.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported when ``path`` is imported: module-level statements, not those under
    ``if TYPE_CHECKING:`` nor inside functions (those run later, when the graph is complete)."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    # "from edgeplane import hookspecs" imports the submodule edgeplane.hookspecs
                    sub = f"{base}.{alias.name}"
                    found.add(sub if _exists(sub) else base)

    visit(tree.body)
    return {name for name in found if name == "edgeplane" or name.startswith("edgeplane.")}


def _exists(module: str) -> bool:
    relative = Path(*module.split("."))
    return (PLATFORM.parent / relative).with_suffix(".py").is_file() or (PLATFORM.parent / relative / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    return {_module_name(path): _top_level_imports(path) for path in PLATFORM.rglob("*.py")}


def test_config_modules_import_one_way():
    graph = _graph()
    for i, layer in enumerate(CONFIG_LAYERS):
        module = f"edgeplane.config.{layer}"
        assert module in graph, f"{module} is gone: update CONFIG_LAYERS"
        config_imports = {m.rpartition(".")[2] for m in graph[module] if m.startswith("edgeplane.config")}
        upward = config_imports - set(CONFIG_LAYERS[:i])
        assert not upward, f"{module} imports {sorted(upward)}, which sit at or above it: move the shared part down"
        assert "edgeplane.config" not in graph[module], f"{module} imports the package edgeplane.config: import the module"
    for bottom in ("units", "base"):
        outside = {m for m in graph[f"edgeplane.config.{bottom}"] if not m.startswith("edgeplane.config.")}
        assert outside <= {"edgeplane.errors"}, f"edgeplane.config.{bottom} must stay at the bottom, imports {outside}"


def test_no_import_cycle_in_the_core():
    """No module of edgeplane imports (at import time) a module that imports it back, directly or not."""
    graph = _graph()

    def reaches(start: str, target: str) -> list[str] | None:
        stack, seen = [(start, [start])], {start}
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == target:
                    return path + [nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    for module in sorted(graph):
        cycle = reaches(module, module)
        assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_settings_modules_import_only_the_bottom_of_config():
    graph = _graph()
    for module in ("edgeplane.inference.config", "edgeplane.sync.config", "edgeplane.console.config"):
        config_imports = {m for m in graph[module] if m.startswith("edgeplane.config")}
        assert config_imports <= {"edgeplane.config.units", "edgeplane.config.base", "edgeplane.config.tls"}, (module, config_imports)


def test_nothing_imports_a_lazy_loader():
    assert not (PLATFORM / "lazy.py").exists()
    users = [str(p) for p in PLATFORM.rglob("*.py") if "edgeplane.lazy" in p.read_text() or "lazy_attributes" in p.read_text()]
    assert not users, f"these still import edgeplane.lazy: {users}"
    # the packages the site model imports settings from are imported whole, not attribute by attribute
    for package in ("config", "inference", "sync", "console"):
        init = PLATFORM / package / "__init__.py"
        assert "def __getattr__" not in init.read_text(), f"{init}: a module __getattr__ (PEP 562) dodging an import"
