"""The broker side of the scale-out back end: the uplink stream and its consumer, and an MQTT publisher.

Sites publish MQTT 3.1.1 QoS 1 to any node's MQTT listener, exactly as to Mosquitto. NATS maps
the MQTT topic ``edgeplane/<site>/up/data`` to the subject ``edgeplane.<site>.up.data``. For a QoS 1
message, nats-server (2.9.10 as Debian packages it) does two things: a plain publish on that
subject (no acknowledgement: a stream that captures it and has no leader at that moment never
gets it), then a JetStream store request into its own stream :data:`UPLINK_STREAM`
(``$MQTT_msgs``, subject ``$MQTT.msgs.edgeplane.<site>.up.data``), and it sends the site its PUBACK
only once that store succeeded. So the workers read ``$MQTT_msgs`` itself: a message the site saw
acknowledged is already in a replicated stream, and no copy step between the MQTT layer and the
workers can drop it. ``mqtt { stream_replicas: 3 }`` on every node gives the stream its three
replicas; :func:`ensure_stream` refuses a stream with fewer than the settings ask for.

``$MQTT_msgs`` keeps a message while a consumer with interest in it has not acknowledged it
(interest retention). Every ingest worker binds to the one durable pull consumer
:data:`INGEST_CONSUMER`, filtered on ``$MQTT.msgs.<prefix>.*.up.>``; ``max_ack_pending`` bounds what
is in flight across all workers, ``ack_wait`` is how soon a dead worker's messages go to the
others. The consumer must exist before sites publish: a message nothing has interest in is not
kept (the first worker creates it; :meth:`edgeplane_cloud.testing.NatsCluster.wait_consumer`).

Downlink (desired config, models, commands) goes out through the same cluster over MQTT,
retained, by :class:`MqttPublisher`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from edgeplane.config import TlsSettings
from edgeplane.errors import EdgeplaneError
from edgeplane.reconnect import ReconnectPolicy

__all__ = ["INGEST_CONSUMER", "RECONNECT", "UPLINK_STREAM", "UPLINK_SUBJECT_PREFIX", "BrokerConfigError", "MqttPublisher",
           "PublishError", "StreamSettings", "ensure_stream", "mqtt_client", "stream_leader"]

RECONNECT = ReconnectPolicy(initial=0.2, maximum=5.0)
"""How the cloud's MQTT clients retry a lost broker: the sites' uplink default (``sync.uplink.reconnect_*``)."""
UPLINK_STREAM = "$MQTT_msgs"  # nats-server's own stream of QoS 1 MQTT messages
UPLINK_SUBJECT_PREFIX = "$MQTT.msgs."  # what it puts before the NATS subject of the MQTT topic
INGEST_CONSUMER = "ingest"


class BrokerConfigError(EdgeplaneError, RuntimeError):
    """The NATS cluster is configured in a way that could lose acknowledged uplinks; the message says the fix."""


class PublishError(EdgeplaneError, ConnectionError):
    """The broker did not acknowledge a downlink message."""


@dataclass(frozen=True)
class StreamSettings:
    """What an operator sizes: replicas, what is in flight, how soon a dead worker's messages move on.

    The stream's storage limit is the servers' JetStream ``max_file_store``: ``$MQTT_msgs`` holds
    the backlog while the database is away, next to NATS's MQTT session streams.
    """

    prefix: str = "edgeplane"
    replicas: int = 3  # what ``mqtt { stream_replicas }`` must give $MQTT_msgs
    ack_wait_s: float = 30.0  # a dead worker's messages are redelivered after this
    max_ack_pending: int = 2048  # messages in flight across all workers
    max_deliver: int = -1  # never give up: what cannot be stored goes to dead letters, acknowledged

    @property
    def filter_subject(self) -> str:
        return f"{UPLINK_SUBJECT_PREFIX}{self.prefix}.*.up.>"


async def ensure_stream(js: Any, settings: StreamSettings = StreamSettings()) -> None:
    """Check ``$MQTT_msgs`` (create it as nats-server would if no MQTT client came yet) and create the
    ingest consumer; safe to call from every worker. Raises :class:`BrokerConfigError` when the
    stream has fewer replicas than ``settings.replicas``."""
    from nats.js.api import (AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType,
                             StreamConfig)
    from nats.js.errors import BadRequestError, NotFoundError

    try:
        info = await js.stream_info(UPLINK_STREAM)
    except NotFoundError:
        # the same configuration nats-server 2.9's MQTT layer gives it (it accepts an existing one)
        config = StreamConfig(name=UPLINK_STREAM, subjects=[f"{UPLINK_SUBJECT_PREFIX}>"], storage=StorageType.FILE,
                              retention=RetentionPolicy.INTEREST, num_replicas=settings.replicas)
        try:
            info = await js.add_stream(config)
        except BadRequestError:  # created meanwhile by the MQTT layer or another worker
            info = await js.stream_info(UPLINK_STREAM)
    replicas = info.config.num_replicas or 1
    if replicas < settings.replicas:
        raise BrokerConfigError(
            f"NATS stream {UPLINK_STREAM} has {replicas} replica(s), the ingest settings ask for {settings.replicas}: "
            f"set `mqtt {{ stream_replicas: {settings.replicas} }}` on every nats-server node and recreate the "
            f"stream (nats stream edit {UPLINK_STREAM} --replicas {settings.replicas}), or pass --replicas {replicas} "
            "to accept losing acknowledged uplinks with a node")
    await js.add_consumer(UPLINK_STREAM, ConsumerConfig(
        durable_name=INGEST_CONSUMER, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
        filter_subject=settings.filter_subject, ack_wait=settings.ack_wait_s, max_ack_pending=settings.max_ack_pending,
        max_deliver=settings.max_deliver, max_waiting=512))


async def stream_leader(js: Any, stream: str = UPLINK_STREAM) -> str | None:
    """The server name of ``stream``'s leader now, as the JetStream API reports it (None: no leader)."""
    info = await js.stream_info(stream)
    return info.cluster.leader if info.cluster else None


def mqtt_client(url: str, client_id: str, *, clean: bool, ca: str | None = None, cert: str | None = None,
                key: str | None = None, username: str | None = None, password: str | None = None) -> tuple[Any, str, int]:
    """A paho 2.x MQTT 3.1.1 client for ``url`` (mqtt:// or mqtts://), not yet connected; with host and port."""
    import paho.mqtt.client as mqtt

    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "ssl", "tcp"):
        raise ValueError(f"broker URL {url!r}: use mqtt://host:port or mqtts://host:port")
    tls = parts.scheme in ("mqtts", "ssl")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, protocol=mqtt.MQTTv311)
    if tls:
        client.tls_set_context(TlsSettings(ca=ca, cert=cert, key=key).client_context())
    if username:
        client.username_pw_set(username, password)
    client.reconnect_delay_set(RECONNECT.initial, RECONNECT.maximum)  # type: ignore[arg-type]  # paho takes float seconds
    return client, parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883)


class MqttPublisher:
    """One persistent MQTT connection for downlink messages: ``publish`` returns once the broker acknowledged."""

    def __init__(self, url: str, client_id: str = "edgeplane-fleet", *, inflight: int = 200, **tls: Any):
        self.url = url
        self.client, host, port = mqtt_client(url, client_id, clean=True, **tls)
        self.client.max_inflight_messages_set(inflight)
        self._connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: None if rc.is_failure else self._connected.set()
        self.client.on_disconnect = lambda *a: self._connected.clear()
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()

    def publish_many(self, messages: list[tuple[str, bytes, bool]], timeout: float = 30.0) -> None:
        """Publish ``(topic, payload, retain)`` at QoS 1; raises :class:`PublishError` unless all were acknowledged."""
        if not self._connected.wait(timeout):
            raise PublishError(f"no connection to {self.url} within {timeout} s: is the broker up?")
        infos = [self.client.publish(topic, payload, qos=1, retain=retain) for topic, payload, retain in messages]
        for info in infos:
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise PublishError(f"broker {self.url} did not acknowledge a downlink message within {timeout} s")

    def publish(self, topic: str, payload: bytes, *, retain: bool, timeout: float = 30.0) -> None:
        self.publish_many([(topic, payload, retain)], timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> "MqttPublisher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
