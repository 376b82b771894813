"""Every error edgeplane raises on purpose, as one tree.

Every public exception class of every edgeplane distribution (the core, connectors, uplinks,
solutions, plugins, the cloud end) derives from :class:`EdgeplaneError`, so ``except
EdgeplaneError`` catches whatever edgeplane raises on purpose. Where callers rely on a builtin
base (``except ValueError``, ``except KeyError``, ``except ConnectionError``) the class keeps it
as a second base. ``tests/test_errors.py`` imports every module and fails if a public error is
outside this tree or missing from this drawing.

::

    EdgeplaneError                 anything edgeplane raises on purpose
    ├── SiteError                  a site file (or a desired-config fragment) is invalid
    │                              .problems lists each one: file, line, key path, message, fix
    ├── PluginError                a plugin cannot be used
    │   ├── PluginLoadError        its entry point failed to import or its hooks raised
    │   ├── UnknownTypeError       the site names a connector/solution type nobody registered
    │   └── InstallError           ``edgeplane plugin install`` refused or failed (kit.install)
    ├── TemplateError              the plugin template cannot be found or rendered (kit.template)
    ├── RegistrationError          two plugins registered the same name, or a class is malformed
    ├── LifecycleError             an object was used in the wrong state ("cannot start a
    │                              stopped host")
    ├── CommandError               a write could not be carried out; .result says why
    ├── SecretError                a ${env:...} or ${file:...} reference cannot be resolved
    ├── KeyFileError               an ed25519 key file is unreadable or not such a key (keys;
    │                              also ValueError)
    ├── CommissioningError         the console cannot scan/browse/save (console.commissioning)
    ├── InferenceError             the inference service (drawn whole in inference.errors)
    │   ├── ModelNotFoundError     (also KeyError)
    │   ├── ManifestError
    │   ├── IntegrityError
    │   ├── TrustError
    │   ├── ModelLoadError
    │   │   └── SwapError
    │   ├── InputError             (also ValueError)
    │   ├── QueueFullError
    │   ├── ModelRunError
    │   └── ServiceStoppedError
    ├── EnvelopeError              an uplink envelope cannot be decoded (sync.codec; also ValueError)
    ├── DownlinkRefused            a downlink message was refused; .reason is a metric label
    │                              (sync.signing)
    ├── OutboxFull                 the outbox is at its size limit (sync.outbox)
    ├── ConnectorError             a connector's link, device or decoding failed
    │   ├── NodeNotFound           OPC UA: no node at that address (also LookupError)
    │   ├── ValueMismatch          OPC UA: a value does not fit the node's type (also ValueError)
    │   ├── LinkLost               OPC UA: the session dropped (also ConnectionError)
    │   ├── CertificateRejected    OPC UA: the server's certificate is not trusted
    │   ├── HttpJsonError          http-json: a request failed
    │   │   └── AuthRefused        the endpoint refused the credentials
    │   ├── ModbusError            Modbus: a request failed (edgeplane_modbus.link)
    │   │   ├── LinkDown           the TCP/serial link is down
    │   │   ├── RequestTimeout     no answer in time
    │   │   └── DeviceException    the device answered with a Modbus exception code
    │   ├── SunSpecError           Modbus: no SunSpec map, or a model/point it does not hold
    │   ├── DecodeError            MQTT: a payload does not decode as its mapping says
    │   └── NtcipError             NTCIP: an SNMP request to a signal controller failed (also ConnectionError)
    │       ├── NtcipTimeout       no answer (off-line, wrong address, or a v2c community the agent drops)
    │       ├── NtcipAuthError     SNMPv3 user, keys or protocols refused
    │       ├── NtcipNoSuchObject  the controller has no such object or row
    │       └── NtcipRejected      the controller refused a request (read-only object, value out of range)
    ├── BadInput                   pdm CLI: bad command-line input (also click.ClickException)
    ├── DataError                  solar: a power or weather file cannot be used (also ValueError)
    ├── PlantFileError             solar: a plant description is invalid (also ValueError)
    ├── TimeBaseError              solar: a time base is not understood (also ValueError)
    ├── FleetError                 cloud: a fleet operation (rollout, labels) cannot be done
    ├── PublishError               cloud: the broker did not take a message (also ConnectionError)
    ├── BrokerConfigError          cloud: the NATS stream is not set up as ingest needs (also RuntimeError)
    ├── NotReady                   cloud: a probed process did not report ready in time (also TimeoutError)
    ├── EngineError                cloud test kit: NATS or PostgreSQL did not start (also RuntimeError)
    └── MosquittoError             test kit (edgeplane.testing): Mosquitto did not start (also RuntimeError)

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


class ConnectorError(EdgeplaneError):
    """A connector's link, device or decoding failed; the message names the device and what to check."""
