"""Uplink transports: the interface, and the built-in MQTT one on paho-mqtt 2.x.

A transport is registered by scheme through the ``edgeplane_register_transports`` hook and is
made with ``Transport(config: UplinkConfig, *, client_id: str, base_dir: Path)``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import urlsplit

from edgeplane.sync.settings import UplinkConfig

__all__ = ["MqttTransport", "Transport"]

log = logging.getLogger(__name__)


class Transport(Protocol):
    """What the sync layer needs from an uplink."""

    connected: bool
    last_error: str | None

    async def connect(self, on_link: Callable[[bool], None]) -> None:
        """Start connecting (and reconnecting, forever); ``on_link(up)`` is called on the loop."""

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Return once the broker acknowledged the message; ConnectionError if the link dropped first."""

    async def subscribe(self, topic: str, handler: Callable[[str, bytes], None]) -> None:
        """Deliver messages on ``topic`` (a pattern) to ``handler(topic, payload)`` on the loop."""

    async def close(self) -> None: ...


class MqttTransport:
    """MQTT 3.1.1 with QoS 1, a persistent session, TLS / mutual TLS and a bounded in-flight window.

    paho's callbacks run on paho's network thread; they are handed to the event loop with
    ``loop.call_soon_threadsafe``.
    """

    def __init__(self, config: UplinkConfig, *, client_id: str, base_dir: Path | None = None):
        self.config = config
        self.client_id = client_id
        self.base_dir = Path(base_dir or ".")
        self.connected = False
        self.last_error: str | None = None
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._subscriptions: dict[str, Callable[[str, bytes], None]] = {}
        self._on_link: Callable[[bool], None] | None = None

    def _path(self, value: str | None) -> str | None:
        return None if value is None else str((self.base_dir / value).expanduser())

    async def connect(self, on_link: Callable[[bool], None]) -> None:
        import paho.mqtt.client as mqtt

        self._loop = asyncio.get_running_loop()
        self._on_link = on_link
        url = urlsplit(self.config.url)
        tls = url.scheme in ("mqtts", "ssl")
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
                             protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(self.config.inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(0.2, 5)
        if tls:
            client.tls_set(ca_certs=self._path(self.config.ca), certfile=self._path(self.config.cert),
                           keyfile=self._path(self.config.key), cert_reqs=ssl.CERT_REQUIRED)
        if self.config.username:
            password = self.config.password.get_secret_value() if self.config.password else None
            client.username_pw_set(self.config.username, password)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_message = self._paho_message
        self._client = client
        client.connect_async(url.hostname, url.port or (8883 if tls else 1883), keepalive=int(self.config.keepalive))
        client.loop_start()

    # paho thread -> loop
    def _paho_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._call(self._set_link, False, f"broker refused the connection: {reason_code}")
            return
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)
        self._call(self._set_link, True, None)

    def _paho_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._call(self._set_link, False, f"disconnected: {reason_code}")

    def _paho_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._call(self._acked, mid, str(reason_code) if reason_code.is_failure else None)

    def _paho_message(self, client: Any, userdata: Any, message: Any) -> None:
        self._call(self._deliver, message.topic, bytes(message.payload))

    def _call(self, func: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(func, *args)
            except RuntimeError:
                pass  # the loop closed while paho was still delivering

    # on the loop
    def _set_link(self, up: bool, error: str | None) -> None:
        if error:
            self.last_error = error
        was = self.connected
        self.connected = up
        if not up:
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(error or "link down"))
        if up != was and self._on_link is not None:
            self._on_link(up)

    def _acked(self, mid: int, error: str | None) -> None:
        future = self._pending.pop(mid, None)
        if future is not None and not future.done():
            if error:
                future.set_exception(ConnectionError(f"broker refused message: {error}"))
            else:
                future.set_result(None)

    def _deliver(self, topic: str, payload: bytes) -> None:
        import paho.mqtt.client as mqtt

        for pattern, handler in self._subscriptions.items():
            if mqtt.topic_matches_sub(pattern, topic):
                try:
                    handler(topic, payload)
                except Exception:  # noqa: BLE001 - a bad handler must not kill paho's delivery
                    log.exception("downlink handler for %s failed", topic)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if self._client is None or not self.connected:
            raise ConnectionError(f"uplink {self.config.url} is not connected")
        import paho.mqtt.client as mqtt

        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish to {self.config.url} failed: {mqtt.error_string(info.rc)}")
        # on_publish for this mid is handed to the loop, so it cannot run before we register
        future = asyncio.get_running_loop().create_future()
        self._pending[info.mid] = future
        await future

    async def subscribe(self, topic: str, handler: Callable[[str, bytes], None]) -> None:
        self._subscriptions[topic] = handler
        if self._client is not None and self.connected:
            self._client.subscribe(topic, qos=1)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            await asyncio.get_running_loop().run_in_executor(None, client.loop_stop)
        self._set_link(False, None)
