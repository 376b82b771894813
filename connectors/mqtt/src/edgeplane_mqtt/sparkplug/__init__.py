"""Sparkplug B: the payload schema (compiled from ``sparkplug_b.proto`` at build time) and topics.

``Payload`` is the protobuf message class of every Sparkplug B message; :mod:`.session` keeps
the host-side state of edge nodes (births, aliases, sequence numbers, deaths).
"""

from __future__ import annotations

import enum

try:
    from edgeplane_mqtt.sparkplug.sparkplug_b_pb2 import Payload
except ImportError as e:  # pragma: no cover - only when the build step did not run
    raise ImportError(
        "edgeplane_mqtt.sparkplug.sparkplug_b_pb2 is missing: it is generated from sparkplug_b.proto when "
        "edgeplane-mqtt is installed; reinstall it (pip install -e connectors/mqtt)"
    ) from e

__all__ = ["NAMESPACE", "DataType", "Payload", "REBIRTH_METRIC", "BDSEQ_METRIC"]

NAMESPACE = "spBv1.0"
REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"


class DataType(enum.IntEnum):
    """Sparkplug B metric data types (the ``datatype`` field)."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
