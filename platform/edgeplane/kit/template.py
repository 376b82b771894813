"""Rendering the plugin template (``plugins/template/<kind>/``) into a new distribution.

Files ending in ``.tmpl`` are rendered and lose the suffix; ``{{placeholder}}`` is replaced from
:func:`names_for`; a path part ``__package__`` becomes the package name. Other files are copied.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgeplane.errors import EdgeplaneError

__all__ = ["KINDS", "TemplateError", "find_template", "names_for", "render"]

KINDS = ("connector", "solution")
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_PLACEHOLDER_RE = re.compile(r"\{\{(\w+)\}\}")


class TemplateError(EdgeplaneError):
    """The template cannot be found or rendered; the message says how to fix it."""


def find_template() -> Path:
    """The template folder: ``$EDGEPLANE_PLUGIN_TEMPLATE``, else ``plugins/template`` of this checkout."""
    configured = os.environ.get("EDGEPLANE_PLUGIN_TEMPLATE")
    candidates = [Path(configured)] if configured else []
    # platform/edgeplane/kit/template.py -> the repository root is three folders up from the package
    candidates.append(Path(__file__).resolve().parents[3] / "plugins" / "template")
    for folder in candidates:
        if all((folder / kind).is_dir() for kind in KINDS):
            return folder
    raise TemplateError(
        f"plugin template not found (looked in {', '.join(str(c) for c in candidates)}): install edgeplane from "
        "its repository (pip install -e .) or set EDGEPLANE_PLUGIN_TEMPLATE to a copy of plugins/template"
    )


@dataclass(frozen=True)
class Names:
    name: str  # weather-station
    type: str  # weather_station: connector type, entry-point name, solution prefix
    dist: str  # edgeplane-weather-station
    package: str  # edgeplane_weather_station
    cls: str  # WeatherStation
    title: str  # Weather station

    def mapping(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "dist": self.dist, "package": self.package,
                "class": self.cls, "title": self.title}


def names_for(name: str) -> Names:
    """The names a plugin called ``name`` gets; raises TemplateError for an unusable name."""
    name = name.strip().lower().removeprefix("edgeplane-")
    if not _NAME_RE.match(name):
        raise TemplateError(
            f"{name!r} is not a usable plugin name: use lowercase letters and digits, words joined by '-' "
            "(e.g. weather-station)"
        )
    words = name.split("-")
    return Names(
        name=name,
        type="_".join(words),
        dist=f"edgeplane-{name}",
        package="edgeplane_" + "_".join(words),
        cls="".join(w.capitalize() for w in words),
        title=" ".join(words).capitalize(),
    )


def _render_text(text: str, mapping: dict[str, str], source: Path) -> str:
    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in mapping:
            raise TemplateError(f"{source}: unknown placeholder {{{{{key}}}}}; known: {', '.join(sorted(mapping))}")
        return mapping[key]

    return _PLACEHOLDER_RE.sub(substitute, text)


def render(kind: str, name: str, parent: Path, template: Path | None = None) -> Path:
    """Render the ``kind`` template as plugin ``name`` into ``parent/edgeplane-<name>``; returns that folder."""
    if kind not in KINDS:
        raise TemplateError(f"unknown plugin kind {kind!r}: choose one of {', '.join(KINDS)}")
    names = names_for(name)
    source_root = (template or find_template()) / kind
    target = Path(parent) / names.dist
    if target.exists() and any(target.iterdir()):
        raise TemplateError(f"{target} exists and is not empty: choose another --dir or remove it")
    mapping = names.mapping()
    for source in sorted(source_root.rglob("*")):
        if source.is_dir() or "__pycache__" in source.parts:
            continue
        relative = Path(*[names.package if part == "__package__" else part for part in source.relative_to(source_root).parts])
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix == ".tmpl":
            destination = destination.with_suffix("")
            destination.write_text(_render_text(source.read_text(), mapping, source))
        else:
            destination.write_bytes(source.read_bytes())
    return target
