"""Test kit: a stand-in for a self-hosted ThingsBoard's gateway side, to run a site against.

It subscribes to the gateway topics on a real broker, checks every message the gateway sends
against the documented gateway MQTT API (https://thingsboard.io/docs/reference/gateway-mqtt-api/),
keeps what it saw, and sends RPCs the way the server does::

    server = ThingsBoardStandIn(broker, "tb", "tb-secret")
    topic, doc = await server.wait(lambda t, d: t == "v1/gateway/telemetry")
    server.rpc("site.inv1", 1, "write", {"point": "WMaxLimPct", "value": 50})
    assert server.problems == []
"""

from __future__ import annotations

import asyncio
import json
import queue
from typing import Any

import paho.mqtt.client as mqtt

__all__ = ["GATEWAY_TOPICS", "ThingsBoardStandIn", "api_problems"]

GATEWAY_TOPICS = {"v1/gateway/connect", "v1/gateway/disconnect", "v1/gateway/attributes", "v1/gateway/telemetry",
                  "v1/gateway/rpc", "v1/gateway/claim", "v1/devices/me/telemetry", "v1/devices/me/attributes"}


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) and value == value


def api_problems(topic: str, doc: Any, connected: set[str]) -> list[str]:
    """What is wrong with one gateway message, by the documented API (empty: nothing)."""
    if topic not in GATEWAY_TOPICS:
        return [f"{topic}: not a gateway API topic"]
    if not isinstance(doc, dict):
        return [f"{topic}: the payload must be a JSON object"]
    if topic in ("v1/gateway/connect", "v1/gateway/disconnect"):
        allowed = {"device", "type"} if topic.endswith("connect") and "dis" not in topic else {"device"}
        if not isinstance(doc.get("device"), str) or set(doc) - allowed:
            return [f"{topic}: expected {{'device': name{', type: profile' if 'type' in allowed else ''}}}, got {doc}"]
        return []
    if topic == "v1/gateway/attributes":
        return [f"{topic}: {device!r} needs a flat object of scalar attributes, got {attrs!r}"
                for device, attrs in doc.items()
                if not isinstance(attrs, dict) or not all(_scalar(v) for v in attrs.values())]
    if topic == "v1/gateway/telemetry":
        problems = []
        for device, entries in doc.items():
            if device not in connected:
                problems.append(f"{topic}: telemetry of {device!r} before v1/gateway/connect")
            if not isinstance(entries, list):
                problems.append(f"{topic}: {device!r} needs a list of {{ts, values}}")
                continue
            for entry in entries:
                if (not isinstance(entry, dict) or set(entry) != {"ts", "values"} or not isinstance(entry["ts"], int)
                        or not isinstance(entry["values"], dict) or not all(_scalar(v) for v in entry["values"].values())):
                    problems.append(f"{topic}: {device!r}: bad entry {entry!r}")
        return problems
    if topic == "v1/gateway/rpc":
        if "method" in (doc.get("data") or {}):
            return []  # the server's own request, echoed
        if not isinstance(doc.get("device"), str) or not isinstance(doc.get("id"), int) or "data" not in doc:
            return [f"{topic}: an RPC reply is {{'device', 'id', 'data'}}, got {doc}"]
    return []


class ThingsBoardStandIn:
    """The server side: every gateway message checked and kept; RPCs sent as ThingsBoard sends them."""

    def __init__(self, broker: Any, user: str, password: str):
        self.messages: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.seen: list[tuple[str, Any]] = []
        self.problems: list[str] = []
        self.connected: set[str] = set()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="thingsboard-standin")
        self.client.username_pw_set(user, password)
        self.client.on_message = self._message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe([("v1/gateway/#", 1), ("v1/devices/me/#", 1)])
        self.client.loop_start()

    def _message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            doc = json.loads(message.payload)
        except ValueError:
            if message.topic != "v1/gateway/rpc":  # the server side may be sent junk by a test; the gateway never
                self.problems.append(f"{message.topic}: not JSON")
            return
        if message.topic == "v1/gateway/connect" and isinstance(doc, dict):
            self.connected.add(doc.get("device"))
        self.problems += api_problems(message.topic, doc, self.connected)
        if message.topic == "v1/gateway/disconnect" and isinstance(doc, dict):
            self.connected.discard(doc.get("device"))
        self.messages.put((message.topic, doc))

    async def wait(self, predicate: Any, timeout: float = 20.0) -> tuple[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    item = self.messages.get_nowait()
                except queue.Empty:
                    await asyncio.sleep(0.02)
                    continue
                self.seen.append(item)
                if predicate(*item):
                    return item

    def rpc(self, device: str, rpc_id: int, method: str, params: Any) -> None:
        payload = {"device": device, "data": {"id": rpc_id, "method": method, "params": params}}
        self.client.publish("v1/gateway/rpc", json.dumps(payload), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
