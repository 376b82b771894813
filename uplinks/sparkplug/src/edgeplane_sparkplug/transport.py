"""The Sparkplug B edge node uplink: this site is one edge node, each device a Sparkplug device.

Session (Sparkplug B 3.0):

* MQTT clean session; the will is ``NDEATH`` carrying ``bdSeq``, which goes up by one for every
  new connection (kept in the store folder, so a restart does not reuse one);
* after connecting (and, with ``primary_host``, once that host's ``spBv1.0/STATE/<host>`` says
  ``online``): ``NBIRTH`` (``seq`` 0, ``bdSeq``, ``Node Control/Rebirth``, node properties) and one
  ``DBIRTH`` per device, every metric with an alias and the Sparkplug type of its point (from the
  device profile), and its unit, limits and description as properties;
* then outbox records go up as ``DDATA`` (``NDATA`` for topics without a device) addressed by alias;
  ``seq`` counts every message 0..255. What was stored before the link came back is marked
  ``is_historical``;
* the primary host going offline stops sending (the outbox keeps storing); coming back online
  makes a new birth, then the backlog goes;
* ``NCMD Node Control/Rebirth`` republishes the births; ``DCMD`` writes go through the site's
  command guard, and the outcome of each is published as the node metric
  ``Node Control/Command Result`` (a JSON text: device, point, value, status, message); a
  confirmed write is also published as the metric's new value.

Bus topics become metrics by their first segment: ``inv1/103.W`` is metric ``103.W`` of device
``inv1``; an aggregate adds its statistic (``103.W/mean``); an event is a text metric holding its
JSON. A topic seen for the first time after the births (a solution's output) is born by a new
DBIRTH of its device before its first value.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from google.protobuf.message import DecodeError as ProtobufDecodeError

from edgeplane.sync.codec import EnvelopeError, Record
from edgeplane.sync import MqttTransport, Reading, UplinkSite, record_readings
from edgeplane_mqtt.sparkplug import BDSEQ_METRIC, NAMESPACE, REBIRTH_METRIC, DataType, Payload
from edgeplane_sparkplug.config import SparkplugConfig

__all__ = ["COMMAND_RESULT_METRIC", "SparkplugTransport", "sparkplug_type"]

log = logging.getLogger(__name__)

COMMAND_RESULT_METRIC = "Node Control/Command Result"
MAX_COMMAND_BYTES = 64_000  # a command is a few metrics; anything larger is refused unread

_POINT_TYPES = {
    "bool": DataType.Boolean, "int16": DataType.Int16, "uint16": DataType.UInt16, "int32": DataType.Int32,
    "uint32": DataType.UInt32, "int64": DataType.Int64, "uint64": DataType.UInt64, "float32": DataType.Float,
    "float64": DataType.Double, "string": DataType.String, "auto": DataType.Double,
}
_INT32 = {DataType.Int8, DataType.Int16, DataType.Int32, DataType.UInt8, DataType.UInt16}
_INT64 = {DataType.Int64, DataType.UInt32, DataType.UInt64, DataType.DateTime}
_TEXT = {DataType.String, DataType.Text, DataType.UUID}


def sparkplug_type(point_type: str) -> DataType:
    """The Sparkplug data type a point of an edgeplane type is born with."""
    return _POINT_TYPES.get(point_type, DataType.Double)


def _type_of_value(value: Any) -> DataType:
    if isinstance(value, bool):
        return DataType.Boolean
    if isinstance(value, int):
        return DataType.Int64
    if isinstance(value, float):
        return DataType.Double
    return DataType.String


def _put(metric: Any, datatype: int, value: Any) -> bool:
    """Write ``value`` into the value field of ``datatype``; False (and null) when it does not fit."""
    try:
        if value is None:
            raise ValueError("no value")
        if datatype == DataType.Boolean:
            metric.boolean_value = bool(value)
        elif datatype == DataType.Float:
            metric.float_value = float(value)
        elif datatype == DataType.Double:
            metric.double_value = float(value)
        elif datatype in _INT32:
            metric.int_value = int(round(float(value))) & 0xFFFFFFFF
        elif datatype in _INT64:
            metric.long_value = int(round(float(value))) & 0xFFFFFFFFFFFFFFFF
        elif datatype in _TEXT:
            metric.string_value = value if isinstance(value, str) else json.dumps(value, default=str)
        else:
            raise ValueError(f"type {datatype}")
        return True
    except (TypeError, ValueError, OverflowError):
        metric.is_null = True
        return False


def _value_of(metric: Any, datatype: int) -> Any:
    """The value a command metric carries, as Python: int, float, bool or str (None if none)."""
    which = metric.WhichOneof("value")
    if which is None or which in ("bytes_value", "dataset_value", "template_value", "extension_value"):
        return None
    value = getattr(metric, which)
    if which == "int_value" and datatype in (DataType.Int8, DataType.Int16, DataType.Int32) and value >= 1 << 31:
        value -= 1 << 32
    elif which == "long_value" and datatype == DataType.Int64 and value >= 1 << 63:
        value -= 1 << 64
    return value


@dataclass
class _Metric:
    name: str
    alias: int
    datatype: DataType
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Device:
    name: str
    metrics: dict[str, _Metric] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    born: bool = False

    def by_alias(self, alias: int) -> _Metric | None:
        return next((m for m in self.metrics.values() if m.alias == alias), None)


class SparkplugTransport(MqttTransport):
    """Sparkplug B edge node over MQTT 3.1.1 (QoS 1 for data, as store-and-forward needs acks)."""

    Config = SparkplugConfig
    native_envelope = False
    clean_session = True

    config: SparkplugConfig

    def __init__(self, config: SparkplugConfig, *, client_id: str, base_dir: Path | None = None):
        super().__init__(config, client_id=client_id, base_dir=base_dir)
        self.node_id = config.edge_node_id or client_id
        self.node = _Device("")
        self.devices: dict[str, _Device] = {}
        self._next_alias = 1
        self._seq = 0
        self._bdseq = 0  # of the next connection (paho thread writes it, with the will)
        self._session_bdseq = 0  # of the current connection
        self._mqtt_up = False
        self._host_online = config.primary_host is None
        self._birthing: asyncio.Task[None] | None = None
        self._ready_at = math.inf
        self._tasks: set[asyncio.Task[Any]] = set()
        self.rebirths = 0
        self.commands_refused = 0

    # -- topics -----------------------------------------------------------------------------

    def topic(self, kind: str, device: str = "") -> str:
        base = f"{NAMESPACE}/{self.config.group_id}/{kind}/{self.node_id}"
        return f"{base}/{device}" if device else base

    # -- wiring -------------------------------------------------------------------------------

    def attach(self, site: UplinkSite) -> None:
        super().attach(site)
        self.node_id = self.config.edge_node_id or site.site_id
        state = self._state_file()
        if state is not None and state.exists():
            try:
                self._bdseq = (int(json.loads(state.read_text()).get("bdSeq", -1)) + 1) % 256
            except (ValueError, OSError, AttributeError):
                self._bdseq = 0

    def _state_file(self) -> Path | None:
        return None if self.site is None else self.site.store_dir / "sparkplug.json"

    def _save_bdseq(self, value: int) -> None:
        path = self._state_file()
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"bdSeq": value}))
            except OSError as e:
                log.warning("sparkplug: could not keep bdSeq in %s (%s); a restart may reuse it", path, e)

    async def connect(self, on_link: Callable[[bool], None]) -> None:
        self._subscriptions[self.topic("NCMD")] = self._on_ncmd
        self._subscriptions[self.topic("DCMD", "+")] = self._on_dcmd
        if self.config.primary_host:
            self._subscriptions[f"{NAMESPACE}/STATE/{self.config.primary_host}"] = self._on_state
        await super().connect(on_link)

    def _death(self, bdseq: int) -> bytes:
        payload = Payload(timestamp=int(self._now() * 1000))
        payload.metrics.add(name=BDSEQ_METRIC, datatype=DataType.Int64, long_value=bdseq)
        return payload.SerializeToString()

    def _prepare(self, client: Any) -> None:
        client.will_set(self.topic("NDEATH"), self._death(self._bdseq), qos=1, retain=False)
        self._save_bdseq(self._bdseq)

    def _now(self) -> float:
        import time

        return self.site.clock.now() if self.site is not None else time.time()

    # paho thread
    def _paho_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._session_bdseq = self._bdseq
        super()._paho_connect(client, userdata, flags, reason_code, properties)

    def _paho_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        # the next connection is a new session: a new bdSeq in its will (paho reconnects with it)
        self._bdseq = (self._session_bdseq + 1) % 256
        client.will_set(self.topic("NDEATH"), self._death(self._bdseq), qos=1, retain=False)
        self._save_bdseq(self._bdseq)
        super()._paho_disconnect(client, userdata, flags, reason_code, properties)

    # on the loop
    def _set_link(self, up: bool, error: str | None) -> None:
        if up:
            if error:
                self.last_error = error
            self._mqtt_up = True
            self._maybe_born()
            return
        self._mqtt_up = False
        if self.config.primary_host:
            self._host_online = False  # the retained STATE comes again on the next connection
        super()._set_link(False, error)

    def _on_state(self, topic: str, payload: bytes) -> None:
        online = self._parse_state(payload)
        if online is None:
            self._count("bad_state", f"STATE on {topic} is neither Sparkplug 3.0 JSON nor ONLINE/OFFLINE")
            return
        self._host_online = online
        if online:
            self._maybe_born()
        elif self.connected:
            # hold back: the outbox keeps storing until the primary host is back
            log.warning("sparkplug: primary host %s is offline; holding data in the outbox", self.config.primary_host)
            self.connected = False
            if self._on_link is not None:
                self._on_link(False)

    @staticmethod
    def _parse_state(payload: bytes) -> bool | None:
        if len(payload) > 4096:
            return None
        text = payload.decode("utf-8", "replace").strip()
        if text in ("ONLINE", "OFFLINE"):  # Sparkplug 2.2 hosts
            return text == "ONLINE"
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        return doc["online"] if isinstance(doc, dict) and isinstance(doc.get("online"), bool) else None

    def _maybe_born(self) -> None:
        if self._mqtt_up and self._host_online and not self.connected and self._birthing is None:
            self._birthing = asyncio.get_running_loop().create_task(self._born_then_ready())

    async def _born_then_ready(self) -> None:
        try:
            await asyncio.gather(*self._births())
        except ConnectionError as e:
            log.debug("sparkplug: births not acknowledged (%s); trying again on the next connection", e)
            return
        finally:
            self._birthing = None
        if self._mqtt_up and self._host_online and not self.connected:
            self._ready_at = self._now()
            self.connected = True
            if self._on_link is not None:
                self._on_link(True)

    # -- births -------------------------------------------------------------------------------

    def _metric(self, device: _Device, name: str, datatype: DataType, properties: dict[str, Any] | None = None) -> _Metric:
        metric = device.metrics.get(name)
        if metric is None:
            metric = device.metrics[name] = _Metric(name, self._next_alias, datatype)
            self._next_alias += 1
        if properties:
            metric.properties = properties
        return metric

    def _device(self, name: str) -> _Device:
        if not name:
            return self.node
        device = self.devices.get(name)
        if device is None:
            device = self.devices[name] = _Device(name)
        return device

    def _catalog(self) -> None:
        """Metrics of every site device whose points the policy sends, or that can be written."""
        assert self.site is not None
        sync = self.site.sync
        for name, config in self.site.devices().items():
            device = self._device(name)
            device.attributes = dict(self.config.attributes.get(name, {}))
            for point, spec in config.points.items():
                props: dict[str, Any] = {}
                if spec.unit:
                    props["engUnit"] = spec.unit
                if spec.description:
                    props["description"] = spec.description
                limits = spec.limits
                if limits is not None and limits.min is not None:
                    props["engLow"] = float(limits.min)
                if limits is not None and limits.max is not None:
                    props["engHigh"] = float(limits.max)
                props["readOnly"] = not spec.writable
                rule = sync.rule_for(f"{name}/{point}")
                if rule is not None and rule.mode == "aggregate":
                    for stat in rule.stats:
                        stat_props = {**props, "readOnly": True}
                        self._metric(device, f"{point}/{stat}", DataType.Int64 if stat == "count" else DataType.Double,
                                     stat_props)
                if (rule is not None and rule.mode in ("raw", "exception")) or spec.writable:
                    self._metric(device, point, sparkplug_type(spec.type), props)
        self.node.attributes = dict(self.config.attributes.get("", {}))

    def _births(self) -> list[asyncio.Future[None]]:
        self._catalog()
        self._seq = 0
        now_ms = int(self._now() * 1000)
        payload = Payload(timestamp=now_ms)
        payload.metrics.add(name=BDSEQ_METRIC, datatype=DataType.Int64, long_value=self._session_bdseq, timestamp=now_ms)
        payload.metrics.add(name=REBIRTH_METRIC, datatype=DataType.Boolean, boolean_value=False, timestamp=now_ms)
        payload.metrics.add(name=COMMAND_RESULT_METRIC, datatype=DataType.String, is_null=True, timestamp=now_ms)
        self._birth_metrics(payload, self.node, now_ms)
        futures = [self._publish_now(self.topic("NBIRTH"), payload)]
        self.node.born = True
        for device in self.devices.values():
            futures.append(self._dbirth(device))
        self.rebirths += 1
        return futures

    def _birth_metrics(self, payload: Any, device: _Device, now_ms: int) -> None:
        for key, value in device.attributes.items():
            m = payload.metrics.add(name=f"Properties/{key}", timestamp=now_ms)
            m.datatype = _type_of_value(value)
            _put(m, m.datatype, value)
        for metric in device.metrics.values():
            m = payload.metrics.add(name=metric.name, alias=metric.alias, datatype=metric.datatype, timestamp=now_ms,
                                    is_null=True)
            for key, value in metric.properties.items():
                m.properties.keys.append(key)
                pv = m.properties.values.add()
                pv.type = _type_of_value(value)
                _put(pv, pv.type, value)

    def _dbirth(self, device: _Device) -> asyncio.Future[None]:
        now_ms = int(self._now() * 1000)
        payload = Payload(timestamp=now_ms)
        self._birth_metrics(payload, device, now_ms)
        device.born = True
        return self._publish_now(self.topic("DBIRTH", device.name), payload)

    async def rebirth(self) -> None:
        """Publish NBIRTH and every DBIRTH again (what ``Node Control/Rebirth`` asks for)."""
        if self._mqtt_up:
            await asyncio.gather(*self._births())

    async def set_attributes(self, device: str, attributes: dict[str, Any]) -> None:
        """Static metadata read at run time (a firmware version from the device): published as
        ``Properties/<key>`` in a DDATA, only the keys whose value changed."""
        target = self._device(device)
        changed = {k: v for k, v in attributes.items() if target.attributes.get(k) != v}
        if not changed:
            return
        target.attributes.update(changed)
        if not self.connected:
            return  # the next birth carries them
        if not target.born:
            await self._dbirth(target)
            return
        now_ms = int(self._now() * 1000)
        payload = Payload(timestamp=now_ms)
        for key, value in changed.items():
            m = payload.metrics.add(name=f"Properties/{key}", timestamp=now_ms)
            m.datatype = _type_of_value(value)
            _put(m, m.datatype, value)
        await self._publish_now(self.topic("NDATA" if not device else "DDATA", device), payload)

    # -- data ---------------------------------------------------------------------------------

    def _publish_now(self, topic: str, payload: Any) -> asyncio.Future[None]:
        """Number the message and hand it to paho now, so that ``seq`` order is wire order."""
        if self._client is None or not self._mqtt_up:
            raise ConnectionError(f"Sparkplug uplink {self.config.url} is not connected")
        payload.seq = self._seq
        self._seq = (self._seq + 1) % 256
        data = payload.SerializeToString()
        future = self._hand_to_paho(topic, data)
        self.bytes_sent += len(data) + len(topic)
        return future

    def format(self, records: list[Record]) -> list[tuple[str, Any]]:
        """DBIRTHs needed for metrics not born yet, then NDATA/DDATA messages: (topic, payload)."""
        by_device: dict[str, list[tuple[_Metric, Reading, bool]]] = {}
        births: list[_Device] = []
        for record in records:
            try:
                readings = record_readings(record)
            except EnvelopeError as e:
                self._count("corrupt_record", f"outbox record {record.stream}#{record.seq} is corrupt ({e}); skipped")
                continue
            historical = record.created < self._ready_at
            for reading in readings:
                device_name, _, metric_name = reading.topic.partition("/")
                if not metric_name:
                    device_name, metric_name = "", reading.topic
                device = self._device(device_name)
                metric = device.metrics.get(metric_name)
                if metric is None:
                    metric = self._metric(device, metric_name, _type_of_value(reading.value))
                    if device.born and device not in births:
                        births.append(device)
                if not device.born and device not in births:
                    births.append(device)
                by_device.setdefault(device_name, []).append((metric, reading, historical))
        out: list[tuple[str, Any]] = []
        for device in births:
            if not device.name:
                out.append(("REBIRTH", None))  # a new node metric: the whole node is born again
                continue
            now_ms = int(self._now() * 1000)
            payload = Payload(timestamp=now_ms)
            self._birth_metrics(payload, device, now_ms)
            device.born = True
            out.append((self.topic("DBIRTH", device.name), payload))
        step = self.config.max_metrics_per_message
        for device_name, items in by_device.items():
            topic = self.topic("DDATA", device_name) if device_name else self.topic("NDATA")
            for start in range(0, len(items), step):
                payload = Payload(timestamp=int(self._now() * 1000))
                for metric, reading, historical in items[start:start + step]:
                    m = payload.metrics.add(alias=metric.alias, timestamp=int(reading.ts * 1000))
                    if historical:
                        m.is_historical = True
                    if not reading.good or not _put(m, metric.datatype, reading.value):
                        m.is_null = True
                out.append((topic, payload))
        return out

    def _publish_formatted(self, topic: str, message: Any) -> list[asyncio.Future[None]]:
        return self._births() if message is None else [self._publish_now(topic, message)]

    # -- commands -----------------------------------------------------------------------------

    def _count(self, kind: str, message: str) -> None:
        if self.site is not None:
            self.site.metrics.errors.labels(part="sparkplug", kind=kind).inc()
        log.warning("sparkplug: %s", message)

    def _parse_command(self, topic: str, payload: bytes) -> Any | None:
        if len(payload) > MAX_COMMAND_BYTES:
            self._count("command_refused", f"{topic}: a command of {len(payload)} bytes is refused unread")
            return None
        try:
            return Payload.FromString(payload)
        except (ProtobufDecodeError, ValueError, RuntimeError):
            self._count("command_refused", f"{topic}: the payload is not a Sparkplug B payload")
            return None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_ncmd(self, topic: str, payload: bytes) -> None:
        message = self._parse_command(topic, payload)
        if message is None:
            return
        for metric in message.metrics:
            if metric.name == REBIRTH_METRIC and metric.WhichOneof("value") == "boolean_value" and metric.boolean_value:
                log.info("sparkplug: rebirth requested by the host")
                self._spawn(self.rebirth())
            else:
                self._spawn(self._command("", metric.name or f"alias {metric.alias}", None, known=False,
                                          reason=f"the edge node takes no command {metric.name!r}; only {REBIRTH_METRIC!r}"))

    def _on_dcmd(self, topic: str, payload: bytes) -> None:
        device_name = topic.rsplit("/", 1)[-1]
        message = self._parse_command(topic, payload)
        if message is None:
            return
        device = self.devices.get(device_name)
        for metric in message.metrics:
            known = None
            if metric.name:
                name = metric.name
                known = device.metrics.get(name) if device else None
            elif metric.HasField("alias") and device is not None and (known := device.by_alias(metric.alias)) is not None:
                name = known.name
            else:
                self._spawn(self._command(device_name, f"alias {metric.alias}", None, known=False,
                                          reason=f"alias {metric.alias} was not born for device {device_name!r}"))
                continue
            datatype = metric.datatype or (known.datatype if known else DataType.Unknown)
            self._spawn(self._command(device_name, name, _value_of(metric, datatype), known=True))

    async def _command(self, device: str, point: str, value: Any, *, known: bool, reason: str = "") -> None:
        """Run one command through the guard; publish its outcome in the Sparkplug way."""
        execute = self.site.execute_command if self.site is not None else None
        if not known or execute is None:
            status, message = "rejected", reason or "this site takes no writes from the uplink"
            self.commands_refused += 1
            self._count("command_refused", f"command {device}/{point}: {message}")
        else:
            result = await execute(device, point, value)
            status, message = result.status.value, result.message
            if not result.ok:
                self.commands_refused += 1
        await self._publish_result(device, point, value, status, message)

    async def _publish_result(self, device: str, point: str, value: Any, status: str, message: str) -> None:
        if not self._mqtt_up:
            return
        now_ms = int(self._now() * 1000)
        doc = {"device": device, "point": point, "value": value, "status": status, "message": message[:500]}
        payload = Payload(timestamp=now_ms)
        payload.metrics.add(name=COMMAND_RESULT_METRIC, datatype=DataType.String, timestamp=now_ms,
                            string_value=json.dumps(doc, default=str))
        futures = [self._publish_now(self.topic("NDATA"), payload)]
        target = self.devices.get(device)
        metric = target.metrics.get(point) if target is not None else None
        if status == "ok" and metric is not None and target is not None and target.born:
            data = Payload(timestamp=now_ms)
            m = data.metrics.add(alias=metric.alias, timestamp=now_ms)
            _put(m, metric.datatype, value)
            futures.append(self._publish_now(self.topic("DDATA", device), data))
        try:
            await asyncio.gather(*futures)
        except ConnectionError:
            pass  # the link dropped; the host sees the write's effect in the next data

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None and self._mqtt_up:
            # a clean disconnect suppresses the will: say the node is gone ourselves
            info = self._client.publish(self.topic("NDEATH"), self._death(self._session_bdseq), qos=1)
            future = asyncio.get_running_loop().create_future()
            self._pending[info.mid] = future
            done, _ = await asyncio.wait({future}, timeout=1.0)
            if not done:
                future.cancel()
        await super().close()
