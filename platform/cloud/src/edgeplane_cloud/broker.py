"""The broker side of the scale-out back end: JetStream stream and consumer, and an MQTT publisher.

Sites publish MQTT 3.1.1 QoS 1 to any node's MQTT listener, exactly as to Mosquitto. NATS maps
the MQTT topic ``edgeplane/<site>/up/data`` to the subject ``edgeplane.<site>.up.data``; the
stream :data:`UPLINK_STREAM` captures ``<prefix>.*.up.>`` with three replicas (work-queue
retention: a message leaves the stream when an ingest worker acknowledges it). Every ingest
worker binds to the one durable pull consumer :data:`INGEST_CONSUMER`; ``max_ack_pending``
bounds what is in flight across all workers, ``ack_wait`` is how soon a dead worker's
messages go to the others.

Downlink (desired config, models, commands) goes out through the same cluster over MQTT,
retained, by :class:`MqttPublisher`.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["INGEST_CONSUMER", "UPLINK_STREAM", "MqttPublisher", "PublishError", "StreamSettings", "ensure_stream",
           "mqtt_client"]

UPLINK_STREAM = "EDGEPLANE_UP"
INGEST_CONSUMER = "ingest"


class PublishError(ConnectionError):
    """The broker did not acknowledge a downlink message."""


@dataclass(frozen=True)
class StreamSettings:
    """What an operator sizes: replicas, how long unacknowledged data may wait, what is in flight."""

    prefix: str = "edgeplane"
    replicas: int = 3
    # the backlog the cluster may hold while the database is away; -1: up to the servers' JetStream
    # storage (max_file_store), which must then leave room for the MQTT session streams
    max_bytes: int = -1
    max_age_s: float = 7 * 86400
    ack_wait_s: float = 30.0  # a dead worker's messages are redelivered after this
    max_ack_pending: int = 2048  # messages in flight across all workers
    max_deliver: int = -1  # never give up: what cannot be stored goes to dead letters, acknowledged


async def ensure_stream(js: Any, settings: StreamSettings = StreamSettings()) -> None:
    """Create (or update) the uplink stream and the ingest consumer; safe to call from every worker."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    config = StreamConfig(name=UPLINK_STREAM, subjects=[f"{settings.prefix}.*.up.>"], retention=RetentionPolicy.WORK_QUEUE,
                          storage=StorageType.FILE, num_replicas=settings.replicas, max_bytes=settings.max_bytes,
                          max_age=settings.max_age_s, duplicate_window=120.0)
    try:
        await js.stream_info(UPLINK_STREAM)
        await js.update_stream(config)
    except NotFoundError:
        await js.add_stream(config)
    await js.add_consumer(UPLINK_STREAM, ConsumerConfig(
        durable_name=INGEST_CONSUMER, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_s, max_ack_pending=settings.max_ack_pending, max_deliver=settings.max_deliver,
        max_waiting=512))


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
        client.tls_set(ca_certs=ca, certfile=cert, keyfile=key, cert_reqs=ssl.CERT_REQUIRED)
    if username:
        client.username_pw_set(username, password)
    client.reconnect_delay_set(0.2, 5)
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
