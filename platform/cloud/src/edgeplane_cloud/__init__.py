"""edgeplane-cloud: the cloud end of edgeplane's sync layer.

Two back ends behind one CLI (``edgeplane cloud ...``, ``edgeplane fleet ...``):

* **embedded** (:mod:`edgeplane_cloud.embedded`): one process, paho-mqtt against any broker,
  SQLite files; for a laptop and the reference deployments (``edgeplane cloud serve``).
* **scale-out**: a NATS JetStream cluster whose MQTT listener the sites publish to unchanged
  (:mod:`edgeplane_cloud.broker`), ingest worker processes sharing one durable pull consumer
  (:mod:`edgeplane_cloud.ingest`), PostgreSQL partitioned by time (:mod:`edgeplane_cloud.pgstore`).

Fleet operations (labels, staged rollouts with a health gate, per-site revisions) are in
:mod:`edgeplane_cloud.fleet`; the fleet console in :mod:`edgeplane_cloud.console`.
The edge host never imports this package.
"""

__version__ = "0.1.0"
