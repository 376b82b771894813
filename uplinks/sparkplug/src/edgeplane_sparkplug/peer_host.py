"""An independent Sparkplug B host application, built on pysparkplug (not on edgeplane's codec).

Runs in its own virtual environment (pysparkplug needs paho-mqtt 1.x; edgeplane uses 2.x):
``<peer python> peer_host.py HOST PORT HOST_ID``. It prints every Sparkplug message it receives
as one JSON line (decoded by pysparkplug, aliases resolved from the births), and takes
commands as JSON lines on stdin: ``{"op": "state", "online": true}``, ``{"op": "rebirth",
"group": g, "node": n}``, ``{"op": "dcmd", "group": g, "node": n, "device": d, "name": m,
"datatype": "FLOAT", "value": 50}``.
"""

import json
import sys
import threading

import pysparkplug as spb
from pysparkplug._protobuf import Payload as RawPayload  # the peer's own schema, for metric properties

host, port, host_id = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()


def emit(doc):
    with lock:
        sys.stdout.write(json.dumps(doc, default=str) + "\n")
        sys.stdout.flush()


def properties(raw, name):
    for metric in RawPayload.FromString(raw).metrics:
        if metric.name == name and metric.HasField("properties"):
            out = {}
            for key, value in zip(metric.properties.keys, metric.properties.values):
                which = value.WhichOneof("value")
                out[key] = getattr(value, which) if which else None
            return out
    return {}


client = spb.Client(client_id=f"host-{host_id}")
state_topic = spb.Topic(message_type=spb.MessageType.STATE, sparkplug_host_id=host_id)


def on_message(_client, message):
    if isinstance(message, dict):
        emit({"type": "undecodable", **message})
        return
    payload = message.payload
    doc = {"topic": str(message.topic), "type": str(message.topic.message_type),
           "device": message.topic.device_id, "node": message.topic.edge_node_id,
           "seq": getattr(payload, "seq", None), "metrics": []}
    metrics = list(getattr(payload, "metrics", ()))
    if hasattr(payload, "bd_seq_metric"):  # NDEATH
        metrics.append(payload.bd_seq_metric)
    for metric in metrics:
        doc["metrics"].append({"name": metric.name, "alias": metric.alias, "datatype": metric.datatype.name,
                               "value": metric.value, "is_null": metric.is_null,
                               "is_historical": metric.is_historical, "timestamp": metric.timestamp})
    if doc["type"] in ("NBIRTH", "DBIRTH"):
        for m in doc["metrics"]:
            m["properties"] = properties(raw_payloads.get(doc["topic"], b""), m["name"])
    emit(doc)


raw_payloads: dict[str, bytes] = {}
_handle = client._handle_message


def keep_raw(mqtt_message):
    raw_payloads[mqtt_message.topic] = mqtt_message.payload
    try:
        return _handle(mqtt_message)
    except Exception as e:  # a payload pysparkplug cannot decode must not end this host's network thread
        return {"undecodable": mqtt_message.topic, "error": repr(e)}


client._handle_message = keep_raw
client.subscribe(spb.Topic(group_id="#"), spb.QoS.AT_LEAST_ONCE, on_message)
client.connect(host, port=port, blocking=False, callback=lambda c: emit({"type": "connected"}))


def now():
    return spb.get_current_timestamp()


for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "state":
        client.publish(spb.Message(topic=state_topic, payload=spb.State(timestamp=now(), online=cmd["online"]),
                                   qos=spb.QoS.AT_LEAST_ONCE, retain=True))
    elif cmd["op"] == "rebirth":
        metric = spb.Metric(timestamp=now(), name="Node Control/Rebirth", datatype=spb.DataType.BOOLEAN, value=True)
        topic = spb.Topic(group_id=cmd["group"], message_type=spb.MessageType.NCMD, edge_node_id=cmd["node"])
        client.publish(spb.Message(topic=topic, payload=spb.NCmd(timestamp=now(), metrics=(metric,)),
                                   qos=spb.QoS.AT_LEAST_ONCE, retain=False), include_dtypes=True)
    elif cmd["op"] == "dcmd":
        metric = spb.Metric(timestamp=now(), name=cmd["name"], datatype=spb.DataType[cmd["datatype"]], value=cmd["value"])
        topic = spb.Topic(group_id=cmd["group"], message_type=spb.MessageType.DCMD, edge_node_id=cmd["node"],
                          device_id=cmd["device"])
        client.publish(spb.Message(topic=topic, payload=spb.DCmd(timestamp=now(), metrics=(metric,)),
                                   qos=spb.QoS.AT_LEAST_ONCE, retain=False), include_dtypes=True)
    emit({"type": "done", "op": cmd["op"]})
