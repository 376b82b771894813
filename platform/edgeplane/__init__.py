"""edgeplane: an edge host for vertical industrial applications.

What a plugin author needs is importable from here::

    from edgeplane import hookimpl, Connector, DeviceConfig, PointSpec, Solution, SolutionConfig

The hooks are documented in :mod:`edgeplane.hookspecs`; errors in :mod:`edgeplane.errors`.
"""

from edgeplane.bus import Batch, Bus, Event, Overflow, Quality, Subscription, topic_matches
from edgeplane.clock import Clock, SimulatedClock, WallClock
from edgeplane.commands import CommandGuard, CommandResult, CommandStatus
from edgeplane.components import Connector, Context, Health, HealthState, RateLimitedLog, Solution
from edgeplane.config import (
    DeviceConfig,
    Duration,
    PointLimits,
    PointSpec,
    Profile,
    Rate,
    Site,
    SolutionConfig,
    load_site,
    parse_site,
)
from edgeplane.errors import (
    CommandError,
    ConnectorError,
    EdgeplaneError,
    LifecycleError,
    PluginError,
    PluginLoadError,
    RegistrationError,
    SecretError,
    SiteError,
    SiteProblem,
    UnknownTypeError,
)
from edgeplane.hookspecs import hookimpl
from edgeplane.host import Host, HostState
from edgeplane.plugins import Plugins, ReferenceSite, Registry

__all__ = [
    "Batch",
    "Bus",
    "Clock",
    "CommandError",
    "CommandGuard",
    "CommandResult",
    "CommandStatus",
    "Connector",
    "ConnectorError",
    "Context",
    "DeviceConfig",
    "Duration",
    "EdgeplaneError",
    "Event",
    "Health",
    "HealthState",
    "Host",
    "HostState",
    "LifecycleError",
    "Overflow",
    "PluginError",
    "PluginLoadError",
    "Plugins",
    "PointLimits",
    "PointSpec",
    "Profile",
    "Quality",
    "Rate",
    "RateLimitedLog",
    "ReferenceSite",
    "RegistrationError",
    "Registry",
    "SecretError",
    "SimulatedClock",
    "Site",
    "SiteError",
    "SiteProblem",
    "Solution",
    "SolutionConfig",
    "Subscription",
    "UnknownTypeError",
    "WallClock",
    "hookimpl",
    "load_site",
    "parse_site",
    "topic_matches",
]
