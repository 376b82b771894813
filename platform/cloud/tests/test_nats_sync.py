"""A site's unchanged sync layer against a three-node NATS JetStream cluster's MQTT listener.

Uplink: the site publishes envelopes (QoS 1) to one node; they land in the replicated stream and
an ingest worker commits them to PostgreSQL. Downlink: a signed desired config published,
retained, through another node reaches the site, which applies it and reports it in its twin.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from edgeplane import Batch, Bus, WallClock
from edgeplane.metrics import Metrics
from edgeplane.sync import SyncConfig, SyncService, generate_keypair

from edgeplane_cloud.broker import UPLINK_STREAM, MqttPublisher
from edgeplane_cloud.fleet import signed_message
from edgeplane_cloud.ingest import IngestWorker
from edgeplane_cloud.testing import NatsCluster

from .conftest import query, wait_until

LOCAL_SITE = {"site": {"id": "nats-site-1"}, "devices": {"m": {"connector": "memory", "points": {"x": {}}}}}


def site_config(url: str, public: Path) -> SyncConfig:
    return SyncConfig.model_validate({
        "uplink": {"url": url, "inflight": 16},
        "policy": [{"topics": "alerts/#", "mode": "events", "priority": "high"},
                   {"topics": "dev/#", "mode": "raw", "priority": "normal"}],
        "trust": {"keys": [str(public)]}, "durability": "process", "report_interval": 1})


async def test_site_uplink_and_signed_downlink_work_over_nats_mqtt(nats_cluster: NatsCluster, clean_store: str,
                                                                   tmp_path: Path):
    dsn = clean_store
    private, public = tmp_path / "cloud.key", tmp_path / "cloud.pub"
    generate_keypair(private, public)
    applied: list[dict] = []

    async def apply_config(site: dict) -> None:
        applied.append(site)

    worker = IngestWorker(nats_cluster.nats_urls, dsn, batch=32)
    worker_task = asyncio.create_task(worker.run())
    bus = Bus()
    service = SyncService(site_config(nats_cluster.mqtt_urls[0], public), site_id="nats-site-1", bus=bus,
                          clock=WallClock(), metrics=Metrics(), store_dir=tmp_path / "site", base_site=LOCAL_SITE,
                          apply_config=apply_config)
    await service.start()
    try:
        await wait_until(lambda: service.transport.connected, what="the site connected to NATS's MQTT listener")
        sent = 0
        for i in range(20):
            ts = np.arange(sent, sent + 50, dtype=float) + 1.7e9
            await bus.publish(Batch.of("dev/temp", ts, np.cos(ts)))
            sent += 50
        await wait_until(lambda: query(dsn, "SELECT coalesce(sum(count), 0) FROM records WHERE site = 'nats-site-1' "
                                            "AND kind = 'raw'")[0][0] == sent, what="every reading stored")
        (values,) = query(dsn, "SELECT array_agg(v ORDER BY t) FROM records, unnest(ts, vals) AS u(t, v) "
                               "WHERE site = 'nats-site-1'")[0]
        expected = np.cos(np.arange(sent, dtype=float) + 1.7e9)
        assert np.allclose(values, expected)
        assert query(dsn, "SELECT count(*) FROM (SELECT DISTINCT stream, seq FROM records) s")[0][0] == \
            query(dsn, "SELECT count(*) FROM records")[0][0]

        # downlink through another node of the cluster, retained, as the fleet sends it
        payload, message = signed_message(private, site="nats-site-1", kind="config",
                                          body={"overlay": {"devices": {"m": {"poll": "2s"}}}}, revision=1)
        with MqttPublisher(nats_cluster.mqtt_urls[1], "test-push") as publisher:
            publisher.publish("edgeplane/nats-site-1/down/config", payload, retain=True)
        await wait_until(lambda: applied, what="the site applied the desired config")
        assert applied[-1]["devices"]["m"]["poll"] == "2s"
        # the twin comes back up through the stream: the cloud sees the site applied it
        def reported_applied() -> bool:
            rows = query(dsn, "SELECT reported FROM sites WHERE site = 'nats-site-1'")
            return bool(rows and rows[0][0] and json.loads(rows[0][0]).get("config", {}).get("applied") == message["id"])
        await wait_until(reported_applied, what="the reported state in PostgreSQL")
    finally:
        await service.stop()
        worker.stop()
        await asyncio.wait_for(worker_task, 20)

    # a site that connects later gets the retained desired config from any node
    late: list[dict] = []

    async def apply_late(site: dict) -> None:
        late.append(site)

    service2 = SyncService(site_config(nats_cluster.mqtt_urls[2], public), site_id="nats-site-1", bus=Bus(),
                           clock=WallClock(), metrics=Metrics(), store_dir=tmp_path / "site2", base_site=LOCAL_SITE,
                           apply_config=apply_late)
    await service2.start()
    try:
        await wait_until(lambda: late, what="the retained config reached a site connecting later")
        assert late[-1]["devices"]["m"]["poll"] == "2s"
    finally:
        await service2.stop()


async def test_the_uplink_stream_is_replicated_three_times(nats_cluster: NatsCluster, clean_store: str):
    import nats

    worker = IngestWorker(nats_cluster.nats_urls, clean_store)
    task = asyncio.create_task(worker.run())
    nc = await nats.connect(servers=nats_cluster.nats_urls)
    try:
        js = nc.jetstream()
        async def stream_ready() -> bool:
            try:
                return (await js.stream_info(UPLINK_STREAM)).config.num_replicas == 3
            except Exception:  # noqa: BLE001 - not created yet
                return False
        for _ in range(100):
            if await stream_ready():
                break
            await asyncio.sleep(0.1)
        info = await js.stream_info(UPLINK_STREAM)
        assert info.config.num_replicas == 3
        assert len(info.cluster.replicas or []) == 2  # a leader and two followers
        consumer = await js.consumer_info(UPLINK_STREAM, "ingest")
        assert consumer.config.durable_name == "ingest" and consumer.config.max_ack_pending > 0
        # the workers read what NATS's MQTT layer stored before it acknowledged the site
        assert UPLINK_STREAM == "$MQTT_msgs" and consumer.config.filter_subject == "$MQTT.msgs.edgeplane.*.up.>"
    finally:
        await nc.close()
        worker.stop()
        await asyncio.wait_for(task, 20)


async def test_a_worker_refuses_an_uplink_stream_with_fewer_replicas_than_asked(nats_cluster: NatsCluster):
    """Fewer replicas than the operator asked for would lose acknowledged uplinks with a node: refused, naming the fix."""
    import nats

    from edgeplane_cloud.broker import BrokerConfigError, StreamSettings, ensure_stream

    nc = await nats.connect(servers=nats_cluster.nats_urls)
    try:
        js = nc.jetstream()
        await ensure_stream(js, StreamSettings(replicas=3))  # what the cluster has: accepted
        with pytest.raises(BrokerConfigError, match=r"has 3 replica\(s\).*stream_replicas: 5"):
            await ensure_stream(js, StreamSettings(replicas=5))
    finally:
        await nc.close()
