"""Uplink transports: the base class, and the built-in MQTT one on paho-mqtt 2.x.

A transport is registered by name through the ``edgeplane_register_transports`` hook; the site's
``sync.uplink.transport`` picks one, and ``sync.uplink`` is validated by that transport's
``Config`` (a subclass of :class:`~edgeplane.sync.config.UplinkConfig`), so each transport
declares its own settings. It is made with ``Transport(config, *, client_id, base_dir)`` and then
given the site through :meth:`Transport.attach`.

Every transport sits behind the same outbox: the service takes records from it, hands them over,
and deletes them only once the transport returns (its broker acknowledged them). A transport
with ``native_envelope = True`` (the default, and the fastest) gets the service's compressed
edgeplane envelope through :meth:`Transport.publish`; one that speaks a foreign format (Sparkplug B,
ThingsBoard) sets it False and formats the records itself in :meth:`Transport.send_records`.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar, Iterable, Mapping
from urllib.parse import urlsplit

from edgeplane.reconnect import ReconnectPolicy
from edgeplane.sync.config import UplinkConfig

if TYPE_CHECKING:
    from edgeplane.config import DeviceConfig
    from edgeplane.sync.codec import Record
    from edgeplane.sync.config import SyncConfig

__all__ = ["MqttTransport", "Reading", "Transport", "UplinkSite", "record_readings"]

log = logging.getLogger(__name__)


@dataclass
class UplinkSite:
    """What a transport may know of the site it serves (given by the sync service before connect)."""

    site_id: str
    sync: SyncConfig
    store_dir: Path
    clock: Any
    metrics: Any
    devices: Callable[[], Mapping[str, DeviceConfig]] = field(default=lambda: {})
    """The site's validated devices and their points (type, unit, limits): read it at each birth,
    since a reload may change it."""
    execute_command: Callable[[str, str, Any], Awaitable[Any]] | None = None
    """The guarded command path: returns a :class:`~edgeplane.commands.CommandResult`; None: no writes."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of an outbox record, for transports that send values one by one."""

    topic: str  # the bus topic; an aggregate's statistic is appended: 'inv1/103.W/mean'
    ts: float  # seconds since the epoch (for an aggregate: the window's start)
    value: Any  # float, bool or str; for an event: {"kind", "severity", "source", "data"}
    good: bool  # quality 0 and not NaN
    kind: str  # raw, aggregate or events


def record_readings(record: Record) -> list[Reading]:
    """The readings of one outbox record (raises ``EnvelopeError`` when its block is corrupt)."""
    import math

    from edgeplane.sync.codec import decode_block

    block = decode_block(record.block)
    out: list[Reading] = []
    if block["kind"] == "raw":
        values = block["values"]
        values = values.tolist() if hasattr(values, "tolist") else values
        for ts, value, quality in zip(block["ts"].tolist(), values, block["quality"].tolist()):
            bad = quality != 0 or (isinstance(value, float) and math.isnan(value))
            out.append(Reading(record.stream, ts, value, not bad, "raw"))
    elif block["kind"] == "aggregate":
        for name, column in block["stats"].items():
            topic = f"{record.stream}/{name}"
            out.extend(Reading(topic, ts, v, not math.isnan(v), "aggregate")
                       for ts, v in zip(block["ts"].tolist(), column.tolist()))
    else:
        for event in block["events"]:
            value = {k: event.get(k) for k in ("kind", "severity", "source", "data")}
            out.append(Reading(event.get("topic") or record.stream, float(event.get("ts") or 0.0), value, True, "events"))
    return out


class Transport(abc.ABC):
    """What the sync layer needs from an uplink. Subclass it and register the subclass."""

    Config: ClassVar[type[UplinkConfig]] = UplinkConfig
    """The model ``sync.uplink`` is validated by when this transport is chosen."""
    native_envelope: ClassVar[bool] = True
    """True: the service sends edgeplane envelopes and twin reports through :meth:`publish`;
    False: the service calls :meth:`send_records` and the transport formats them."""

    connected: bool
    """True while records may be sent (a transport may hold it False while the far end is not ready)."""
    last_error: str | None

    def __init__(self, config: UplinkConfig, *, client_id: str, base_dir: Path | None = None):
        self.config = config
        self.client_id = client_id
        self.base_dir = Path(base_dir or ".")
        self.connected = False
        self.last_error = None
        self.site: UplinkSite | None = None

    def attach(self, site: UplinkSite) -> None:
        """Called once by the sync service before :meth:`connect`."""
        self.site = site

    @abc.abstractmethod
    async def connect(self, on_link: Callable[[bool], None]) -> None:
        """Start connecting (and reconnecting, forever); ``on_link(up)`` is called on the loop."""

    @abc.abstractmethod
    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Return once the broker acknowledged the message; ConnectionError if the link dropped first."""

    @abc.abstractmethod
    async def subscribe(self, topic: str, handler: Callable[[str, bytes], None]) -> None:
        """Deliver messages on ``topic`` (a pattern) to ``handler(topic, payload)`` on the loop."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def send_records(self, records: list[Record], now: float) -> int:
        """Send outbox records in this transport's own format; return the bytes sent once every
        message is acknowledged, raise ConnectionError (the records stay in the outbox) otherwise.
        Only called when ``native_envelope`` is False."""
        raise NotImplementedError(f"{type(self).__name__} sends native envelopes; send_records is not used")


class MqttTransport(Transport):
    """MQTT 3.1.1 with QoS 1, a persistent session, TLS / mutual TLS and a bounded in-flight window.

    paho's callbacks run on paho's network thread; they are handed to the event loop with
    ``loop.call_soon_threadsafe``. Subclasses that speak another protocol over MQTT (Sparkplug B,
    ThingsBoard) set ``clean_session`` and add a will or credentials in :meth:`_prepare`.
    """

    clean_session: ClassVar[bool] = False

    def __init__(self, config: UplinkConfig, *, client_id: str, base_dir: Path | None = None):
        super().__init__(config, client_id=client_id, base_dir=base_dir)
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._subscriptions: dict[str, Callable[[str, bytes], None]] = {}
        self._on_link: Callable[[bool], None] | None = None
        self.bytes_sent = 0  # bytes handed to paho by send_records (a foreign format)

    async def connect(self, on_link: Callable[[bool], None]) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._loop = asyncio.get_running_loop()
        self._on_link = on_link
        url = urlsplit(self.config.url)
        tls = url.scheme in ("mqtts", "ssl")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=self.clean_session,
                             protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(self.config.inflight)
        client.max_queued_messages_set(0)
        policy = ReconnectPolicy.of(self.config.reconnect_initial, self.config.reconnect_max)
        # paho doubles from one to the other; it takes float seconds (its annotation says int)
        client.reconnect_delay_set(policy.initial, policy.maximum)  # type: ignore[arg-type]
        if tls:
            client.tls_set_context(self.config.client_context(self.base_dir))
        if self.config.username:
            password = self.config.password.get_secret_value() if self.config.password else None
            client.username_pw_set(self.config.username, password)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_message = self._paho_message
        self._prepare(client)
        self._client = client
        assert url.hostname is not None, "UplinkConfig requires a host in the url"
        client.connect_async(url.hostname, url.port or (8883 if tls else 1883), keepalive=int(self.config.keepalive))
        client.loop_start()

    def _prepare(self, client: Any) -> None:
        """Called with the paho client before it first connects: set a will, credentials..."""

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
            self._forget_in_paho(pending)
            for future in pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(error or "link down"))
        if up != was and self._on_link is not None:
            self._on_link(up)

    def _forget_in_paho(self, mids: Iterable[int]) -> None:
        """Drop messages whose acknowledgement was given up from paho's resend queue.

        paho resends every unacknowledged QoS 1 message on reconnect; the caller of a failed
        publish sends its data again itself (the sync service rewinds its outbox and takes
        envelopes sized to the link as now measured). Left in paho, the old messages go first after
        every reconnect: twice the bytes, and on a link too slow for them within the keepalive the
        session drops again before anything new is acknowledged, forever. paho has no public way to
        drop them; where its internals differ (another version) they are left, which only costs
        duplicates the cloud end removes.
        """
        client = self._client
        lock = getattr(client, "_out_message_mutex", None)
        messages = getattr(client, "_out_messages", None)
        if lock is None or not isinstance(messages, dict):
            return
        with lock:
            for mid in mids:
                messages.pop(mid, None)

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
        await self._hand_to_paho(topic, payload, retain=retain)

    def _hand_to_paho(self, topic: str, data: bytes, *, retain: bool = False) -> asyncio.Future[None]:
        """Publish at QoS 1 now (wire order = call order); the future resolves on the broker's
        acknowledgement. The caller checks that its link is up; ConnectionError if paho refuses."""
        import paho.mqtt.client as mqtt

        info = self._client.publish(topic, data, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish to {self.config.url} failed: {mqtt.error_string(info.rc)}")
        # on_publish for this mid is handed to the loop, so it cannot run before we register
        future = asyncio.get_running_loop().create_future()
        self._pending[info.mid] = future
        return future

    async def send_records(self, records: list[Record], now: float) -> int:
        """For an MQTT transport with a foreign format: each ``(topic, message)`` of :meth:`format`
        goes to :meth:`_publish_formatted` in order; returns once the broker acknowledged them all."""
        before = self.bytes_sent
        futures: list[asyncio.Future[None]] = []
        try:
            for topic, message in self.format(records):
                futures.extend(self._publish_formatted(topic, message))
        except ConnectionError:
            self._abandon(futures)
            raise
        await asyncio.gather(*futures)
        return self.bytes_sent - before

    def format(self, records: list[Record]) -> list[tuple[str, Any]]:
        """The messages that carry ``records`` in this transport's format: ``(topic, message)``."""
        raise NotImplementedError(f"{type(self).__name__} sends native envelopes; it formats no records")

    def _publish_formatted(self, topic: str, message: Any) -> list[asyncio.Future[None]]:
        """Hand one message of :meth:`format` to paho (count its bytes in ``bytes_sent``); the
        futures resolve on the broker's acknowledgements."""
        raise NotImplementedError(f"{type(self).__name__} sends native envelopes; it formats no records")

    @staticmethod
    def _abandon(futures: list[asyncio.Future[None]]) -> None:
        """Acknowledgements whose outcome no longer matters (their records stay in the outbox):
        their exceptions are retrieved so asyncio does not report them as never retrieved."""
        for future in futures:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())

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
