"""The site console: a web page on the host's HTTP port for commissioning and operating a site.

Served by the host itself (``/console/``) when the site file has a ``console:`` section (see
:mod:`edgeplane.console.config`); every asset ships in this package, nothing is fetched from the
internet. Plugins add per-solution panels with the ``edgeplane_register_console_panels`` hook and
the widgets of :mod:`edgeplane.console.panels`.
"""

from __future__ import annotations

from edgeplane.console.panels import Band, Panel, PanelData, Plot, Series, Stats, Table, Widget

__all__ = ["Band", "Panel", "PanelData", "Plot", "Series", "Stats", "Table", "Widget"]
