"""edgeplane-mqtt: the MQTT connector (MQTT 3.1.1/5, TLS, topic mapping, JSON and Sparkplug B).

Use it in a site file as ``connector: mqtt`` (see :mod:`edgeplane_mqtt.config` and the README).
:mod:`edgeplane_mqtt.testing` starts a Mosquitto broker for tests.
"""

from edgeplane_mqtt.config import JsonOptions, MqttConfig, MqttPoint, SparkplugOptions, TopicMapping
from edgeplane_mqtt.connector import MqttConnector

__all__ = ["JsonOptions", "MqttConfig", "MqttConnector", "MqttPoint", "SparkplugOptions", "TopicMapping"]
