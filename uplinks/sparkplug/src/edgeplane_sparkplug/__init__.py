"""Sparkplug B edge node uplink for edgeplane (``sync.uplink.transport: sparkplug``)."""

from __future__ import annotations

from edgeplane_sparkplug.config import SparkplugConfig
from edgeplane_sparkplug.transport import COMMAND_RESULT_METRIC, SparkplugTransport, sparkplug_type

__all__ = ["COMMAND_RESULT_METRIC", "SparkplugConfig", "SparkplugTransport", "sparkplug_type"]
