"""Every public exception class of every edgeplane distribution is in one tree, drawn in errors.py."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import re
from importlib.metadata import distributions

import edgeplane.errors
from edgeplane.errors import EdgeplaneError

# Modules that are not part of an importable API: scripts run by another interpreter.
_SCRIPTS = {
    "edgeplane_sparkplug.peer_host",  # runs in the peer's own venv (pysparkplug needs paho-mqtt 1.x)
}



def _edgeplane_packages() -> list[str]:
    names = set()
    for dist in distributions():
        top = (dist.read_text("top_level.txt") or "").split()
        names.update(n for n in top if n == "edgeplane" or n.startswith("edgeplane_"))
        if not top and (dist.metadata["Name"] or "").startswith("edgeplane"):
            names.add(dist.metadata["Name"].replace("-", "_"))
    return sorted(n for n in names if importlib.util.find_spec(n) is not None)


def _public_errors() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in _edgeplane_packages():
        module = importlib.import_module(package)
        names = [package] + [m.name for m in pkgutil.walk_packages(module.__path__, package + ".")]
        for name in names:
            if name in _SCRIPTS or name.endswith(".__main__"):
                continue
            module = importlib.import_module(name)
            for attr, value in vars(module).items():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and not attr.startswith("_")
                    and value.__module__ == name
                ):
                    found[f"{name}.{attr}"] = value
    return found


def test_every_public_error_is_in_the_tree_and_drawn():
    errors = _public_errors()
    assert len(errors) > 20, sorted(errors)  # the walk found the distributions' modules
    outside = sorted(name for name, cls in errors.items() if not issubclass(cls, EdgeplaneError))
    assert not outside, f"derive these from EdgeplaneError (or a subclass in edgeplane.errors): {outside}"
    doc = edgeplane.errors.__doc__ or ""
    drawn = set(re.findall(r"\w+", doc))
    undrawn = sorted(name for name, cls in errors.items() if cls.__name__ not in drawn)
    assert not undrawn, f"draw these in edgeplane/errors.py's docstring: {undrawn}"
