"""Host-side Sparkplug B state: which edge nodes and devices are alive, their aliases and sequence.

:class:`SparkplugSession` takes every Sparkplug message of the subscribed groups and returns an
:class:`Outcome`: readings to publish, metrics that went bad (a death), drops to count, and
whether to ask a node for a rebirth (``NCMD Node Control/Rebirth``), which happens when

* a message's ``seq`` is not the previous one + 1 (mod 256): a message was lost;
* a data message names an alias that no birth defined;
* data arrives from a node or device that has not been born since we connected.

It does no I/O and keeps no clock: the caller passes ``now`` and publishes what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError as ProtobufDecodeError

from edgeplane_mqtt.decoders import DecodeError
from edgeplane_mqtt.sparkplug import BDSEQ_METRIC, NAMESPACE, REBIRTH_METRIC, DataType, Payload

__all__ = ["Outcome", "SparkplugReading", "SparkplugSession", "encode_command", "parse_topic", "rebirth_request"]

_SIGNED_32 = {DataType.Int8, DataType.Int16, DataType.Int32}
_MESSAGE_TYPES = {"NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD"}


@dataclass(frozen=True, slots=True)
class SparkplugReading:
    group: str
    node: str
    device: str  # "" for a node-level metric
    metric: str
    ts: float
    value: Any  # float, bool, str, or None for a null value (bad quality)
    datatype: int


@dataclass
class Outcome:
    readings: list[SparkplugReading] = field(default_factory=list)
    went_bad: list[tuple[str, str, str, str]] = field(default_factory=list)  # (group, node, device, metric)
    drops: list[tuple[str, str]] = field(default_factory=list)  # (reason, message): parts of the message dropped
    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, message): kept, but worth counting
    rebirth: tuple[str, str] | None = None  # (group, node) to ask for a rebirth
    liveness_changed: bool = False


@dataclass
class _Device:
    alive: bool = True
    metrics: dict[str, int] = field(default_factory=dict)  # name -> datatype


@dataclass
class _Node:
    alive: bool = False
    seq: int | None = None
    bdseq: int | None = None
    aliases: dict[int, str] = field(default_factory=dict)  # alias -> metric name, node and devices alike
    metrics: dict[str, int] = field(default_factory=dict)  # node metric name -> datatype
    devices: dict[str, _Device] = field(default_factory=dict)
    alias_owner: dict[int, str] = field(default_factory=dict)  # alias -> device ("" for the node)
    last_rebirth_request: float = float("-inf")


def parse_topic(topic: str) -> tuple[str, str, str, str] | None:
    """``spBv1.0/<group>/<type>/<node>[/<device>]`` -> (group, type, node, device), else None."""
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE or parts[2] not in _MESSAGE_TYPES:
        return None
    return parts[1], parts[2], parts[3], parts[4] if len(parts) == 5 else ""


class SparkplugSession:
    """State of every edge node seen on the subscribed Sparkplug topics."""

    def __init__(self, rebirth: bool = True, rebirth_interval: float = 5.0):
        self.rebirth_enabled = rebirth
        self.rebirth_interval = rebirth_interval
        self.nodes: dict[tuple[str, str], _Node] = {}
        self.rebirths_requested = 0

    # -- queries ------------------------------------------------------------------------------

    def dead(self) -> list[str]:
        """What is known and not alive, as ``group/node`` and ``group/node/device``."""
        out = []
        for (group, node), state in self.nodes.items():
            if not state.alive:
                out.append(f"{group}/{node}")
                continue
            out.extend(f"{group}/{node}/{d}" for d, dev in state.devices.items() if not dev.alive)
        return out

    def datatype(self, group: str, node: str, device: str, metric: str) -> int | None:
        state = self.nodes.get((group, node))
        if state is None:
            return None
        if device:
            dev = state.devices.get(device)
            return dev.metrics.get(metric) if dev else None
        return state.metrics.get(metric)

    def alive(self, group: str, node: str, device: str = "") -> bool:
        state = self.nodes.get((group, node))
        if state is None or not state.alive:
            return False
        return not device or (device in state.devices and state.devices[device].alive)

    # -- messages -----------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, now: float) -> Outcome:
        """Digest one message; raises DecodeError if it is not a Sparkplug B message at all."""
        parsed = parse_topic(topic)
        if parsed is None:
            raise DecodeError("not_sparkplug_topic", "topic is not spBv1.0/<group>/<type>/<node>[/<device>]")
        group, kind, node, device = parsed
        if kind in ("NCMD", "DCMD"):
            return Outcome()  # commands (ours, or another host's) carry no readings
        if kind[0] == "D" and not device:
            raise DecodeError("not_sparkplug_topic", f"{kind} without a device id in the topic")
        if kind[0] == "N" and device:
            raise DecodeError("not_sparkplug_topic", f"{kind} with a device id in the topic")
        try:
            message = Payload.FromString(payload)
        except (ProtobufDecodeError, ValueError, RuntimeError) as e:
            raise DecodeError("not_sparkplug", f"payload does not parse as a Sparkplug B payload ({e})") from None
        out = Outcome()
        key = (group, node)
        state = self.nodes.get(key)
        if kind == "NBIRTH":
            self._node_birth(key, message, now, out)
        elif kind == "NDEATH":
            self._node_death(key, state, message, out)
        elif state is None or not state.alive:
            out.drops.append(("unknown_node", f"{kind} from {group}/{node}, which has not sent NBIRTH since we connected"))
            self._ask_rebirth(key, state, now, out)
        else:
            self._check_seq(key, state, message, kind, now, out)
            if kind == "DBIRTH":
                self._device_birth(key, state, device, message, now, out)
            elif kind == "DDEATH":
                self._device_death(key, state, device, out)
            elif kind == "NDATA":
                self._data(key, state, "", state.metrics, message, now, out)
            elif kind == "DDATA":
                dev = state.devices.get(device)
                if dev is None or not dev.alive:
                    out.drops.append(("unknown_device", f"DDATA from {group}/{node}/{device}, which has not sent DBIRTH"))
                    self._ask_rebirth(key, state, now, out)
                else:
                    self._data(key, state, device, dev.metrics, message, now, out)
        return out

    def _node_birth(self, key: tuple[str, str], message: Any, now: float, out: Outcome) -> None:
        previous = self.nodes.get(key)
        state = _Node(alive=True, seq=message.seq if message.HasField("seq") else None)
        if previous is not None:
            state.last_rebirth_request = previous.last_rebirth_request
            # a rebirth makes every device of the node re-birth; until then they are not alive
            state.devices = {d: _Device(alive=False, metrics=dev.metrics) for d, dev in previous.devices.items()}
        self.nodes[key] = state
        out.liveness_changed = True
        for metric in message.metrics:
            if metric.name == BDSEQ_METRIC and metric.WhichOneof("value") in ("long_value", "int_value"):
                state.bdseq = int(getattr(metric, metric.WhichOneof("value")))
        self._birth_metrics(key, state, "", state.metrics, message, now, out)

    def _device_birth(self, key: tuple[str, str], state: _Node, device: str, message: Any, now: float, out: Outcome) -> None:
        dev = _Device(alive=True)
        # aliases of an earlier birth of this device are replaced by this one's
        for alias in [a for a, owner in state.alias_owner.items() if owner == device]:
            state.aliases.pop(alias, None)
            state.alias_owner.pop(alias, None)
        state.devices[device] = dev
        out.liveness_changed = True
        self._birth_metrics(key, state, device, dev.metrics, message, now, out)

    def _birth_metrics(self, key: tuple[str, str], state: _Node, device: str, metrics: dict[str, int],
                       message: Any, now: float, out: Outcome) -> None:
        default_ts = message.timestamp / 1000.0 if message.HasField("timestamp") else now
        for metric in message.metrics:
            if not metric.name:
                out.drops.append(("unnamed_metric", f"a birth metric of {key[0]}/{key[1]}{'/' + device if device else ''} has no name"))
                continue
            metrics[metric.name] = metric.datatype
            if metric.HasField("alias"):
                state.aliases[metric.alias] = metric.name
                state.alias_owner[metric.alias] = device
            self._reading(key, device, metric.name, metric.datatype, metric, default_ts, out)

    def _data(self, key: tuple[str, str], state: _Node, device: str, metrics: dict[str, int],
              message: Any, now: float, out: Outcome) -> None:
        default_ts = message.timestamp / 1000.0 if message.HasField("timestamp") else now
        where = f"{key[0]}/{key[1]}{'/' + device if device else ''}"
        for metric in message.metrics:
            name = metric.name
            if not name:
                if not metric.HasField("alias"):
                    out.drops.append(("unnamed_metric", f"a metric of {where} has neither name nor alias"))
                    continue
                name = state.aliases.get(metric.alias, "")
                if not name or state.alias_owner.get(metric.alias) != device:
                    out.drops.append(("unknown_alias", f"alias {metric.alias} of {where} was not defined by a birth"))
                    self._ask_rebirth(key, state, now, out)
                    continue
            datatype = metric.datatype or metrics.get(name, 0)
            if name not in metrics:
                metrics[name] = datatype
            self._reading(key, device, name, datatype, metric, default_ts, out)

    def _reading(self, key: tuple[str, str], device: str, name: str, datatype: int, metric: Any,
                 default_ts: float, out: Outcome) -> None:
        ts = metric.timestamp / 1000.0 if metric.HasField("timestamp") else default_ts
        if metric.is_null:
            value: Any = None
        else:
            which = metric.WhichOneof("value")
            if which is None:
                out.drops.append(("missing_value", f"metric {name!r} of {key[0]}/{key[1]} carries no value"))
                return
            if which in ("bytes_value", "dataset_value", "template_value", "extension_value"):
                out.drops.append(("unsupported_type", f"metric {name!r}: {which.removesuffix('_value')} values are not supported"))
                return
            value = getattr(metric, which)
            if which == "int_value" and datatype in _SIGNED_32 and value >= 1 << 31:
                value -= 1 << 32
            elif which == "long_value" and datatype == DataType.Int64 and value >= 1 << 63:
                value -= 1 << 64
        out.readings.append(SparkplugReading(key[0], key[1], device, name, ts, value, datatype))

    def _node_death(self, key: tuple[str, str], state: _Node | None, message: Any, out: Outcome) -> None:
        if state is None or not state.alive:
            return
        bdseq = None
        for metric in message.metrics:
            if metric.name == BDSEQ_METRIC and metric.WhichOneof("value") in ("long_value", "int_value"):
                bdseq = int(getattr(metric, metric.WhichOneof("value")))
        if bdseq is not None and state.bdseq is not None and bdseq != state.bdseq:
            # the will of an older connection, arriving after the node reconnected: not a death
            out.problems.append(("stale_death", f"NDEATH of {key[0]}/{key[1]} with bdSeq {bdseq}, but the node was born with {state.bdseq}"))
            return
        state.alive = False
        state.seq = None
        out.liveness_changed = True
        out.went_bad.extend((key[0], key[1], "", m) for m in state.metrics)
        for device, dev in state.devices.items():
            if dev.alive:
                dev.alive = False
                out.went_bad.extend((key[0], key[1], device, m) for m in dev.metrics)

    def _device_death(self, key: tuple[str, str], state: _Node, device: str, out: Outcome) -> None:
        dev = state.devices.get(device)
        if dev is None or not dev.alive:
            return
        dev.alive = False
        out.liveness_changed = True
        out.went_bad.extend((key[0], key[1], device, m) for m in dev.metrics)

    def _check_seq(self, key: tuple[str, str], state: _Node, message: Any, kind: str, now: float, out: Outcome) -> None:
        if not message.HasField("seq"):
            return
        seq = message.seq
        if state.seq is not None and seq != (state.seq + 1) % 256:
            out.problems.append(("sequence_gap", f"{kind} of {key[0]}/{key[1]} has seq {seq}, expected {(state.seq + 1) % 256}: a message was lost"))
            self._ask_rebirth(key, state, now, out)
        state.seq = seq % 256

    def _ask_rebirth(self, key: tuple[str, str], state: _Node | None, now: float, out: Outcome) -> None:
        if not self.rebirth_enabled:
            return
        if state is None:
            state = self.nodes.setdefault(key, _Node(alive=False))
        if now - state.last_rebirth_request >= self.rebirth_interval:
            state.last_rebirth_request = now
            out.rebirth = key
            self.rebirths_requested += 1


# ---------------------------------------------------------------------------------------------
# messages a host sends


def rebirth_request(now: float) -> bytes:
    """The payload of ``NCMD`` that asks an edge node to publish its births again."""
    payload = Payload(timestamp=int(now * 1000))
    payload.metrics.add(name=REBIRTH_METRIC, datatype=DataType.Boolean, boolean_value=True, timestamp=int(now * 1000))
    return payload.SerializeToString()


def encode_command(metric: str, value: Any, datatype: int | None, now: float) -> bytes:
    """The payload of an ``NCMD``/``DCMD`` setting ``metric`` to ``value``.

    ``datatype`` is the one the metric was born with; without it the type is taken from the value.
    """
    payload = Payload(timestamp=int(now * 1000))
    m = payload.metrics.add(name=metric, timestamp=int(now * 1000))
    if not datatype:
        datatype = (DataType.Boolean if isinstance(value, bool) else DataType.Int64 if isinstance(value, int)
                    else DataType.Double if isinstance(value, float) else DataType.String)
    m.datatype = datatype
    dt = DataType(datatype) if datatype in DataType._value2member_map_ else DataType.Unknown
    if dt is DataType.Boolean:
        m.boolean_value = bool(value)
    elif dt in (DataType.Float,):
        m.float_value = float(value)
    elif dt is DataType.Double:
        m.double_value = float(value)
    elif dt in (DataType.String, DataType.Text, DataType.UUID):
        m.string_value = str(value)
    elif dt in _SIGNED_32 or dt in (DataType.UInt8, DataType.UInt16):
        m.int_value = int(round(value)) & 0xFFFFFFFF
    elif dt in (DataType.Int64, DataType.UInt32, DataType.UInt64, DataType.DateTime):
        m.long_value = int(round(value)) & 0xFFFFFFFFFFFFFFFF
    else:
        raise ValueError(f"metric {metric!r} has data type {datatype}, which commands cannot carry")
    return payload.SerializeToString()
