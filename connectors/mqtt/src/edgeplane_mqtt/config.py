"""The site-file models of an MQTT device entry (validated before the host starts).

A device entry owns one MQTT connection (one client id) and the subscriptions that feed its
points. Readings become bus topics ``<device>/<point>``; a wildcard subscription makes point
names from topic levels (see :mod:`edgeplane_mqtt.topics`), so one entry can carry the data of
many physical sensors::

    devices:
      plant:
        connector: mqtt
        url: mqtts://broker.local:8883
        username: edge
        password: ${env:MQTT_PASSWORD}
        tls: {ca: certs/ca.pem, cert: certs/edge.pem, key: certs/edge.key}
        subscribe:
          - topic: "plant/{machine}/{point}"      # -> plant/press3/temp -> bus plant/press3/temp
            decoder: json
            json: {value: v, timestamp: ts}
        sparkplug: {group: factory}               # -> plant/<node>/<device>/<metric>
        points:
          press3/temp: {unit: degC}               # refines a mapped point (unit, scale, limits)
          boiler/setpoint: {topic: boiler/sp, access: rw, command_topic: boiler/sp/set}
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from edgeplane import DeviceConfig, Duration, PointSpec
from edgeplane.config import MqttUrl, TlsSettings
from edgeplane.reconnect import ReconnectPolicy
from edgeplane_mqtt.topics import PointNameTemplate, TopicTemplate

__all__ = ["JsonOptions", "MqttConfig", "MqttPoint", "SparkplugOptions", "TopicMapping"]

DecoderName = Literal["number", "text", "json", "sparkplug"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class JsonOptions(_Model):
    """Where a JSON message keeps its value(s) and time.

    Paths are dotted with list indexes: ``data.temp``, ``values[0].v``. ``value: null`` takes
    the whole document as the value (a bare JSON number).
    """

    value: str | None = Field("value", description="path of the value; null: the whole document")
    fields: dict[str, str] | None = Field(
        None, description="several points from one message: point-name suffix -> path (replaces 'value')"
    )
    timestamp: str | None = Field(None, description="path of the timestamp; absent: the time of arrival")
    timestamp_format: Literal["auto", "s", "ms", "us", "ns", "iso8601"] = Field(
        "auto", description="auto: numbers by magnitude (s/ms/us/ns since the epoch), strings as ISO 8601"
    )
    samples: str | None = Field(
        None, description="path of an array of samples; 'value'/'timestamp' are then paths inside each sample"
    )
    period: Duration | None = Field(
        None, description="for samples that are bare numbers: seconds between them, counted from 'timestamp'"
    )

    @model_validator(mode="after")
    def _valid_paths(self) -> JsonOptions:
        from edgeplane_mqtt.decoders import parse_path  # decoders imports this module

        for path in [self.value, self.timestamp, self.samples, *(self.fields or {}).values()]:
            if path is not None:
                parse_path(path)
        return self


class TopicMapping(_Model):
    """One subscription and how its messages become readings."""

    topic: str = Field(description="topic filter with named levels, e.g. 'plant/{machine}/{point}'")
    point: str | None = Field(
        None, description="point name from the captures, e.g. '{machine}.{point}'; default: the captures joined by '/'"
    )
    decoder: DecoderName | None = Field(None, description="default: the device's 'decoder'")
    json_options: JsonOptions | None = Field(None, alias="json", description="default: the device's 'json'")
    qos: Literal[0, 1, 2] | None = Field(None, description="default: the device's 'qos'")

    @model_validator(mode="after")
    def _check_templates(self) -> TopicMapping:
        template = TopicTemplate.parse(self.topic)
        if self.decoder == "sparkplug":
            raise ValueError("decoder 'sparkplug' is set up with the device's 'sparkplug:' section, not under 'subscribe'")
        if self.point is None and not template.names:
            raise ValueError(
                f"topic {self.topic!r} captures no level, so its point needs a name: add 'point: <name>' "
                f"or name a level, e.g. '.../{{point}}'"
            )
        if self.point is not None:
            PointNameTemplate.parse(self.point, template.names)
        return self

    def point_template(self) -> str:
        return self.point if self.point is not None else "/".join("{" + n + "}" for n in TopicTemplate.parse(self.topic).names)


class SparkplugOptions(_Model):
    """Sparkplug B: subscribe to edge nodes of a group, decode births/data/deaths, ask for rebirths."""

    group: str = Field("+", description="Sparkplug group id; '+' for every group")
    node: str = Field("+", description="edge node id; '+' for every node of the group")
    point: str = Field(
        "{node}/{device}/{metric}",
        description="point name from {group}, {node}, {device}, {metric}; empty parts collapse (node metrics)",
    )
    rebirth: bool = Field(True, description="send NCMD 'Node Control/Rebirth' on a sequence gap or an unknown alias")
    rebirth_interval: Duration = Field(5.0, description="at most one rebirth request per node within this time")
    qos: Literal[0, 1, 2] = 0

    @field_validator("group", "node")
    @classmethod
    def _one_level(cls, value: str) -> str:
        if not value or "/" in value or "#" in value or ("+" in value and value != "+"):
            raise ValueError(f"{value!r} is not one topic level: write a name or '+'")
        return value

    @field_validator("point")
    @classmethod
    def _known_names(cls, value: str) -> str:
        PointNameTemplate.parse(value, ("group", "node", "device", "metric"))
        return value


class MqttPoint(PointSpec):
    """A point of an MQTT device: optionally its own topic, and where writes go."""

    topic: str | None = Field(None, description="topic this point's readings arrive on (instead of a 'subscribe' mapping)")
    decoder: DecoderName | None = Field(None, description="for 'topic': default the device's 'decoder'")
    field: str | None = Field(None, description="for 'topic' with the json decoder: path of the value")
    command_topic: str | None = Field(None, description="topic a write publishes to (not for Sparkplug points: DCMD)")
    command_format: Literal["json", "text"] = Field("json", description='json: {"value": v, "ts": t}; text: the bare value')
    retain: bool = Field(False, description="publish writes with the retain flag")

    @field_validator("field")
    @classmethod
    def _valid_path(cls, value: str | None) -> str | None:
        from edgeplane_mqtt.decoders import parse_path  # decoders imports this module

        if value is not None:
            parse_path(value)
        return value

    @field_validator("topic", "command_topic")
    @classmethod
    def _plain_topic(cls, value: str | None) -> str | None:
        if value is not None and (not value or "{" in value):
            raise ValueError(f"{value!r}: a point's topic is a plain topic; use 'subscribe' for named levels")
        if value is not None and ("+" in value or "#" in value):
            raise ValueError(f"{value!r}: a point's topic cannot hold wildcards; use 'subscribe' with named levels")
        return value


class MqttConfig(DeviceConfig):
    """One MQTT connection and the subscriptions that feed this device's points."""

    # the spelling every connector shares (edgeplane.reconnect)
    renamed_fields: ClassVar[dict[str, str]] = {"reconnect_min": "reconnect_initial"}

    url: MqttUrl = Field(description="mqtt://host:1883 or mqtts://host:8883 (TLS)")
    client_id: str | None = Field(None, description="default: edgeplane-<site>-<device>; fixed, so a persistent session survives restarts")
    protocol: Literal["3.1.1", "5"] = "5"
    clean_start: bool = Field(True, description="false: a persistent session; the broker keeps subscriptions and queues QoS 1/2 messages while away")
    session_expiry: Duration = Field(3600.0, description="MQTT 5, with clean_start false: how long the broker keeps the session")
    keepalive: Duration = 30.0
    connect_timeout: Duration = Field(10.0, description="how long start() waits for the first connection")
    qos: Literal[0, 1, 2] = 1
    username: str | None = None
    password: SecretStr | None = Field(None, description="write it as ${env:NAME} or ${file:PATH}, never inline")
    tls: TlsSettings | None = Field(None, description="TLS settings; mqtts:// without this section uses the system CAs")
    reconnect_initial: Duration = Field(ReconnectPolicy.initial, description="first wait before reconnecting; doubles up to reconnect_max")
    reconnect_max: Duration = Field(ReconnectPolicy.maximum, description="longest wait between reconnect attempts: "
                                    "a broker that returns is reconnected within this long")
    decoder: DecoderName = Field("json", description="default decoder of 'subscribe' mappings and point topics")
    json_options: JsonOptions = Field(default_factory=JsonOptions, alias="json")
    subscribe: list[TopicMapping] = Field(default_factory=list)
    sparkplug: SparkplugOptions | None = None
    max_message_bytes: int = Field(1 << 20, ge=1, description="larger messages are dropped and counted")
    receive_maximum: int = Field(
        1000, ge=1, le=65535, description="MQTT 5: QoS 1/2 messages the broker may send before the first is acknowledged "
        "(a message is acknowledged once the outbox has it); MQTT 3.1.1 brokers set this themselves "
        "(Mosquitto: max_inflight_messages)"
    )
    queue_size: int = Field(100_000, ge=1, description="messages held between the MQTT thread and the event loop; more are dropped and counted")
    coalesce: Duration = Field(
        0.005, description="after the first message of a burst, wait this long so one batch per point carries many readings; 0: none"
    )
    points: dict[str, MqttPoint] = Field(default_factory=dict)

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: Any) -> Any:
        if value in (5, 5.0):
            return "5"
        if value in (3, 311, 3.1, "3", "311", "3.1"):
            raise ValueError(f"protocol {value!r} is ambiguous: write '3.1.1' or '5'")
        return value

    @model_validator(mode="after")
    def _check(self) -> MqttConfig:
        if self.reconnect_initial > self.reconnect_max:
            raise ValueError(f"reconnect_initial ({self.reconnect_initial:g} s) is above reconnect_max ({self.reconnect_max:g} s)")
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username: add 'username:'")
        if not self.subscribe and self.sparkplug is None and not any(p.topic for p in self.points.values()):
            raise ValueError("this device subscribes to nothing: add 'subscribe:', 'sparkplug:' or a point with 'topic:'")
        for name, point in self.points.items():
            if point.writable and point.command_topic is None and self.sparkplug is None:
                raise ValueError(
                    f"point {name!r} is writable but has no 'command_topic': add one (or set up 'sparkplug:' for DCMD writes)"
                )
            if point.writable and point.command_topic is None and point.topic is not None:
                raise ValueError(f"point {name!r} has its own 'topic' and is writable: add 'command_topic:' for its writes")
        return self

    @property
    def scheme_tls(self) -> bool:
        return urlsplit(self.url).scheme in ("mqtts", "ssl") or self.tls is not None

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        return port if port is not None else (8883 if self.scheme_tls else 1883)
