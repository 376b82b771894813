"""Registers the ``mqtt`` connector with edgeplane (entry point ``edgeplane: mqtt``)."""

from __future__ import annotations

from edgeplane import hookimpl
from edgeplane_mqtt.connector import MqttConnector


@hookimpl
def edgeplane_register_connectors(register):
    register("mqtt", MqttConnector)
