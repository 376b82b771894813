"""Package attributes imported on first use (PEP 562), for subpackages with heavy dependencies.

``edgeplane.inference`` and ``edgeplane.sync`` are imported by the site-file config, so their
``__init__`` must not import onnxruntime, paho or zstandard: a host whose site does not use
them never pays for them.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_attributes(package: str, namespace: dict[str, Any], names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each of ``names`` (attribute -> module)
    is imported when first asked for, then kept in ``namespace`` (the package's globals)."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
