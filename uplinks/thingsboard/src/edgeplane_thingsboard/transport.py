"""The ThingsBoard gateway API uplink: the site is one ThingsBoard gateway device, each of its
devices a device behind the gateway (https://thingsboard.io/docs/reference/gateway-mqtt-api/).

* The gateway authenticates with its access token as the MQTT user name (``access_token``), or
  with MQTT basic credentials (``username``/``password``).
* Once connected: ``v1/gateway/connect`` for each site device, then ``v1/gateway/attributes``
  with its static metadata (``attributes`` from the site file, and per point its unit, limits
  and description), only when they differ from what this site last published (kept in the sync
  store folder): once, and on change.
* Outbox records go up as ``v1/gateway/telemetry``: ``{"<device>": [{"ts": ms, "values": {...}}]}``,
  readings with the same timestamp in one entry, messages at most ``max_payload_bytes``. A bad
  reading (bad quality, NaN) is left out and counted. A topic whose first segment is not a site
  device (a solution's output) is a device of its own, connected before its first value.
* RPC (``v1/gateway/rpc``): ``{"device", "data": {"id", "method": "write"|"set", "params":
  {"point", "value"}}}`` is a write through the site's command guard; the answer is
  ``{"device", "id", "data": {"success": true, "value": ...}}`` or ``{"success": false, "error":
  "..."}``, the form ThingsBoard's own gateway uses. Every refusal is audited by the guard or
  counted (``edgeplane_errors_total{part="thingsboard"}``).
* On a clean stop: ``v1/gateway/disconnect`` for each connected device.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field, SecretStr

from edgeplane.sync import MqttTransport, UplinkConfig, record_readings
from edgeplane.sync.codec import EnvelopeError, Record

__all__ = ["ThingsBoardConfig", "ThingsBoardTransport"]

log = logging.getLogger(__name__)

MAX_RPC_BYTES = 64_000
Scalar = str | int | float | bool


class ThingsBoardConfig(UplinkConfig):
    """``sync.uplink`` for ``transport: thingsboard``.

    Example::

        sync:
          uplink: {transport: thingsboard, url: mqtts://tb.example:8883, access_token: ${env:TB_GATEWAY_TOKEN},
                   attributes: {inv1: {model: SE10K, serial: "7F1234"}}}
    """

    transport: Literal["thingsboard"] = "thingsboard"
    access_token: SecretStr | None = Field(None, description="the gateway device's access token (the MQTT user name)")
    device_name: str = Field("{site}.{device}", description="ThingsBoard device name of a site device: "
                             "{site} and {device} are replaced (names are unique per tenant)")
    device_type: str = Field("default", description="ThingsBoard device profile of devices the gateway connects")
    attributes: dict[str, dict[str, Scalar]] = Field(
        default_factory=dict, description="static metadata per device (model, serial, firmware...), published as "
        "client attributes once and on change"
    )
    max_payload_bytes: int = Field(60_000, ge=1_000, description="largest telemetry message (ThingsBoard's default "
                                   "limit is 64 kB)")


def _scalar(value: Any) -> Any:
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return json.dumps(value, default=str, separators=(",", ":"))


class ThingsBoardTransport(MqttTransport):
    """ThingsBoard gateway over MQTT (QoS 1: each message is acknowledged before the outbox lets go)."""

    Config = ThingsBoardConfig
    native_envelope = False

    config: ThingsBoardConfig

    def __init__(self, config: ThingsBoardConfig, *, client_id: str, base_dir: Path | None = None):
        super().__init__(config, client_id=client_id, base_dir=base_dir)
        self._mqtt_up = False
        self._opening: asyncio.Task[None] | None = None
        self._connected_devices: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.dropped_readings = 0
        self.commands_refused = 0

    def _prepare(self, client: Any) -> None:
        if self.config.access_token is not None:
            client.username_pw_set(self.config.access_token.get_secret_value(), None)

    async def connect(self, on_link: Callable[[bool], None]) -> None:
        self._subscriptions["v1/gateway/rpc"] = self._on_rpc
        await super().connect(on_link)

    # -- names --------------------------------------------------------------------------------

    def tb_name(self, device: str) -> str:
        site = self.site.site_id if self.site is not None else ""
        return self.config.device_name.format(site=site, device=device)

    def _site_device(self, tb_name: str) -> str | None:
        for device in self._known_devices():
            if self.tb_name(device) == tb_name:
                return device
        return None

    def _known_devices(self) -> list[str]:
        return list(self.site.devices()) if self.site is not None else []

    # -- session ------------------------------------------------------------------------------

    def _set_link(self, up: bool, error: str | None) -> None:
        if not up:
            self._mqtt_up = False
            self._connected_devices.clear()
            super()._set_link(False, error)
            return
        self._mqtt_up = True
        if self._opening is None and not self.connected:
            self._opening = asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        try:
            futures = [self._publish_now("v1/gateway/connect", self._connect_doc(d)) for d in self._known_devices()]
            self._connected_devices.update(self._known_devices())
            futures += self._attribute_updates()
            await asyncio.gather(*futures)
        except ConnectionError as e:
            log.debug("thingsboard: session not opened (%s); trying again on the next connection", e)
            return
        finally:
            self._opening = None
        if self._mqtt_up and not self.connected:
            self.connected = True
            if self._on_link is not None:
                self._on_link(True)

    def _connect_doc(self, device: str) -> dict[str, Any]:
        return {"device": self.tb_name(device), "type": self.config.device_type}

    def attributes_of(self, device: str) -> dict[str, Any]:
        """Client attributes of a site device: its static metadata and its points' units, limits, descriptions."""
        attributes: dict[str, Any] = dict(self.config.attributes.get(device, {}))
        config = self.site.devices().get(device) if self.site is not None else None
        if config is not None:
            for point, spec in config.points.items():
                if spec.unit:
                    attributes[f"{point}.unit"] = spec.unit
                if spec.description:
                    attributes[f"{point}.description"] = spec.description
                if spec.limits is not None and spec.limits.min is not None:
                    attributes[f"{point}.min"] = spec.limits.min
                if spec.limits is not None and spec.limits.max is not None:
                    attributes[f"{point}.max"] = spec.limits.max
                if spec.writable:
                    attributes[f"{point}.writable"] = True
        return attributes

    def _published_file(self) -> Path | None:
        return None if self.site is None else self.site.store_dir / "thingsboard-attributes.json"

    def _attribute_updates(self) -> list[asyncio.Future[None]]:
        """Publish each device's attributes that changed since this site last published them."""
        path = self._published_file()
        try:
            published = json.loads(path.read_text()) if path is not None and path.exists() else {}
        except (OSError, ValueError):
            published = {}
        futures = []
        changed = {}
        for device in self._known_devices():
            attributes = {k: _scalar(v) for k, v in self.attributes_of(device).items()}
            digest = hashlib.sha256(json.dumps(attributes, sort_keys=True).encode()).hexdigest()
            if attributes and published.get(device) != digest:
                futures.append(self._publish_now("v1/gateway/attributes", {self.tb_name(device): attributes}))
                changed[device] = digest
        if changed and path is not None:

            def remember(future: asyncio.Future[list[None]]) -> None:
                if future.cancelled() or future.exception() is not None:
                    return
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps({**published, **changed}))
                except OSError as e:
                    log.warning("thingsboard: could not remember published attributes in %s (%s)", path, e)

            asyncio.gather(*futures).add_done_callback(remember)
        return futures

    async def set_attributes(self, device: str, attributes: dict[str, Any]) -> None:
        """Static metadata read at run time: published at once (ThingsBoard keeps the last value)."""
        if self.connected:
            await self._publish_now("v1/gateway/attributes", {self.tb_name(device): {k: _scalar(v) for k, v in attributes.items()}})

    # -- data ---------------------------------------------------------------------------------

    def _publish_now(self, topic: str, doc: Any) -> asyncio.Future[None]:
        if self._client is None or not self._mqtt_up:
            raise ConnectionError(f"ThingsBoard uplink {self.config.url} is not connected")
        data = json.dumps(doc, separators=(",", ":"), default=str).encode()
        future = self._hand_to_paho(topic, data)
        self.bytes_sent += len(data) + len(topic)
        return future

    def format(self, records: list[Record]) -> list[tuple[str, Any]]:
        """``v1/gateway/connect`` for devices not connected yet, then telemetry messages: (topic, document)."""
        entries: dict[str, dict[int, dict[str, Any]]] = {}
        for record in records:
            try:
                readings = record_readings(record)
            except EnvelopeError as e:
                self._count("corrupt_record", f"outbox record {record.stream}#{record.seq} is corrupt ({e}); skipped")
                continue
            for reading in readings:
                device, _, key = reading.topic.partition("/")
                if not key:
                    device, key = "gateway", reading.topic
                value = _scalar(reading.value) if reading.good else None
                if value is None:
                    self.dropped_readings += 1
                    continue
                entries.setdefault(device, {}).setdefault(int(round(reading.ts * 1000)), {})[key] = value
        out: list[tuple[str, Any]] = []
        for device in entries:
            if device not in self._connected_devices:
                out.append(("v1/gateway/connect", self._connect_doc(device)))
                self._connected_devices.add(device)
        budget = self.config.max_payload_bytes
        doc: dict[str, list[dict[str, Any]]] = {}
        size = 2
        for device, by_ts in entries.items():
            name = self.tb_name(device)
            for ts in sorted(by_ts):
                entry = {"ts": ts, "values": by_ts[ts]}
                cost = len(json.dumps(entry, separators=(",", ":"), default=str)) + len(name) + 6
                if doc and size + cost > budget:
                    out.append(("v1/gateway/telemetry", doc))
                    doc, size = {}, 2
                doc.setdefault(name, []).append(entry)
                size += cost
        if doc:
            out.append(("v1/gateway/telemetry", doc))
        return out

    def _publish_formatted(self, topic: str, message: Any) -> list[asyncio.Future[None]]:
        return [self._publish_now(topic, message)]

    # -- RPC ----------------------------------------------------------------------------------

    def _count(self, kind: str, message: str) -> None:
        if self.site is not None:
            self.site.metrics.errors.labels(part="thingsboard", kind=kind).inc()
        log.warning("thingsboard: %s", message)

    def _on_rpc(self, topic: str, payload: bytes) -> None:
        if len(payload) > MAX_RPC_BYTES:
            self._count("rpc_refused", f"an RPC of {len(payload)} bytes is refused unread")
            return
        try:
            doc = json.loads(payload)
        except ValueError:
            self._count("rpc_refused", "an RPC that is not JSON is refused")
            return
        if not isinstance(doc, dict):
            self._count("rpc_refused", "an RPC that is not a JSON object is refused")
            return
        data = doc.get("data")
        if not isinstance(data, dict) or "method" not in data:
            return  # our own response, echoed by the broker, or the server's acknowledgement
        task = asyncio.get_running_loop().create_task(self._rpc(doc.get("device"), data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _rpc(self, tb_device: Any, data: dict[str, Any]) -> None:
        rpc_id = data.get("id")
        method = data.get("method")
        given = data.get("params")
        params: dict[str, Any] = given if isinstance(given, dict) else {}
        device = self._site_device(tb_device) if isinstance(tb_device, str) else None
        answer: dict[str, Any]
        if not isinstance(rpc_id, int) or isinstance(rpc_id, bool):
            self._count("rpc_refused", f"RPC to {tb_device!r} without an integer id is refused")
            return
        if method not in ("write", "set"):
            answer = {"success": False, "error": f"unknown method {method!r}: this gateway takes 'write' (or 'set') "
                      f"with params {{\"point\": ..., \"value\": ...}}"}
        elif not isinstance(params.get("point"), str) or "value" not in params:
            answer = {"success": False, "error": "params must be {\"point\": <name>, \"value\": <value>}"}
        elif self.site is None or self.site.execute_command is None:
            answer = {"success": False, "error": "this site takes no writes from the uplink"}
        else:
            # an unknown device goes to the guard too: it refuses, names the known ones, and audits
            target = device if device is not None else str(tb_device)
            result = await self.site.execute_command(target, params["point"], params["value"])
            answer = ({"success": True, "value": _scalar(result.readback if result.readback is not None else result.value)}
                      if result.ok else {"success": False, "error": f"{result.status.value}: {result.message}"})
        if not answer["success"]:
            self.commands_refused += 1
            self._count("rpc_refused", f"RPC {method!r} to {tb_device!r}: {answer['error']}")
        if self._mqtt_up:
            try:
                await self._publish_now("v1/gateway/rpc", {"device": tb_device, "id": rpc_id, "data": answer})
            except ConnectionError:
                pass  # the server times the RPC out

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._mqtt_up:
            futures = []
            try:
                for device in sorted(self._connected_devices):
                    futures.append(self._publish_now("v1/gateway/disconnect", {"device": self.tb_name(device)}))
            except ConnectionError:
                pass
            if futures:
                await asyncio.wait(futures, timeout=1.0)
        await super().close()
