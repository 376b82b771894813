"""What a plugin contributes to the site console: a :class:`Panel` per solution type.

A panel is data, not code for the browser: its ``view`` returns widgets (:class:`Stats`,
:class:`Plot`, :class:`Table`) that the console draws itself, so a plugin ships no JavaScript and
every panel looks alike. ``view`` runs on the event loop for each request: read the solution's
state and the :class:`PanelData` the console keeps (history, recent events); never block.

::

    @hookimpl
    def edgeplane_register_console_panels(register):
        register(Panel("solar.forecast", "Forecast against measured", forecast_view))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

__all__ = ["Band", "Panel", "PanelData", "Plot", "Series", "Stats", "Table", "Widget", "json_safe", "jsonable"]


@dataclass(frozen=True)
class Series:
    """A line: ``points`` are (x, y) with x in seconds since the epoch (UTC) unless the plot says otherwise."""

    name: str
    points: Sequence[tuple[float, float | None]]  # a list; any sequence type-checks (list is invariant)
    dashed: bool = False


@dataclass(frozen=True)
class Band:
    """A shaded range between two lines, e.g. P10 to P90: ``points`` are (x, low, high)."""

    name: str
    points: Sequence[tuple[float, float, float]]


@dataclass(frozen=True)
class Plot:
    title: str
    series: list[Series] = field(default_factory=list)
    bands: list[Band] = field(default_factory=list)
    unit: str = ""
    x: str = "time"  # "time": epoch seconds drawn as clock time; anything else: plain numbers
    kind: str = field(default="plot", init=False)


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    kind: str = field(default="table", init=False)


@dataclass(frozen=True)
class Stats:
    """Big numbers with labels: ``items`` maps a label to a value (units in the label or the value)."""

    title: str
    items: dict[str, Any]
    kind: str = field(default="stats", init=False)


Widget = Plot | Table | Stats


class PanelData(Protocol):
    """What the console offers a panel's view besides the solution object."""

    def history(self, topic: str) -> list[tuple[float, float]]:
        """The recent values of a topic (one sample a second at most), oldest first."""

    def latest(self, topic: str) -> tuple[float, Any, int] | None:
        """The newest reading of a topic as (ts, value, quality)."""

    def events(self, pattern: str, limit: int = 50) -> list[dict[str, Any]]:
        """Recent events whose topic matches ``pattern``, newest first, as dicts."""


@dataclass(frozen=True)
class Panel:
    """A section of the console for every running solution of type ``solution_type``.

    ``view(solution, data)`` returns the widgets to draw; it is called when a page asks (every
    few seconds while the panel is on screen).
    """

    solution_type: str
    title: str
    view: Callable[[Any, PanelData], list[Widget]]


def jsonable(widget: Widget) -> dict[str, Any]:
    """A widget as JSON-ready data: NaN and infinities become null (JSON has neither)."""
    safe: dict[str, Any] = json_safe(asdict(widget))  # a dict stays a dict
    return safe


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None and numpy scalars as Python ones, for JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item"):
        return json_safe(value.item())
    return value
