"""The OPC UA connector: one device entry is one server endpoint.

Lifecycle (see :class:`edgeplane.Connector`):

* ``start`` loads the client certificate (a broken file fails here, supervised by the host)
  and tries the first connection; a server that is down does not fail ``start``: the device
  is DEGRADED and ``run`` keeps trying;
* ``run`` holds the link: it connects (secure channel, session, one subscription for every
  subscribed point, a poll loop for polled points), waits until the link is lost (a closed
  socket, a failed keep-alive probe, a subscription the server dropped, a failed poll), then
  marks every point BAD once, drops the client, and reconnects with capped exponential
  backoff, re-creating the session and every monitored item from the configuration;
* ``write`` writes a variable (coerced to the node's own data type) and reads it back, or
  calls a method point with the commanded arguments;
* ``stop`` closes the session.

Readings: one :class:`~edgeplane.Batch` per data change (or poll), stamped with the source
time stamp (configurable), quality from the StatusCode's severity. An array node (a waveform
window) is one batch of ``n`` readings; with ``sample_rate`` the samples are spread back in
time from the node's time stamp, else all carry it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from asyncua import Client, Node, ua
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy, StatusChangeEvent

from edgeplane import Batch, Connector, Context, HealthState, Quality, RateLimitedLog
from edgeplane.errors import ConnectorError
from edgeplane.reconnect import ReconnectPolicy

from edgeplane_opcua.addressing import NodeNotFound, PathResolver, variant_type_of
from edgeplane_opcua.config import OpcUaConfig, OpcUaPoint
from edgeplane_opcua.security import (
    CertificateRejected,
    ClientIdentity,
    apply_security,
    check_server_certificate,
    load_identity,
    server_endpoint,
)
from edgeplane_opcua.values import ValueMismatch, as_python, coerce, quality_of, status_name, timestamp_of, to_engineering, to_raw

__all__ = ["LinkLost", "OpcUaConnector"]

# how many monitored items go into one CreateMonitoredItems request (servers cap it)
_ITEMS_PER_CALL = 500
# notifications waiting for the connector; past this the oldest go (a 100 k backlog means the
# host is far behind anyway)
_NOTIFICATION_QUEUE = 100_000
_NAN = float("nan")


class LinkLost(ConnectorError, ConnectionError):
    """The session or the socket to the server is gone."""


@dataclass
class _Link:
    """One connection: the client, its subscription, and what each point resolved to."""

    client: Client
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    nodes: dict[str, Node] = field(default_factory=dict)  # point -> variable node
    handles: dict[int, str] = field(default_factory=dict)  # monitored item client handle -> point
    subscription: Any = None
    poll_task: asyncio.Task[None] | None = None
    consumer: asyncio.Task[None] | None = None  # reads the subscription's notifications
    types: dict[str, tuple[ua.VariantType, bool]] = field(default_factory=dict)  # point -> (type, is_array)
    resolver: PathResolver | None = None

    def lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()




class OpcUaConnector(Connector[OpcUaConfig, OpcUaPoint]):
    """Reads, subscribes, writes and calls methods on one OPC UA server."""

    def __init__(self, name: str, config: OpcUaConfig, context: Context):
        super().__init__(name, config, context)
        metrics = context.metrics
        self._errors = metrics.counter(
            "edgeplane_opcua_errors_total", "OPC UA problems by device, point and reason", ["device", "point", "reason"]
        )
        self._reconnects = metrics.counter("edgeplane_opcua_reconnects_total", "Links re-established after a loss", ["device"])
        self._link_up = metrics.gauge("edgeplane_opcua_link_up", "1 while the session to the server is up", ["device"])
        self._link_up.labels(device=name).set(0)
        self._limited = RateLimitedLog(self.log, interval=30.0)
        self._identity: ClientIdentity | None = None
        self._link: _Link | None = None
        self._topics = {p: self.topic(p) for p in config.points}
        self._units = {p: spec.unit for p, spec in config.points.items()}
        self._connected_once = False
        self._backoff = ReconnectPolicy.of(config.reconnect_initial, config.reconnect_max).backoff()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        security = self.config.security
        if security.policy != "None" and self._identity is None:
            try:
                self._identity = await self.context.run_blocking(load_identity, security, self.context.site_dir)
            except CertificateRejected as e:
                self._count("", "certificate")
                raise CertificateRejected(f"device {self.name!r}: {e}") from None
        await self._try_connect()

    async def run(self) -> None:
        while True:
            link = self._link
            if link is None:
                await asyncio.sleep(self._backoff.next_delay())
                await self._try_connect()
                continue
            await link.lost.wait()
            await self._drop(link, link.reason)

    async def stop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await self._close(link)
        self._link_up.labels(device=self.name).set(0)

    # -- the link -----------------------------------------------------------------------------

    async def _try_connect(self) -> None:
        """Connect once; on failure leave the device DEGRADED with the reason (never raises)."""
        try:
            self._link = await self._connect()
        except asyncio.CancelledError:
            raise
        except CertificateRejected as e:
            self._link_down("certificate", f"certificate rejected: {e}")
        except Exception as e:  # noqa: BLE001 - any failure to connect is a link that is down
            self._link_down("connect", f"cannot connect to {self.config.url}: {_describe(e)}")
        else:
            self._backoff.reset()
            if self._connected_once:
                self._reconnects.labels(device=self.name).inc()
                self.log.info("device %r: reconnected to %s; session and %d monitored items re-created",
                              self.name, self.config.url, len(self._link.handles))
            self._connected_once = True
            self._link_up.labels(device=self.name).set(1)

    def _link_down(self, reason: str, message: str) -> None:
        self._count("", reason)
        self.health.set(HealthState.DEGRADED, f"link down: {message}; retrying")
        self._limited.warning(reason, "device %r: %s; retrying with backoff (up to %.0f s)",
                              self.name, message, self.config.reconnect_max)

    async def _connect(self) -> _Link:
        config = self.config
        client = Client(config.url, timeout=config.timeout, watchdog_intervall=config.watchdog)
        if config.application_uri:
            client.application_uri = config.application_uri
        elif self._identity is not None and self._identity.application_uri:
            # servers check that the certificate names the URI the client claims
            client.application_uri = self._identity.application_uri
        client.name = client.description = f"edgeplane {self.context.site_id}/{self.name}"
        if config.security.policy != "None":
            assert self._identity is not None
            endpoint = await server_endpoint(config.url, config.security, config.timeout)
            await self.context.run_blocking(
                check_server_certificate, endpoint.ServerCertificate, config.security, self.context.site_dir
            )
            await apply_security(client, config.security, self._identity, endpoint.ServerCertificate)
        if config.username is not None and config.password is not None:
            client.set_user(config.username)
            client.set_password(config.password.get_secret_value())
        link = _Link(client)

        async def on_lost(exc: Exception) -> None:
            link.lose(f"connection lost: {_describe(exc)}")

        client.connection_lost_callback = on_lost
        try:
            await client.connect()
        except Exception:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 2.0)
            raise
        try:
            link.resolver = PathResolver(client)
            await self._resolve(link)
            await self._subscribe(link)
            if self._polled():
                link.poll_task = asyncio.create_task(self._poll_loop(link), name=f"opcua-poll:{self.name}")
        except Exception:
            await self._close(link)
            raise
        unresolved = [p for p in self._readable() if p not in link.nodes]
        if unresolved:
            self.health.set(HealthState.DEGRADED, f"connected; {len(unresolved)} points unusable: {', '.join(unresolved[:5])}")
        else:
            self.health.set(HealthState.OK, f"connected to {config.url}")
        return link

    async def _drop(self, link: _Link, reason: str) -> None:
        self._link = None
        self._link_up.labels(device=self.name).set(0)
        self._link_down("link_lost", reason)
        now = self.context.clock.now()
        # consumers see the gap as BAD readings, once, instead of stale values
        for point in self._readable():
            if point in link.nodes:
                await self.publish_bad(point, now)
        await self._close(link)

    async def _consume(self, link: _Link) -> None:
        """Publish each data change of the subscription; a status change may end the link."""
        async for event in link.subscription:
            if isinstance(event, DataChangeEvent):
                point = link.handles.get(event.data.subscription_data.client_handle)
                if point is None:
                    continue
                try:
                    await self._publish_value(point, event.data.monitored_item.Value)
                except Exception as e:  # noqa: BLE001 - one odd value must not stop the others
                    self._point_problem(point, "decode", f"cannot use the value: {_describe(e)}")
            elif isinstance(event, StatusChangeEvent):
                code = event.notification.Status
                if code is not None and not code.is_good():
                    link.lose(f"the server ended the subscription ({status_name(code)})")

    async def _close(self, link: _Link) -> None:
        for task in (link.poll_task, link.consumer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        # a dead server makes every request wait its timeout: bound the goodbye
        with contextlib.suppress(Exception):
            await asyncio.wait_for(link.client.disconnect(), self.config.timeout)
        with contextlib.suppress(Exception):
            link.client.disconnect_socket()

    # -- points -------------------------------------------------------------------------------

    def _readable(self) -> list[str]:
        return [p for p, spec in self.config.points.items() if spec.method is None and spec.access != "w"]

    def _mode(self, spec: OpcUaPoint) -> str:
        return spec.mode or self.config.mode

    def _polled(self) -> list[str]:
        return [p for p in self._readable() if self._mode(self.config.points[p]) == "poll"]

    async def _resolve(self, link: _Link) -> None:
        """Resolve every variable point's address; a missing browse path makes that point BAD."""
        assert link.resolver is not None
        now = self.context.clock.now()
        for point, spec in self.config.points.items():
            if spec.method is not None:
                continue
            if spec.node is not None:
                link.nodes[point] = link.client.get_node(spec.node)
                continue
            try:
                link.nodes[point] = await link.resolver.resolve(spec.path or "")
            except NodeNotFound as e:
                self._point_problem(point, "unknown_node", f"{e}; fix 'path' or find the node with "
                                    f"`edgeplane opcua browse {self.config.url}`")
                if spec.access != "w":
                    await self.publish_bad(point, now)

    async def _subscribe(self, link: _Link) -> None:
        config = self.config
        points = [p for p in self._readable() if p in link.nodes and self._mode(config.points[p]) == "subscribe"]
        if not points:
            return
        # iterator mode: one task reads the notifications in order. asyncua's handler mode would
        # start a task per notification, which costs more than the rest of the path together.
        link.subscription = await link.client.create_subscription(
            config.publishing_interval * 1000, None, queue_maxsize=_NOTIFICATION_QUEUE, overflow=OverflowPolicy.DROP_OLDEST
        )
        link.subscription.__aiter__()  # makes the queue now: notifications before the first read are kept
        link.consumer = asyncio.create_task(self._consume(link), name=f"opcua-notifications:{self.name}")
        handles = itertools.count(1)
        requests: list[tuple[str, ua.MonitoredItemCreateRequest]] = []
        for point in points:
            spec = config.points[point]
            handle = next(handles)
            params = ua.MonitoringParameters()
            params.ClientHandle = handle
            params.SamplingInterval = (spec.sampling_interval if spec.sampling_interval is not None else config.sampling_interval) * 1000
            params.QueueSize = spec.queue_size if spec.queue_size is not None else config.queue_size
            params.DiscardOldest = True
            if spec.deadband is not None:
                flt = ua.DataChangeFilter()
                flt.Trigger = ua.DataChangeTrigger.StatusValue
                flt.DeadbandType = 1 if spec.deadband_type == "absolute" else 2
                flt.DeadbandValue = spec.deadband
                params.Filter = flt
            item = ua.MonitoredItemCreateRequest()
            item.ItemToMonitor = ua.ReadValueId(NodeId=link.nodes[point].nodeid, AttributeId=ua.AttributeIds.Value)
            item.MonitoringMode = ua.MonitoringMode.Reporting
            item.RequestedParameters = params
            link.handles[handle] = point  # before the request: the first value may beat the reply
            requests.append((point, item))
        now = self.context.clock.now()
        for start in range(0, len(requests), _ITEMS_PER_CALL):
            chunk = requests[start : start + _ITEMS_PER_CALL]
            results = await link.subscription.create_monitored_items([item for _, item in chunk])
            for (point, item), result in zip(chunk, results):
                if isinstance(result, ua.StatusCode):
                    del link.handles[item.RequestedParameters.ClientHandle]
                    link.nodes.pop(point, None)
                    self._status_problem(point, config.points[point], result, "cannot monitor")
                    await self.publish_bad(point, now)

    async def _poll_loop(self, link: _Link) -> None:
        points = [p for p in self._polled() if p in link.nodes]
        if not points:
            return
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        params.NodesToRead = [ua.ReadValueId(NodeId=link.nodes[p].nodeid, AttributeId=ua.AttributeIds.Value) for p in points]
        period = self.config.poll or 1.0
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                values = await link.client.uaclient.read(params)
            except asyncio.CancelledError:
                raise
            except (ConnectionError, OSError, asyncio.TimeoutError) as e:
                link.lose(f"poll failed: {_describe(e)}")
                return
            except ua.UaStatusCodeError as e:
                # the whole Read refused: a session problem (BadSessionIdInvalid ...), not a point's
                link.lose(f"poll refused by the server: {_describe(e)}")
                return
            for point, value in zip(points, values):
                await self._publish_value(point, value)
            # fixed rate, not fixed delay: a slow read does not stretch the period
            await asyncio.sleep(max(0.0, period - (loop.time() - began)))

    # -- readings -----------------------------------------------------------------------------

    async def _publish_value(self, point: str, value: ua.DataValue) -> None:
        spec = self.config.points[point]
        quality = quality_of(value.StatusCode)
        ts = timestamp_of(value, self.config.timestamps, self.context.clock.now())
        raw = value.Value.Value if value.Value is not None else None
        if quality is Quality.BAD:
            self._status_problem(point, spec, value.StatusCode, "reads")
            await self.context.bus.publish(Batch(self._topics[point], np.array([ts]), np.array([_NAN]),
                                                 np.array([Quality.BAD], dtype=np.uint8), self._units[point]))
            return
        if raw is None:
            raw = _NAN
            quality = Quality.BAD
        if isinstance(raw, float) or (isinstance(raw, int) and not isinstance(raw, bool)):
            # the hot path: one number, no numpy conversions beyond the three arrays
            number = raw * spec.scale + spec.offset if spec.scale != 1.0 or spec.offset != 0.0 else raw
            batch = Batch(self._topics[point], np.array([ts]), np.array([number], dtype=np.float64),
                          np.array([quality], dtype=np.uint8), self._units[point])
            await self.context.bus.publish(batch)
            return
        converted = to_engineering(as_python(raw), spec)
        if isinstance(converted, np.ndarray):
            n = len(converted)
            if n == 0:
                return
            if spec.sample_rate:
                stamps = ts - (np.arange(n - 1, -1, -1, dtype=np.float64) / spec.sample_rate)
            else:
                stamps = np.full(n, ts)
            batch = Batch(self._topics[point], stamps, converted, np.full(n, quality, dtype=np.uint8), self._units[point])
        else:
            batch = Batch.of(self._topics[point], ts, converted, quality, unit=self._units[point])
        await self.context.bus.publish(batch)

    # -- problems -----------------------------------------------------------------------------

    def _count(self, point: str, reason: str) -> None:
        self._errors.labels(device=self.name, point=point, reason=reason).inc()

    def _point_problem(self, point: str, reason: str, message: str) -> None:
        self._count(point, reason)
        self._limited.warning(f"{reason}:{point}", "device %r, point %r: %s", self.name, point, message)

    def _status_problem(self, point: str, spec: OpcUaPoint, status: ua.StatusCode | None, doing: str) -> None:
        name = status_name(status)
        address = spec.node or spec.path
        if name in ("BadNodeIdUnknown", "BadNodeIdInvalid"):
            reason, fix = "unknown_node", (f"the server has no node {address!r}; fix 'node' in the profile or find it "
                                           f"with `edgeplane opcua browse {self.config.url}`")
        elif name in ("BadFilterNotAllowed", "BadMonitoredItemFilterUnsupported", "BadDeadbandFilterInvalid"):
            reason, fix = "bad_filter", "the server refuses a deadband on this node: remove 'deadband' from the point"
        elif name == "BadNotReadable" or name == "BadUserAccessDenied":
            reason, fix = "access_denied", "the server does not let this user read it: check the user's rights"
        else:
            reason, fix = "bad_status", "the server reports the value as bad; check the device behind the server"
        self._point_problem(point, reason, f"node {address!r} {doing}: {name}; {fix} (quality BAD)")

    # -- writes and methods -------------------------------------------------------------------

    async def write(self, point: str, value: Any) -> Any:
        spec = self.config.points[point]
        link = self._link
        if link is None:
            raise LinkLost(f"device {self.name!r} is not connected to {self.config.url}; nothing was written")
        if spec.method is not None:
            return await self._call(link, point, spec, value)
        node = link.nodes.get(point)
        if node is None:
            raise NodeNotFound(f"device {self.name!r}, point {point!r}: node {spec.node or spec.path!r} is not usable "
                               "(see the earlier warning); nothing was written")
        try:
            vtype, is_array = await self._node_type(link, point, node)
            variant = coerce(to_raw(value, spec), vtype, is_array)
        except ValueMismatch as e:
            self._count(point, "type_mismatch")
            raise ValueMismatch(f"device {self.name!r}, point {point!r} (node {spec.node or spec.path}): {e}") from None
        try:
            await node.write_value(ua.DataValue(variant))
        except ua.UaStatusCodeError as e:
            self._count(point, "write_refused")
            raise RuntimeError(f"device {self.name!r}, point {point!r}: the server refused the write: {_describe(e)}") from None
        readback = await node.read_data_value(raise_on_bad_status=False)
        await self._publish_value(point, readback)
        if quality_of(readback.StatusCode) is not Quality.GOOD:
            return None
        result = to_engineering(as_python(readback.Value.Value if readback.Value else None), spec)
        if isinstance(result, np.ndarray):
            return result.tolist()
        return result

    async def _node_type(self, link: _Link, point: str, node: Node) -> tuple[ua.VariantType, bool]:
        known = link.types.get(point)
        if known is not None:
            return known
        try:
            data_type = await node.read_data_type()
            rank = await node.read_value_rank()
        except ua.UaStatusCodeError as e:
            self._count(point, "unknown_node")
            raise NodeNotFound(f"device {self.name!r}, point {point!r}: cannot read the node's data type: {_describe(e)}") from None
        vtype = variant_type_of(data_type)
        if vtype is None:
            # a subtype (an enumeration, a derived type): what the current value holds is authoritative
            vtype = (await node.read_data_value(raise_on_bad_status=False)).Value.VariantType
        known = (vtype, rank >= 1)
        link.types[point] = known
        return known

    async def _call(self, link: _Link, point: str, spec: OpcUaPoint, value: Any) -> None:
        """Call a method point; its outputs are published on the point's topic."""
        assert link.resolver is not None and spec.method is not None
        try:
            method = await link.resolver.node(spec.method)
            owner = await link.resolver.node(spec.object) if spec.object else await method.get_parent()
        except NodeNotFound as e:
            self._count(point, "unknown_node")
            raise NodeNotFound(f"device {self.name!r}, point {point!r}: {e}") from None
        args = list(value) if isinstance(value, (list, tuple)) else ([] if value is None else [value])
        try:
            declared = await (await method.get_child("0:InputArguments")).read_value()
        except ua.UaStatusCodeError:
            declared = []  # a method without inputs has no InputArguments property
        if len(args) != len(declared):
            self._count(point, "type_mismatch")
            names = ", ".join(a.Name for a in declared) or "none"
            raise ValueMismatch(f"device {self.name!r}, point {point!r}: method {spec.method!r} takes {len(declared)} "
                                f"arguments ({names}); got {len(args)}")
        variants = []
        for i, (arg, decl) in enumerate(zip(args, declared)):
            vtype = variant_type_of(decl.DataType)
            if vtype is None:
                variants.append(ua.Variant(arg))
                continue
            try:
                variants.append(coerce(arg, vtype, decl.ValueRank >= 1))
            except ValueMismatch as e:
                self._count(point, "type_mismatch")
                raise ValueMismatch(f"device {self.name!r}, point {point!r}: argument {i + 1} ({decl.Name}): {e}") from None
        try:
            outputs = await owner.call_method(method, *variants)
        except ua.UaStatusCodeError as e:
            self._count(point, "method_failed")
            raise RuntimeError(f"device {self.name!r}, point {point!r}: method {spec.method!r} failed: {_describe(e)}") from None
        if outputs is not None and outputs != []:
            await self.publish(point, self.context.clock.now(), as_python(outputs) if isinstance(outputs, list) and len(outputs) > 1
                               else as_python(outputs[0] if isinstance(outputs, list) else outputs))
        return None


def _describe(error: BaseException) -> str:
    if isinstance(error, ua.UaStatusCodeError):
        return f"{status_name(error.code)}"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
