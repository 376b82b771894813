"""Dotted paths into decoded JSON: ``main.temp``, ``data.0.value``."""

from __future__ import annotations

from typing import Any

__all__ = ["MISSING", "extract"]

MISSING = object()


def extract(document: Any, path: str | None) -> Any:
    """The value at ``path`` (``None`` or ``""``: the document itself), or :data:`MISSING`."""
    if not path:
        return document
    current = document
    for part in path.split("."):
        if isinstance(current, dict):
            if part not in current:
                return MISSING
            current = current[part]
        elif isinstance(current, list):
            try:
                current = current[int(part)]
            except (ValueError, IndexError):
                return MISSING
        else:
            return MISSING
    return current
