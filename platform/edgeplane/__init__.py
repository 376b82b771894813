"""edgeplane: an edge host for vertical industrial applications.

What a plugin author needs is importable from here::

    from edgeplane import hookimpl, Connector, DeviceConfig, PointSpec, Solution, SolutionConfig

The hooks are documented in :mod:`edgeplane.hookspecs`; errors in :mod:`edgeplane.errors`.

The plugin API
--------------
A plugin (connectors/*, solutions/*, uplinks/*, plugins/*, the cloud end) imports only from the
modules in :data:`PLUGIN_API`, and no name with a leading underscore from them; a test checks
it (tests/test_layout.py). Everything else in the core may change without notice.

* ``edgeplane``: the everyday types (this module's ``__all__``);
* ``edgeplane.components``, ``edgeplane.bus``, ``edgeplane.clock``, ``edgeplane.config``,
  ``edgeplane.errors``: what connectors and solutions are built from (``Connector``,
  ``Solution``, ``Context``, ``PartKey``; ``Batch``, ``Event``, ``PointTable``; config models and
  value types such as ``Duration`` and ``TlsSettings``; the exception tree);
* ``edgeplane.hookspecs`` and ``edgeplane.plugins``: the hooks, ``hookimpl``, and the registrar
  types a hook implementation receives;
* ``edgeplane.reconnect`` (``ReconnectPolicy``), ``edgeplane.ratelimit`` (``TokenBucket``),
  ``edgeplane.metrics`` (``Metrics``): what every connector that talks to a device reuses
  rather than writes again;
* ``edgeplane.host``: ``Host``, for a solution's demo command that runs a site in-process;
  ``edgeplane.cli``: ``main``, for tests that run the ``edgeplane`` command;
* ``edgeplane.inference``: the inference client, model registry, manifests and their errors; and
  three of its modules that training and fleet commands need beyond the client:
  ``edgeplane.inference.manifest`` (``read_onnx_signature``: a training command writes the
  manifest the service checks), ``edgeplane.inference.registry`` (``version_key``: the order
  of model versions in a models folder), ``edgeplane.inference.trust`` (signing manifests);
* ``edgeplane.sync``: uplink transports (``Transport``, ``MqttTransport``, ``UplinkConfig``,
  ``UplinkSite``, ``record_readings``), envelopes and downlink signatures; and the modules the
  cloud end shares with the site because they are the wire format: ``edgeplane.sync.codec``
  (blocks and envelopes), ``edgeplane.sync.signing`` (downlink keys), ``edgeplane.sync.downlink``
  (which part of a site a cloud overlay may change);
* ``edgeplane.console`` (panels a solution contributes) and ``edgeplane.console.commissioning``
  (the ``Scanner`` a connector registers);
* ``edgeplane.provisioning.certs``, ``.site_cli`` and ``.render``: the cloud end validates site
  files, finds the operator's CA and builds container images exactly as ``edgeplane site`` does;
* ``edgeplane.testing`` and its modules: the test kit (fixtures, ``Mosquitto``,
  ``MemoryTransport``, ``free_port``, ``run_host``).

Core modules keep their names (no leading underscores): the list above, not the file names, says
what is public, so no plugin has to change its imports for the sake of it.
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

PLUGIN_API: frozenset[str] = frozenset({
    "edgeplane",
    "edgeplane.bus",
    "edgeplane.cli",
    "edgeplane.clock",
    "edgeplane.components",
    "edgeplane.config",
    "edgeplane.console",
    "edgeplane.console.commissioning",
    "edgeplane.errors",
    "edgeplane.hookspecs",
    "edgeplane.host",
    "edgeplane.inference",
    "edgeplane.inference.manifest",
    "edgeplane.inference.registry",
    "edgeplane.inference.trust",
    "edgeplane.metrics",
    "edgeplane.plugins",
    "edgeplane.provisioning.certs",
    "edgeplane.provisioning.render",
    "edgeplane.provisioning.site_cli",
    "edgeplane.ratelimit",
    "edgeplane.reconnect",
    "edgeplane.sync",
    "edgeplane.sync.codec",
    "edgeplane.sync.downlink",
    "edgeplane.sync.signing",
    "edgeplane.testing",
    "edgeplane.testing.fixtures",
    "edgeplane.testing.host",
    "edgeplane.testing.mosquitto",
    "edgeplane.testing.ports",
    "edgeplane.testing.transport",
})
"""The core modules a plugin may import from (see the module docstring); the rest is internal."""

__all__ = [
    "PLUGIN_API",
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
