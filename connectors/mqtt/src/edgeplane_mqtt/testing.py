"""The MQTT plugin's test kit: a publishing client, a Sparkplug B edge node, and their fixtures.

The broker itself is the core's (:class:`edgeplane.testing.Mosquitto`, fixture ``mqtt_broker``),
re-exported here for this package's tests::

    from edgeplane_mqtt.testing import Mosquitto, Publisher, make_certificates

    with Mosquitto(tmp_path) as broker:                       # mqtt://127.0.0.1:<free port>
        Publisher(broker).send("weather/t", {"temp": 21.5})

The fixture ``mqtt_publisher`` is opt-in: a conftest.py imports it
(``from edgeplane_mqtt.testing import mqtt_publisher  # noqa: F401``)::

    async def test_survives_a_broker_outage(edgeplane_host, mqtt_broker, mqtt_publisher):
        broker = mqtt_broker()                          # mqtt://127.0.0.1:<free port>, started
        publisher = mqtt_publisher(broker)              # a paho client: publisher.send(topic, payload)
        ...
        await broker_outage(broker, seconds=2)          # stopped, then started on the same port
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edgeplane.testing import Mosquitto, MosquittoError, TlsFiles, broker_outage, free_port, make_certificates

__all__ = ["Mosquitto", "MosquittoError", "Publisher", "SparkplugEdgeNode", "TlsFiles", "broker_outage", "free_port",
           "make_certificates", "mqtt_publisher"]


class Publisher:
    """A plain paho client that publishes test messages (QoS 1 by default, waits for the ack)."""

    def __init__(self, broker: Mosquitto, **tls: Any):
        """``tls``: keyword arguments of paho's ``tls_set`` (ca_certs, certfile, keyfile)."""
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="")
        if tls:
            self.client.tls_set(**tls)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, topic: str, payload: Any, qos: int = 1) -> None:
        import json

        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos)
        if qos:
            info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class SparkplugEdgeNode:
    """A Sparkplug B edge node that publishes births, data and deaths, for tests and demos.

    ``devices`` maps device ids to {metric: initial value}; ``node_metrics`` are the node's own.
    Every metric gets an alias; data messages use aliases only, as real nodes do. A rebirth
    request (NCMD ``Node Control/Rebirth``) makes it publish its births again; every command
    it receives is kept in :attr:`commands` as (topic, Payload).
    """

    def __init__(self, host: str, port: int, group: str, node: str, *, devices: dict[str, dict[str, Any]] | None = None,
                 node_metrics: dict[str, Any] | None = None, tls_ca: str | None = None):
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        from edgeplane_mqtt.sparkplug import NAMESPACE

        self.host, self.port, self.group, self.node = host, port, group, node
        self.devices = {d: dict(m) for d, m in (devices or {}).items()}
        self.node_metrics = dict(node_metrics or {})
        self.prefix = f"{NAMESPACE}/{group}"
        self.seq = 0
        self.bdseq = 0
        self.aliases: dict[tuple[str, str], int] = {}
        for i, key in enumerate([("", m) for m in self.node_metrics] + [(d, m) for d, ms in self.devices.items() for m in ms]):
            self.aliases[key] = i + 1
        self.commands: list[tuple[str, Any]] = []
        self.rebirths = 0
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{group}-{node}")
        if tls_ca:
            self.client.tls_set(ca_certs=tls_ca)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect

    # -- payloads -------------------------------------------------------------------------------

    @staticmethod
    def _set_value(metric: Any, value: Any) -> None:
        from edgeplane_mqtt.sparkplug import DataType

        if isinstance(value, bool):
            metric.datatype, metric.boolean_value = DataType.Boolean, value
        elif isinstance(value, int):
            metric.datatype, metric.long_value = DataType.Int64, value & 0xFFFFFFFFFFFFFFFF
        elif isinstance(value, float):
            metric.datatype, metric.double_value = DataType.Double, value
        else:
            metric.datatype, metric.string_value = DataType.String, str(value)

    def _payload(self, seq: bool = True) -> Any:
        from edgeplane_mqtt.sparkplug import Payload

        payload = Payload(timestamp=int(time.time() * 1000))
        if seq:
            payload.seq = self.seq
            self.seq = (self.seq + 1) % 256
        return payload

    def _death_payload(self) -> bytes:
        from edgeplane_mqtt.sparkplug import BDSEQ_METRIC, DataType, Payload

        payload = Payload(timestamp=int(time.time() * 1000))
        payload.metrics.add(name=BDSEQ_METRIC, datatype=DataType.Int64, long_value=self.bdseq)
        return payload.SerializeToString()

    # -- lifecycle ------------------------------------------------------------------------------

    def connect(self, birth: bool = True) -> None:
        """Connect (with NDEATH as the will) and publish the births."""
        self.client.will_set(f"{self.prefix}/NDEATH/{self.node}", self._death_payload(), qos=1)
        self._born = threading.Event()
        self._birth_on_connect = birth
        self.client.connect(self.host, self.port, keepalive=5)
        self.client.loop_start()
        if birth and not self._born.wait(10):
            raise TimeoutError(f"edge node {self.node} could not connect to {self.host}:{self.port}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        client.subscribe([(f"{self.prefix}/NCMD/{self.node}", 0), (f"{self.prefix}/DCMD/{self.node}/#", 0)])
        if self._birth_on_connect:
            self.birth()
        self._born.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        from edgeplane_mqtt.sparkplug import REBIRTH_METRIC, Payload

        payload = Payload.FromString(message.payload)
        with self._lock:
            self.commands.append((message.topic, payload))
        if "/NCMD/" in message.topic and any(m.name == REBIRTH_METRIC and m.boolean_value for m in payload.metrics):
            self.rebirths += 1
            self.birth()

    def birth(self) -> None:
        """Publish NBIRTH (seq 0) and a DBIRTH for every device."""
        from edgeplane_mqtt.sparkplug import BDSEQ_METRIC, REBIRTH_METRIC, DataType

        with self._lock:
            self.seq = 0
            payload = self._payload()
            payload.metrics.add(name=BDSEQ_METRIC, datatype=DataType.Int64, long_value=self.bdseq)
            payload.metrics.add(name=REBIRTH_METRIC, datatype=DataType.Boolean, boolean_value=False)
            for metric, value in self.node_metrics.items():
                m = payload.metrics.add(name=metric, alias=self.aliases[("", metric)])
                self._set_value(m, value)
            self.client.publish(f"{self.prefix}/NBIRTH/{self.node}", payload.SerializeToString(), qos=0)
            for device in self.devices:
                self._device_birth(device)

    def _device_birth(self, device: str) -> None:
        payload = self._payload()
        for metric, value in self.devices[device].items():
            m = payload.metrics.add(name=metric, alias=self.aliases[(device, metric)])
            self._set_value(m, value)
        self.client.publish(f"{self.prefix}/DBIRTH/{self.node}/{device}", payload.SerializeToString(), qos=0)

    def data(self, device: str, values: dict[str, Any], *, skip_seq: int = 0, alias: int | None = None) -> None:
        """Publish DDATA (or NDATA for device ""), metrics by alias; ``skip_seq`` loses that many seq numbers."""
        with self._lock:
            self.seq = (self.seq + skip_seq) % 256
            payload = self._payload()
            for metric, value in values.items():
                m = payload.metrics.add(alias=alias if alias is not None else self.aliases[(device, metric)])
                self._set_value(m, value)
                m.ClearField("datatype")  # data messages rely on the birth's datatype
                (self.devices[device] if device else self.node_metrics)[metric] = value
            topic = f"{self.prefix}/DDATA/{self.node}/{device}" if device else f"{self.prefix}/NDATA/{self.node}"
            self.client.publish(topic, payload.SerializeToString(), qos=0)

    def device_death(self, device: str) -> None:
        with self._lock:
            self.client.publish(f"{self.prefix}/DDEATH/{self.node}/{device}", self._payload().SerializeToString(), qos=0)

    def death(self) -> None:
        """Publish NDEATH (as the broker would publish the will) and advance bdSeq."""
        with self._lock:
            self.client.publish(f"{self.prefix}/NDEATH/{self.node}", self._death_payload(), qos=1).wait_for_publish(5)
            self.bdseq = (self.bdseq + 1) % 256

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_publisher() -> Iterator[Callable[..., Publisher]]:
    """Factory: ``mqtt_publisher(broker, **tls)`` connects a publishing client; all close after the test."""
    publishers: list[Publisher] = []

    def factory(broker: Mosquitto, **tls: Any) -> Publisher:
        publisher = Publisher(broker, **tls)
        publishers.append(publisher)
        return publisher

    yield factory
    for publisher in publishers:
        publisher.close()
