"""The ``sync:`` section of a site file, as pydantic models (``extra="forbid"``).

Example::

    sync:
      uplink: {transport: mqtt, url: mqtts://cloud.example:8883, cert: site.pem, key: site.key, ca: ca.pem,
               inflight: 16, backlog_rate: 20000/s}
      policy:
        - {topics: "alerts/#", mode: events, priority: high, ttl: 30d}
        - {topics: "*/ac_power", mode: aggregate, window: 5min, stats: [mean, min, max], priority: normal, ttl: 7d}
        - {topics: "inv1/103.W", mode: exception, deadband: 50, max_interval: 15min}   # one point
        - {topics: "inv*/#", mode: exception, deadband: 2%, max_interval: 1h}          # a pattern
      quota: 512MB
      compression: zstd
      trust: {keys: [keys/cloud.pub]}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edgeplane.bus import topic_matches
from edgeplane.config.base import ConfigModel
from edgeplane.config.tls import TlsSettings
from edgeplane.config.units import Duration, MqttUrl, Rate, Size, parse_size

__all__ = ["PRIORITIES", "Deadband", "PolicyRule", "SyncConfig", "TrustConfig", "UplinkConfig", "parse_size"]

PRIORITIES: dict[str, int] = {"high": 0, "normal": 1, "low": 2}
StatName = Literal["mean", "min", "max", "count", "sum", "last", "first", "std"]
DEFAULT_STATS: tuple[StatName, ...] = ("mean", "min", "max", "count")
"""Priority class name -> drain rank (0 drains first)."""

STATS = ("mean", "min", "max", "count", "sum", "last", "first", "std")


class Deadband(NamedTuple):
    """A report-by-exception threshold: ``amount`` in the point's unit, or a percent of the last value sent."""

    amount: float
    percent: bool

    def threshold(self, last_sent: float) -> float:
        return abs(last_sent) * self.amount / 100.0 if self.percent else self.amount


def parse_deadband(value: Any) -> Deadband:
    """``0.5`` (absolute, in the point's unit) or ``'2%'`` (of the last value sent)."""
    if isinstance(value, Deadband):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return Deadband(float(value[0]), bool(value[1]))
    text = value.strip() if isinstance(value, str) else value
    percent = isinstance(text, str) and text.endswith("%")
    try:
        amount = float(text[:-1] if percent else text)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a deadband: write an amount in the point's unit (0.5) or a percent ('2%')") from None
    if not amount >= 0 or amount == float("inf"):
        raise ValueError(f"a deadband is a finite amount >= 0 (got {value!r})")
    return Deadband(amount, percent)


Deadband_ = Annotated[Deadband, BeforeValidator(parse_deadband),
                      PlainSerializer(lambda d: f"{d.amount:g}%" if d.percent else d.amount, return_type=Any)]


class UplinkConfig(TlsSettings):
    """How the site reaches the cloud broker.

    Its TLS fields are the core's :class:`~edgeplane.config.TlsSettings`, written inline as site
    files always have (``ca``, ``cert``, ``key``; ``key_password``, ``verify_hostname``): they
    apply to an ``mqtts://`` URL, and :meth:`client_context` builds the link's context.
    """

    transport: str = Field("mqtt", description="uplink transport plugin (edgeplane_register_transports)")
    url: MqttUrl = Field(description="mqtt://host:port or mqtts://host:port (TLS)")
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = Field(None, description="MQTT client id; default edgeplane-<site id>")
    topic_prefix: str = Field("edgeplane", description="topic tree root: <prefix>/<site>/up/..., <prefix>/<site>/down/...")
    inflight: int = Field(16, ge=1, le=1000, description="envelopes sent and not yet acknowledged by the broker")
    # le: sync.codec.MAX_ENVELOPE_BYTES, what the cloud end accepts (tests/sync/test_pacing.py holds them equal)
    max_envelope_bytes: int = Field(256_000, ge=1_000, le=16_000_000,
                                    description="largest uncompressed envelope body (the cloud end refuses over 16 MB); "
                                                "on a slow link the site sends smaller ones, paced to the link")
    backlog_rate: Rate | None = Field(
        None, description="readings per second for data queued before the link came back; live data is not limited"
    )
    keepalive: Duration = 30.0
    reconnect_initial: Duration = Field(0.2, gt=0, description="first wait before reconnecting; doubles up to reconnect_max")
    reconnect_max: Duration = Field(5.0, gt=0, description="longest wait between reconnect attempts")


class PolicyRule(ConfigModel):
    """What goes up for the topics a pattern matches. The first matching rule wins."""

    topics: str = Field(description="bus topic pattern, e.g. 'alerts/#', '*/ac_power', 'inv*/#'")
    mode: Literal["raw", "aggregate", "events", "exception"] = "raw"
    window: Duration | None = Field(None, description="aggregation window (mode aggregate)")
    deadband: Deadband_ | None = Field(
        None, description="mode exception: send a reading when it differs from the last one sent by more than this: "
        "an absolute amount (0.5) or a percent of the last value sent ('2%'); 0 sends every change"
    )
    max_interval: Duration | None = Field(
        None, description="mode exception: send a reading at least this often even if it did not change (heartbeat)"
    )
    stats: list[StatName] = Field(default_factory=lambda: list(DEFAULT_STATS))
    priority: Literal["high", "normal", "low"] = "normal"
    ttl: Duration = Field(7 * 86400.0, description="how long data waits for the link before it expires")

    @field_validator("topics")
    @classmethod
    def _valid_pattern(cls, value: str) -> str:
        topic_matches(value, "x")  # raises ValueError with a clear message on a bad pattern
        return value

    @model_validator(mode="after")
    def _window_for_aggregates(self) -> PolicyRule:
        if self.mode == "aggregate" and not self.window:
            raise ValueError(f"policy for {self.topics!r}: mode 'aggregate' needs a 'window', e.g. window: 5min")
        if self.mode != "aggregate" and self.window is not None:
            raise ValueError(f"policy for {self.topics!r}: 'window' only applies to mode 'aggregate'")
        if self.mode == "exception" and self.deadband is None:
            raise ValueError(f"policy for {self.topics!r}: mode 'exception' needs a 'deadband', e.g. deadband: 0.5 "
                             f"or deadband: 2% (0 sends every change)")
        if self.mode != "exception" and (self.deadband is not None or self.max_interval is not None):
            raise ValueError(f"policy for {self.topics!r}: 'deadband' and 'max_interval' only apply to mode 'exception'")
        return self

    @property
    def rank(self) -> int:
        return PRIORITIES[self.priority]


class TrustConfig(ConfigModel):
    keys: list[str] = Field(default_factory=list, description="ed25519 public key files (PEM or raw 32-byte hex) of the cloud")


class SyncConfig(ConfigModel):
    """The ``sync:`` section: uplink, per-topic policy, disk quota, compression, trusted keys."""

    uplink: UplinkConfig
    policy: list[PolicyRule] = Field(default_factory=list)
    quota: Size = Field(256_000_000, description="largest outbox payload on disk, e.g. '512MB'")
    compression: Literal["zstd", "lz4", "none"] = "zstd"
    durability: Literal["power", "process"] = Field(
        "power", description="power: fsync each commit (survives power loss); process: survives a crash, not power loss"
    )
    trust: TrustConfig = Field(default_factory=TrustConfig)
    report_interval: Duration = Field(60.0, description="how often the reported state (twin) is published")

    @field_validator("uplink", mode="before")
    @classmethod
    def _validated_by_its_transport(cls, value: Any, info: ValidationInfo) -> Any:
        """``sync.uplink`` is validated by the ``Config`` of the transport it names, when the caller
        passes the registered transports as validation context (``parse_site`` does)."""
        transports = (info.context or {}).get("transports")
        if not isinstance(value, dict) or transports is None:
            return value
        name = value.get("transport", "mqtt")
        transport = transports.get(name)
        if transport is None:
            raise ValueError(f"no uplink transport {name!r} is installed (installed: {', '.join(sorted(transports))}); "
                             f"install the plugin that provides it, e.g. pip install edgeplane-{name}")
        model = getattr(transport, "Config", UplinkConfig)
        return model.model_validate(value, context=info.context)

    def rule_for(self, topic: str) -> PolicyRule | None:
        for rule in self.policy:
            if topic_matches(rule.topics, topic):
                return rule
        return None
