"""Cloud sync: durable store-and-forward up, signed config, models and commands down.

How it fits
===========

``bus -> policy (raw | aggregate | events | exception) -> Outbox (SQLite WAL) -> transport (MQTT QoS 1) -> broker``

The transport is a plugin (``sync.uplink.transport``): the native envelope over MQTT by default,
or a foreign format behind the same outbox (``edgeplane-sparkplug``, ``edgeplane-thingsboard``).

* A reading is stored (fsynced with ``durability: power``) before it counts as taken, and deleted
  only after the broker's PUBACK. The sync subscription on the bus uses the ``block`` overflow
  policy, so nothing is dropped between a connector and the outbox; what sits in that bounded
  queue (``queue_size`` messages) at a SIGKILL is the only thing not yet durable.
  :meth:`SyncService.enqueue` gives a producer a durable acknowledgement directly.
* Drain order: high, normal, low; within a class, data queued since the link came back goes
  before the backlog, and ``uplink.backlog_rate`` caps backlog readings per second.
* ``quota``: lowest priority, oldest first is evicted; ``ttl`` expiry; both counted
  (``edgeplane_sync_readings_total{stage="evicted"|"expired"}`` and ``edgeplane_dropped_total``)
  and persisted in the outbox, so counts survive restarts.
* Envelope (:mod:`edgeplane.sync.codec`): versioned, site id, per-record ``(stream, seq)``;
  columnar blocks compressed with zstd or lz4. The cloud end drops records it already stored.

Topics (``prefix`` defaults to ``edgeplane``)::

    <prefix>/<site>/up/data      envelopes, site -> cloud (QoS 1)
    <prefix>/<site>/up/state     the reported state (twin), retained
    <prefix>/<site>/down/config  signed desired config overlay, retained
    <prefix>/<site>/down/model   signed model version (file, sha256), retained
    <prefix>/<site>/down/command signed command with an expiry

Downlink messages are signed with ed25519 (:mod:`edgeplane.sync.signing`) and carry a revision
per kind that only goes up; unsigned, forged, malformed, expired, wrong-site, replayed,
oversized, not-allowed or invalid ones are refused, counted and reported in the twin. A desired
config overlay may change only what :func:`~edgeplane.sync.downlink.overlay_problems` allows
(limits, solution parameters, polls, uplink policies, model settings; see SECURITY.md); it is
merged onto the site's own file and handed to ``apply_config`` (the host's validate-and-reload);
on success it becomes the last-good overlay (:func:`with_last_good` merges it back in at the
next start, with no network).

Securing a broker (Mosquitto)
=============================

Per-site client certificates whose CN is the site id, and an ACL keyed on that identity::

    listener 8883
    cafile /etc/mosquitto/ca.pem
    certfile /etc/mosquitto/broker.pem
    keyfile /etc/mosquitto/broker.key
    require_certificate true
    use_identity_as_username true
    acl_file /etc/mosquitto/acl

    # acl: a site writes only its own up tree and reads only its own down tree
    pattern write edgeplane/%u/up/#
    pattern read edgeplane/%u/down/#
    user cloud
    topic readwrite edgeplane/#

``tests/sync/test_security.py`` generates such certificates and proves the rules.

Fleets: the same uplink to a broker cluster
===========================================

Sites do not change: they publish to ``<prefix>/<site>/up/...`` on whatever broker their
``sync.uplink.url`` names. The scale-out back end that runs and is tested is edgeplane-cloud's
(``platform/cloud/README.md``): a NATS JetStream cluster whose MQTT listener the sites publish
to, ingest workers on one durable pull consumer, PostgreSQL. Two more ways with other brokers:

* **Mosquitto bridges**: each regional broker (or the one on a site gateway) bridges the trees
  to the central cluster, QoS 1, with a persistent bridge session so a cut bridge queues::

      connection central
      address central.example:8883
      bridge_cafile /etc/mosquitto/ca.pem
      bridge_certfile /etc/mosquitto/bridge.pem
      bridge_keyfile /etc/mosquitto/bridge.key
      cleansession false
      topic edgeplane/+/up/# out 1
      topic edgeplane/+/down/# in 1
      max_queued_messages 1000000

* **EMQX cluster**: point ``sync.uplink.url`` at the cluster's load balancer; use EMQX's
  ``x509`` authentication with ``peer_cert_as_username = cn`` and an ACL rule
  ``{allow, {user, "${username}"}, publish, ["edgeplane/${username}/up/#"]}``. Run several
  ``edgeplane cloud serve`` workers with a *shared subscription*
  (``$share/cloud/edgeplane/+/up/#``, ``--prefix`` unchanged) writing to one database or to
  per-site shards; duplicates across workers are dropped by ``(site, stream, seq)`` as long as
  one site's records land in one database (shard by site).

In both cases the site's persistent session and the outbox cover a broker failover: what was
not acknowledged is sent again and the cloud end drops the duplicates.
"""

from __future__ import annotations

from edgeplane.sync.codec import Envelope, EnvelopeError, Record, decode_envelope, encode_envelope
from edgeplane.sync.config import PolicyRule, SyncConfig, TrustConfig, UplinkConfig
from edgeplane.sync.downlink import deep_merge, with_last_good
from edgeplane.sync.outbox import Outbox, OutboxItem
from edgeplane.sync.service import SyncService
from edgeplane.sync.signing import DownlinkRefused, generate_keypair, sign, verify
from edgeplane.sync.transport import MqttTransport, Reading, Transport, UplinkSite, record_readings

__all__ = [
    "DownlinkRefused",
    "Envelope",
    "EnvelopeError",
    "MqttTransport",
    "Outbox",
    "OutboxItem",
    "PolicyRule",
    "Reading",
    "Record",
    "SyncConfig",
    "SyncService",
    "Transport",
    "TrustConfig",
    "UplinkConfig",
    "UplinkSite",
    "decode_envelope",
    "deep_merge",
    "encode_envelope",
    "generate_keypair",
    "record_readings",
    "sign",
    "verify",
    "with_last_good",
]
