"""Site files: value types, config models, secret references, bounded YAML, validation, schema.

A site file is YAML. It is validated completely before anything starts: the core sections by
the models here, each device by its connector's config and point models, each solution by its
solution's config model (all :class:`ConfigModel`, ``extra="forbid"``). Every problem is reported
at once, with the file, line, key path and a fix (:class:`~edgeplane.errors.SiteError`).

Secrets are written by reference, ``${env:NAME}`` or ``${file:PATH}``, resolved at load time and
redacted from every log line, error and report (:class:`SecretRedactor`).

The modules import one way, each only from those above it in this list (a test keeps it so)::

    units        Duration, Rate, Size and their parsers             (nothing from edgeplane)
    base         ConfigModel, the one base; PointSpec, DeviceConfig, SolutionConfig, Profile
    tls          TlsSettings: CA, certificate and key, verification, and the ssl.SSLContext they make
    redaction    ${env:..}/${file:..} references, SecretRedactor, RedactingFilter
    yamlfile     bounded YAML reading with the line of every key
    sections     the core sections and CoreSite (with inference/sync/console settings)
    site_model   Site, parse_site, load_site: the site validated against the plugins
    schema       site_json_schema

Settings modules elsewhere (``edgeplane.inference.config``, ``edgeplane.sync.config``,
``edgeplane.console.config``, plugins' config modules) import ``units``, ``base`` and ``tls``;
``sections`` imports them. Everything is re-exported here: ``from edgeplane.config import X``.
"""

# Each module imports what it needs from the modules below it, so the order of these
# re-exports does not matter.
from edgeplane.config.base import (
    ConfigModel,
    DeviceConfig,
    PointLimits,
    PointSpec,
    PointType,
    Profile,
    SolutionConfig,
)
from edgeplane.config.redaction import RedactingFilter, SecretRedactor, resolve_secrets
from edgeplane.config.schema import site_json_schema
from edgeplane.config.sections import (
    ClockConfig,
    CoreSite,
    HttpConfig,
    Location,
    LogConfig,
    SimulatorConfig,
    SiteInfo,
    StoreConfig,
    SupervisionConfig,
)
from edgeplane.config.site_model import Site, load_site, parse_site
from edgeplane.config.tls import TlsSettings
from edgeplane.config.units import Duration, MqttUrl, Rate, Size, check_mqtt_url, parse_duration, parse_rate, parse_size
from edgeplane.config.yamlfile import MAX_SITE_FILE_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, LineMap, read_yaml_file

__all__ = [
    "MAX_SITE_FILE_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "ClockConfig",
    "ConfigModel",
    "CoreSite",
    "DeviceConfig",
    "Duration",
    "HttpConfig",
    "LineMap",
    "Location",
    "LogConfig",
    "MqttUrl",
    "PointLimits",
    "PointSpec",
    "PointType",
    "Profile",
    "Rate",
    "RedactingFilter",
    "SecretRedactor",
    "SimulatorConfig",
    "Site",
    "SiteInfo",
    "Size",
    "SolutionConfig",
    "StoreConfig",
    "SupervisionConfig",
    "TlsSettings",
    "check_mqtt_url",
    "load_site",
    "parse_duration",
    "parse_rate",
    "parse_site",
    "parse_size",
    "read_yaml_file",
    "resolve_secrets",
    "site_json_schema",
]
