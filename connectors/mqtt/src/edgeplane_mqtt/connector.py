"""The MQTT connector: one paho-mqtt 2.x client per device entry.

* ``start()`` builds the client (TLS files are read in a worker thread), connects and waits for
  the first CONNACK; failing that it raises and the host retries it with backoff.
* From then on paho's thread keeps the link: it reconnects with exponential backoff
  (``reconnect_initial`` .. ``reconnect_max``) and this connector subscribes again on every
  CONNACK, so data resumes after a broker restart without restarting the host. The device's
  health says ``degraded: link down`` meanwhile.
* paho's callback only queues the raw payload (:class:`~edgeplane_mqtt.inbox.Inbox`); ``run()``,
  on the event loop, takes messages in chunks of up to 5,000, maps each topic to a point,
  decodes, and publishes the chunk's numbers as one multi-point batch (a point-id column over
  the device's point table, rows in arrival order) plus one single-point batch per text point.
* A QoS 1/2 message is acknowledged to the broker (paho's manual acknowledgement) only after
  the bus has taken its chunk, and the bus returns only once the sync outbox has committed what
  it syncs: a host killed in between gets the message again from the broker (with a persistent
  session), so nothing the broker handed over is lost. A dropped message (bad, unmapped, too big)
  is acknowledged too: it is counted, and a redelivery would only be dropped again.
* Bad messages are dropped, counted in ``edgeplane_dropped_total{part="device:<name>",reason=...}``
  and logged at most every 10 s per reason, naming the topic.

How topics become points, and how one entry holds many physical devices, is described in
:mod:`edgeplane_mqtt.config` and the README.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgeplane import Batch, Connector, HealthState, Quality, RateLimitedLog
from edgeplane.bus import PointTable
from edgeplane.components import Context, PartKey
from edgeplane.config import TlsSettings
from edgeplane.reconnect import ReconnectPolicy
from edgeplane_mqtt.config import MqttConfig, MqttPoint
from edgeplane_mqtt.decoders import DecodeError, Decoder, make_decoder
from edgeplane_mqtt.inbox import Inbox
from edgeplane_mqtt.sparkplug import NAMESPACE
from edgeplane_mqtt.sparkplug.session import SparkplugSession, encode_command, rebirth_request
from edgeplane_mqtt.topics import PointNameTemplate, TopicTemplate

__all__ = ["MqttConnector"]

_CHUNK = 5000  # messages taken from the inbox per round; bounds the time between two awaits
_ROUTE_CACHE = 50_000  # distinct topics whose route is remembered
_TABLE_LIMIT = 10_000  # points in a device's table before it starts afresh (wildcards can mint points forever)
_OVERSIZE = object()
_SPARKPLUG = object()
_NUMERIC_TYPES = {"int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool"}


class _Rows:
    """The readings of one chunk: numbers as the columns of one multi-point batch, text per point."""

    __slots__ = ("ids", "ts", "values", "quality", "texts")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.ts: list[float] = []
        self.values: list[float] = []
        self.quality: list[int] = []
        self.texts: dict[str, tuple[list[float], list[Any], list[int]]] = {}


@dataclass(frozen=True)
class _Mapping:
    template: TopicTemplate
    point: PointNameTemplate
    decoder: Decoder
    allows_text: bool
    qos: int


class MqttConnector(Connector[MqttConfig, MqttPoint]):
    """Subscribes to an MQTT broker and publishes the mapped readings; writes publish commands."""

    def __init__(self, name: str, config: MqttConfig, context: Context):
        super().__init__(name, config, context)
        self.client_id = config.client_id or f"edgeplane-{context.site_id}-{name}"
        self._mappings = self._build_mappings()
        sp = config.sparkplug
        self.sparkplug = SparkplugSession(sp.rebirth, sp.rebirth_interval) if sp else None
        self._sparkplug_point = PointNameTemplate.parse(sp.point, ("group", "node", "device", "metric")) if sp else None
        self._sparkplug_points: dict[str, tuple[str, str, str, str]] = {}  # point -> (group, node, device, metric)
        self._routes: dict[str, Any] = {}
        # the device's point table: ids are handed out as points are first seen; the table object
        # is remade only when points were added, so the bus's routing cache holds between chunks
        self._point_ids: dict[str, int] = {}
        self._table: PointTable | None = None
        self._client: paho.Client | None = None
        self._inbox: Inbox | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link_up = False
        self._link_detail = "not connected yet"
        self._connected: asyncio.Event | None = None
        self._subscribe_mid = -1
        self._refusal: str | None = None  # the broker's reason for refusing the last CONNECT
        self._refused_reported = 0
        self._limited = RateLimitedLog(self.log, interval=10.0)
        self.drops: collections.Counter[str] = collections.Counter()  # reason -> messages/readings dropped
        self.problems: collections.Counter[str] = collections.Counter()  # Sparkplug sequence gaps, stale deaths
        self.received = 0  # messages taken from the inbox
        self.connects = 0  # successful CONNACKs, first one included
        self._part = context.part or PartKey.device(name)  # the metric label of this device
        metrics = context.metrics
        self._dropped_metric = metrics.dropped
        self._errors_metric = metrics.errors
        self._messages_metric = metrics.counter(
            "edgeplane_mqtt_messages_total", "MQTT messages received by a device's connector", ["device"]
        ).labels(device=name)
        self._readings_metric = metrics.counter(
            "edgeplane_mqtt_readings_total", "Readings decoded from MQTT messages", ["device"]
        ).labels(device=name)
        self._rebirth_metric = metrics.counter(
            "edgeplane_mqtt_sparkplug_rebirths_total", "Sparkplug rebirth requests sent", ["device"]
        ).labels(device=name)

    # -- configuration --------------------------------------------------------------------------

    def _build_mappings(self) -> list[_Mapping]:
        cfg = self.config
        mappings: list[_Mapping] = []
        # a point's own topic is the most specific mapping, so it is matched first
        for point_name, spec in cfg.points.items():
            if spec.topic is None:
                continue
            decoder_name = spec.decoder or cfg.decoder
            template = TopicTemplate.parse(spec.topic)
            mappings.append(_Mapping(template, PointNameTemplate(point_name, ()),
                                     make_decoder(decoder_name, cfg.json_options, spec.field),
                                     decoder_name == "text", cfg.qos))
        for mapping in cfg.subscribe:
            decoder_name = mapping.decoder or cfg.decoder
            template = TopicTemplate.parse(mapping.topic)
            mappings.append(_Mapping(template, PointNameTemplate.parse(mapping.point_template(), template.names),
                                     make_decoder(decoder_name, mapping.json_options or cfg.json_options),
                                     decoder_name == "text", mapping.qos if mapping.qos is not None else cfg.qos))
        return mappings

    def subscriptions(self) -> list[tuple[str, int]]:
        """The MQTT topic filters (and QoS) this device subscribes to."""
        subs: dict[str, int] = {}
        for m in self._mappings:
            subs[m.template.filter] = max(subs.get(m.template.filter, 0), m.qos)
        sp = self.config.sparkplug
        if sp is not None:
            subs[f"{NAMESPACE}/{sp.group}/+/{sp.node}/#"] = sp.qos
        return list(subs.items())

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        self._inbox = Inbox(self._loop, cfg.queue_size)
        self._connected = asyncio.Event()
        self._link_up = False
        self._link_detail = "connecting"
        client = await self.context.run_blocking(self._make_client)
        self._client = client
        if cfg.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 0 if cfg.clean_start else int(cfg.session_expiry)
            # messages the broker may have in flight to us, unacknowledged: acknowledgement waits
            # for the outbox, so a small window would throttle a catch-up
            properties.ReceiveMaximum = cfg.receive_maximum
            client.connect_async(cfg.host, cfg.port, int(cfg.keepalive), clean_start=cfg.clean_start, properties=properties)
        else:
            client.connect_async(cfg.host, cfg.port, int(cfg.keepalive))
        client.loop_start()
        try:
            await asyncio.wait_for(self._connected.wait(), cfg.connect_timeout)
        except asyncio.TimeoutError:
            detail = self._link_detail
            await self.stop()
            raise ConnectionError(
                f"device {self.name!r}: no MQTT connection to {cfg.url} within {cfg.connect_timeout:g} s ({detail}); "
                f"check that the broker runs and the url, credentials and TLS settings are right"
            ) from None
        self._update_health()

    def _make_client(self) -> paho.Client:
        """Build and configure the paho client (reads TLS files: call it in a worker thread)."""
        cfg = self.config
        if cfg.protocol == "5":
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=MQTTProtocolVersion.MQTTv5,
                                 manual_ack=True)
        else:
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                 protocol=MQTTProtocolVersion.MQTTv311, clean_session=cfg.clean_start, manual_ack=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        if cfg.scheme_tls:
            client.tls_set_context((cfg.tls or TlsSettings()).client_context(self.context.site_dir))
        # paho runs the backoff on its own thread: it gets the core policy's bounds
        policy = ReconnectPolicy.of(cfg.reconnect_initial, cfg.reconnect_max)
        client.reconnect_delay_set(policy.initial, policy.maximum)  # type: ignore[arg-type]
        client.max_queued_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        return client

    async def run(self) -> None:
        inbox = self._inbox
        assert inbox is not None, "run() before start()"
        coalesce = self.config.coalesce
        while True:
            await inbox.wait()
            if coalesce and len(inbox) < _CHUNK:
                # let a burst gather: one batch per point for many messages costs far less than
                # one per message, for a few milliseconds of latency
                await asyncio.sleep(coalesce)
            while True:
                items = inbox.take(_CHUNK)
                self._report_refused(inbox)
                if not items:
                    break
                await self._process(items)
                if len(inbox):
                    await asyncio.sleep(0)  # a long burst must not starve the rest of the host

    async def stop(self) -> None:
        client, self._client = self._client, None
        self._link_up = False
        if client is None:
            return
        client.on_disconnect = None
        client.on_message = None

        def shut() -> None:
            client.disconnect()
            client.loop_stop()

        await self.context.run_blocking(shut)

    # -- paho's thread ---------------------------------------------------------------------------

    def _call_on_loop(self, func: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(func, *args)
            except RuntimeError:  # the loop closed while the network thread was still running
                pass

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refusal = f"broker refused the connection: {reason_code}"
            self._call_on_loop(self._set_link, False, self._refusal)
            return
        self._refusal = None
        subs = self.subscriptions()
        if not subs:
            self._call_on_loop(self._set_link, True, "")
            return
        # also with a persistent session: the broker may have lost it (restarted without persistence);
        # the link counts as up once the SUBACK is in, so nothing published after start() is missed
        result, mid = client.subscribe(subs)
        self._subscribe_mid = mid
        if result != paho.MQTT_ERR_SUCCESS:
            self._call_on_loop(self._set_link, False, f"subscribing failed: {paho.error_string(result)}")

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [f"{topic} ({code})" for (topic, _), code in zip(self.subscriptions(), reason_codes) if code.is_failure]
        if refused:
            self._call_on_loop(self._subscriptions_refused, refused)
        self._call_on_loop(self._set_link, True, "")

    def _subscriptions_refused(self, refused: list[str]) -> None:
        self._errors_metric.labels(part=self._part, kind="subscribe_refused").inc()
        self.log.error("device %r: the broker refused the subscriptions %s; check the broker's ACL for client %r",
                       self.name, ", ".join(refused), self.client_id)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._call_on_loop(self._set_link, False, "cannot reach the broker")

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        # after a refused CONNACK paho reports a protocol error: the refusal is the news
        self._call_on_loop(self._set_link, False, self._refusal or f"disconnected ({reason_code}); reconnecting")

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        inbox = self._inbox
        if inbox is None:
            return  # stopping: not acknowledged, so a persistent session gets it again
        ack = (message.mid, message.qos) if message.qos else None
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = repr(message._topic)
            item = (topic, _OVERSIZE, -1.0, ack)  # reported as a bad topic on the loop
        else:
            payload = message.payload
            if len(payload) > self.config.max_message_bytes:
                # only the size travels: the loop must not hold megabytes of refused payloads
                item = (topic, _OVERSIZE, float(len(payload)), ack)
            else:
                item = (topic, payload, self.context.clock.now(), ack)
        if not inbox.put(item) and ack is not None:
            client.ack(*ack)  # refused and counted as queue_full: a redelivery would not help

    # -- the event loop ---------------------------------------------------------------------------

    def _set_link(self, up: bool, detail: str) -> None:
        if up:
            self.connects += 1
            if self.connects > 1:
                self.log.info("device %r: MQTT link to %s is back; subscriptions renewed", self.name, self.config.url)
        elif self._link_up:
            self.log.warning("device %r: MQTT link to %s: %s", self.name, self.config.url, detail)
        self._link_up = up
        self._link_detail = detail
        if up and self._connected is not None:
            self._connected.set()
        if self._client is not None:
            self._update_health()

    def _update_health(self) -> None:
        if not self._link_up:
            self.health.set(HealthState.DEGRADED, f"link down: {self._link_detail}")
            return
        dead = self.sparkplug.dead() if self.sparkplug is not None else []
        if dead:
            shown = ", ".join(dead[:5]) + (f" and {len(dead) - 5} more" if len(dead) > 5 else "")
            self.health.set(HealthState.DEGRADED, f"sparkplug: {shown} not alive (death or no birth yet)")
        else:
            self.health.set(HealthState.OK, "")

    def _drop(self, reason: str, topic: str, message: str, count: int = 1) -> None:
        self.drops[reason] += count
        self._dropped_metric.labels(part=self._part, reason=reason).inc(count)
        self._limited.warning(reason, "device %r: dropped a message on topic %r: %s (reason=%s, counted)",
                              self.name, topic, message, reason)

    def _report_refused(self, inbox: Inbox) -> None:
        refused = inbox.refused
        if refused != self._refused_reported:
            self._drop("queue_full", "*", f"{refused - self._refused_reported} messages refused: the hand-over queue "
                       f"of {inbox.maxsize} was full; raise 'queue_size' or slow the publishers", refused - self._refused_reported)
            self._refused_reported = refused

    def _route(self, topic: str) -> Any:
        route = self._routes.get(topic)
        if route is not None:
            return route
        route = False
        for mapping in self._mappings:
            captures = mapping.template.match(topic)
            if captures is not None:
                route = (mapping, mapping.point.render(captures))
                break
        else:
            if self.sparkplug is not None and topic.startswith(NAMESPACE + "/"):
                route = _SPARKPLUG
        if len(self._routes) >= _ROUTE_CACHE:
            self._routes.clear()
        self._routes[topic] = route
        return route

    async def _process(self, items: list[tuple[str, Any, float, tuple[int, int] | None]]) -> None:
        self.received += len(items)
        self._messages_metric.inc(len(items))
        if len(self._point_ids) > _TABLE_LIMIT:
            self._point_ids, self._table = {}, None
        columns = _Rows()
        specs = self.config.points
        for topic, payload, arrived, _ack in items:
            if payload is _OVERSIZE:
                if arrived < 0:
                    self._drop("bad_topic", topic, "the topic is not valid UTF-8")
                else:
                    self._drop("oversize", topic, f"{int(arrived)} bytes is above max_message_bytes "
                               f"({self.config.max_message_bytes}); raise it if such messages are expected")
                continue
            route = self._route(topic)
            if route is _SPARKPLUG:
                self._sparkplug_message(topic, payload, arrived, columns)
                continue
            if route is False:
                self._drop("unmapped_topic", topic, "no mapping matches this topic")
                continue
            mapping, base = route
            try:
                readings = mapping.decoder.decode(payload, arrived)
            except DecodeError as e:
                self._drop(e.reason, topic, str(e))
                continue
            except Exception as e:  # noqa: BLE001 - a decoder bug must cost one message, not the connector
                self._drop("decoder_error", topic, f"{type(e).__name__}: {e}")
                continue
            for suffix, ts, value in readings:
                point = base if not suffix else (f"{base}/{suffix}" if base else suffix)
                spec = specs.get(point)
                if type(value) is str and not mapping.allows_text and (spec is None or spec.type != "string"):
                    self._drop("wrong_type", topic, f"point {point!r}: {value[:40]!r} is text, not a number "
                               f"(set 'type: string' on the point to keep text)")
                    continue
                self._add(columns, point, spec, ts, value, Quality.GOOD)
        await self._publish_columns(columns)
        self._acknowledge(items)

    def _acknowledge(self, items: list[tuple[str, Any, float, tuple[int, int] | None]]) -> None:
        """The bus (and the outbox behind it) has this chunk: the broker may forget these messages."""
        client = self._client
        if client is None:
            return  # stopped meanwhile: unacknowledged, the broker redelivers them
        for *_, ack in items:
            if ack is not None:
                client.ack(*ack)  # queues the PUBACK for paho's thread; never blocks

    def _add(self, rows: _Rows, point: str, spec: MqttPoint | None, ts: float, value: Any, quality: int) -> None:
        if type(value) is float and (spec is None or spec.type != "string"):
            if spec is not None and (spec.scale != 1.0 or spec.offset != 0.0):
                value = value * spec.scale + spec.offset
            point_id = self._point_ids.get(point)
            if point_id is None:
                point_id = self._point_ids[point] = len(self._point_ids)
                self._table = None
            rows.ids.append(point_id)
            rows.ts.append(ts)
            rows.values.append(value)
            rows.quality.append(quality)
            return
        column = rows.texts.get(point)
        if column is None:
            column = rows.texts[point] = ([], [], [])
        column[0].append(ts)
        column[1].append(value)
        column[2].append(quality)

    def _point_table(self) -> PointTable:
        if self._table is None:
            specs = self.config.points
            units = [specs[p].unit if p in specs else None for p in self._point_ids]
            self._table = PointTable([self.topic(p) for p in self._point_ids], units)
        return self._table

    async def _publish_columns(self, rows: _Rows) -> None:
        specs = self.config.points
        batches = []
        if rows.ids:
            batches.append(Batch.rows(self._point_table(), np.array(rows.ids, dtype=np.intp),
                                      np.array(rows.ts, dtype=np.float64), np.array(rows.values, dtype=np.float64),
                                      np.array(rows.quality, dtype=np.uint8)))
        for point, (ts, values, quality) in rows.texts.items():
            value_array = np.empty(len(values), dtype=object)
            value_array[:] = values
            spec = specs.get(point)
            batches.append(Batch(self.topic(point), np.array(ts, dtype=np.float64), value_array,
                                 np.array(quality, dtype=np.uint8), spec.unit if spec else None))
        if batches:
            # one bus call per chunk: one multi-point batch for every number in it
            await self.context.bus.publish_many(batches)
            self._readings_metric.inc(sum(len(b) for b in batches))

    # -- Sparkplug B --------------------------------------------------------------------------------

    def _sparkplug_message(self, topic: str, payload: bytes, arrived: float, columns: _Rows) -> None:
        assert self.sparkplug is not None and self._sparkplug_point is not None
        try:
            outcome = self.sparkplug.handle(topic, payload, arrived)
        except DecodeError as e:
            self._drop(e.reason, topic, str(e))
            return
        except Exception as e:  # noqa: BLE001 - a malformed payload must cost one message only
            self._drop("decoder_error", topic, f"{type(e).__name__}: {e}")
            return
        specs = self.config.points
        render = self._sparkplug_point.render
        for r in outcome.readings:
            point = render({"group": r.group, "node": r.node, "device": r.device, "metric": r.metric})
            self._sparkplug_points[point] = (r.group, r.node, r.device, r.metric)
            spec = specs.get(point)
            value = r.value
            if value is None:
                self._add(columns, point, None, r.ts, math.nan, Quality.BAD)
                continue
            if type(value) is bool or type(value) is int:
                value = float(value)
            self._add(columns, point, spec, r.ts, value, Quality.GOOD)
        for group, node, device, metric in outcome.went_bad:
            point = render({"group": group, "node": node, "device": device, "metric": metric})
            self._add(columns, point, None, arrived, math.nan, Quality.BAD)
        for reason, message in outcome.drops:
            self._drop(reason, topic, message)
        for kind, message in outcome.problems:
            self.problems[kind] += 1
            self._errors_metric.labels(part=self._part, kind=kind).inc()
            self._limited.warning(kind, "device %r: on topic %r: %s", self.name, topic, message)
        if outcome.rebirth is not None:
            self._request_rebirth(*outcome.rebirth, arrived)
        if outcome.liveness_changed:
            self._update_health()

    def _request_rebirth(self, group: str, node: str, now: float) -> None:
        client = self._client
        if client is None or not self._link_up:
            return
        self._rebirth_metric.inc()
        self.log.info("device %r: asking Sparkplug node %s/%s for a rebirth", self.name, group, node)
        # publish() only queues the packet for paho's thread: it does not wait for the network
        client.publish(f"{NAMESPACE}/{group}/NCMD/{node}", rebirth_request(now), qos=0)

    # -- commands ----------------------------------------------------------------------------------

    async def write(self, point: str, value: Any) -> Any:
        """Publish a command for ``point``: JSON/text on its ``command_topic``, or a Sparkplug DCMD/NCMD.

        MQTT has no read-back, so this returns None once the broker has accepted the message
        (QoS 1/2) or it was handed to the socket (QoS 0).
        """
        client = self._client
        if client is None or not self._link_up:
            raise ConnectionError(f"device {self.name!r}: the MQTT link is down ({self._link_detail}); the command was not sent")
        spec = self.config.points[point]
        raw = value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (spec.scale != 1.0 or spec.offset != 0.0):
            raw = (value - spec.offset) / spec.scale
        now = self.context.clock.now()
        if spec.command_topic is not None:
            topic = spec.command_topic
            payload = json.dumps({"value": raw, "ts": now}).encode() if spec.command_format == "json" else str(raw).encode()
        elif point in self._sparkplug_points and self.sparkplug is not None:
            group, node, device, metric = self._sparkplug_points[point]
            if not self.sparkplug.alive(group, node, device):
                raise ConnectionError(f"Sparkplug {'device' if device else 'node'} {group}/{node}{'/' + device if device else ''} "
                                      f"is not alive (death or no birth); the command was not sent")
            datatype = self.sparkplug.datatype(group, node, device, metric)
            kind = "DCMD" if device else "NCMD"
            topic = f"{NAMESPACE}/{group}/{kind}/{node}" + (f"/{device}" if device else "")
            payload = encode_command(metric, raw, datatype, now)
        else:
            raise LookupError(
                f"point {point!r} of device {self.name!r} has no 'command_topic' and no Sparkplug node has born it yet: "
                f"add 'command_topic:' or wait for the node's birth"
            )
        info = client.publish(topic, payload, qos=self.config.qos, retain=spec.retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"device {self.name!r}: publishing to {topic!r} failed: {paho.error_string(info.rc)}")
        if self.config.qos > 0:
            await self.context.run_blocking(info.wait_for_publish, 30.0)
            if not info.is_published():
                raise TimeoutError(f"device {self.name!r}: the broker did not acknowledge the command on {topic!r}")
        return None
