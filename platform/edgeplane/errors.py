"""Every error edgeplane raises on purpose, as one tree.

::

    EdgeplaneError                 anything edgeplane raises on purpose
    ├── SiteError                  a site file (or a desired-config fragment) is invalid
    │                              .problems lists each one: file, line, key path, message, fix
    ├── PluginError                a plugin cannot be used
    │   ├── PluginLoadError        its entry point failed to import or its hooks raised
    │   └── UnknownTypeError       the site names a connector/solution type nobody registered
    ├── RegistrationError          two plugins registered the same name, or a class is malformed
    ├── LifecycleError             an object was used in the wrong state ("cannot start a
    │                              stopped host")
    ├── CommandError               a write could not be carried out; .result says why
    └── SecretError                a ${env:...} or ${file:...} reference cannot be resolved

Each message names the thing (plugin, device, point, config path) and the way out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeplane.commands import CommandResult


class EdgeplaneError(Exception):
    """Base of every error edgeplane raises on purpose."""


@dataclass(frozen=True)
class SiteProblem:
    """One thing wrong with a site file."""

    path: str  # dotted key path, e.g. "devices.inv1.unit"
    message: str
    file: str | None = None
    line: int | None = None
    fix: str | None = None

    def __str__(self) -> str:
        where = self.file or "<site>"
        if self.line is not None:
            where += f":{self.line}"
        text = f"{where}: {self.path or '(top level)'}: {self.message}"
        if self.fix:
            text += f"\n    fix: {self.fix}"
        return text


class SiteError(EdgeplaneError):
    """A site file is invalid. ``problems`` holds every problem found, not just the first."""

    def __init__(self, problems: list[SiteProblem]):
        self.problems = list(problems)
        count = len(self.problems)
        head = f"site file is invalid ({count} problem{'s' if count != 1 else ''}):"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))


class PluginError(EdgeplaneError):
    """A plugin cannot be used."""


class PluginLoadError(PluginError):
    """A plugin's entry point failed to import, or one of its hooks raised."""

    def __init__(self, plugin: str, distribution: str | None, version: str | None, cause: BaseException):
        self.plugin = plugin
        self.distribution = distribution
        self.version = version
        self.cause = cause
        dist = f"{distribution} {version}" if distribution else "no distribution"
        super().__init__(
            f"plugin {plugin!r} ({dist}) failed to load: {type(cause).__name__}: {cause}. "
            f"Reinstall it (pip install --force-reinstall {distribution or plugin}) or block it with "
            f"EDGEPLANE_DISABLE_PLUGINS={plugin}"
        )


class UnknownTypeError(PluginError):
    """The site names a connector or solution type that no loaded plugin registered."""


class RegistrationError(EdgeplaneError):
    """A plugin registered something twice or registered a malformed class."""


class LifecycleError(EdgeplaneError):
    """An object was used in a state that does not allow it."""


class CommandError(EdgeplaneError):
    """A command (write) was rejected, failed or timed out."""

    def __init__(self, result: CommandResult):
        self.result = result
        super().__init__(str(result))


class SecretError(EdgeplaneError):
    """A secret reference cannot be resolved."""
