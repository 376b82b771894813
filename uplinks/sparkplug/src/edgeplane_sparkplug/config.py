"""``sync.uplink`` for ``transport: sparkplug``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgeplane.sync import UplinkConfig

__all__ = ["SparkplugConfig"]

_ID = r"^[^/+#]{1,128}$"
Scalar = str | int | float | bool


class SparkplugConfig(UplinkConfig):
    """A Sparkplug B edge node: this site is one node of ``group_id``; each device is a Sparkplug device.

    Example::

        sync:
          uplink: {transport: sparkplug, url: mqtt://scada.example:1883, group_id: plant-07,
                   primary_host: scada, attributes: {inv1: {model: SE10K, serial: "7F1234", firmware: 4.13}}}
    """

    transport: Literal["sparkplug"] = "sparkplug"
    group_id: str = Field(pattern=_ID, description="Sparkplug group id (no '/', '+', '#')")
    edge_node_id: str | None = Field(None, pattern=_ID, description="Sparkplug edge node id; default: the site id")
    primary_host: str | None = Field(
        None, pattern=_ID, description="host application id whose STATE gates sending: while it is offline, "
        "data is stored in the outbox and sent (marked historical) once it is back"
    )
    attributes: dict[str, dict[str, Scalar]] = Field(
        default_factory=dict, description="static metadata per device (model, serial, firmware...), published as "
        "'Properties/<key>' metrics in its DBIRTH; the key '' is the edge node itself"
    )
    max_metrics_per_message: int = Field(500, ge=1, le=10_000, description="metrics per NDATA/DDATA message at most")
