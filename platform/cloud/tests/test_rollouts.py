"""Staged rollouts through the real cluster: canary then batches, health gate on the twins, rollback."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper

from edgeplane.inference.manifest import ModelManifest
from edgeplane.inference.trust import TrustPolicy, generate_keypair as model_keypair
from edgeplane.sync.signing import generate_keypair, load_public_key, key_id

from edgeplane_cloud.cli import fleet
from edgeplane_cloud.fleet import Fleet
from edgeplane_cloud.ingest import IngestWorker
from edgeplane_cloud.simulator import FleetSimulator
from edgeplane_cloud.testing import NatsCluster

from .conftest import query, wait_until


def tiny_model(path: Path, scale: float) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1], [scale])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "scale", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


async def test_model_rollout_canary_batches_gate_and_rollback(nats_cluster: NatsCluster, clean_store: str, tmp_path: Path):
    dsn = clean_store
    cloud_key, cloud_pub = tmp_path / "cloud.key", tmp_path / "cloud.pub"
    generate_keypair(cloud_key, cloud_pub)
    model_key, model_pub = tmp_path / "model.key", tmp_path / "model.pub"
    model_keypair(model_key, model_pub)
    public = load_public_key(cloud_pub)
    worker = IngestWorker(nats_cluster.nats_urls, dsn, batch=64)
    task = asyncio.create_task(worker.run())
    await asyncio.to_thread(nats_cluster.wait_consumer)
    sim = FleetSimulator(nats_cluster.mqtt_urls, sites=20, points=1, record_readings=5, connections=2,
                         site_prefix="ro", name="rollouts", trusted_keys={key_id(public): public},
                         failing_models={("ro-00008", "2")})
    runner = CliRunner()
    try:
        await asyncio.to_thread(sim.wait_connected)
        await asyncio.to_thread(sim.start_twins, nats_cluster.mqtt_urls[1])
        await asyncio.to_thread(sim.publish_round, 0)
        await wait_until(lambda: query(dsn, "SELECT count(*) FROM sites WHERE site LIKE 'ro-%'")[0][0] == 20,
                         what="every site seen")
        for i, site in enumerate(sim.sites):
            region = "eu" if i < 10 else "us"
            result = await asyncio.to_thread(runner.invoke, fleet, ["label", "--dsn", dsn, site, f"region={region}",
                                                                     "vertical=solar", "hardware=ipc-4"])
            assert result.exit_code == 0, result.output
        for version, scale in (("1", 1.0), ("2", 2.0)):
            model = tiny_model(tmp_path / f"m{version}.onnx", scale)
            result = await asyncio.to_thread(runner.invoke, fleet, [
                "model-add", "--dsn", dsn, str(model), "--name", "scaler", "--version", version,
                "--model-key", str(model_key), "--json"])
            assert result.exit_code == 0, result.output
            manifest = ModelManifest.model_validate(json.loads(result.output))
            # the manifest a site with required signatures checks, with the model's own signature
            TrustPolicy.from_files([model_pub], required=True).check(manifest, "test")
            assert [t.name for t in manifest.inputs] == ["x"]

        common = ["--dsn", dsn, "--broker", nats_cluster.mqtt_urls[0], "--signing-key", str(cloud_key),
                  "--selector", "region=eu", "--canary", "0.1", "--batch-size", "4", "--gate-timeout", "20", "--json"]
        # version 1 everywhere in region eu: canary (1 site), then batches of 4
        result = await asyncio.to_thread(runner.invoke, fleet, ["rollout", "--model", "scaler:1", *common])
        assert result.exit_code == 0, result.output
        first = json.loads(result.output)
        assert first["outcome"] == "done" and first["applied"] == 10 and first["batches"] == 4
        serving = sim.serving("scaler")
        assert all(serving[s] == "1" for s in sim.sites[:10])
        assert all(serving[s] is None for s in sim.sites[10:])  # region us untouched

        # version 2: site ro-00008 (in the third batch) fails to warm it up: stop, roll back
        result = await asyncio.to_thread(runner.invoke, fleet, ["rollout", "--model", "scaler:2", *common])
        assert result.exit_code == 1, result.output
        second = json.loads(result.output)
        assert second["outcome"] == "rolled_back" and second["state"] == "rolled_back"
        assert "ro-00008" in second["error"] and "simulated fault" in second["error"]
        batches = dict(query(dsn, "SELECT site, batch FROM rollout_sites WHERE rollout = %s", second["id"]))
        assert batches["ro-00000"] == 0 and batches["ro-00008"] == 2
        untouched = query(dsn, "SELECT count(*) FROM rollout_sites WHERE rollout = %s AND state = 'skipped'", second["id"])
        assert untouched[0][0] == 1  # the last batch never got version 2
        await wait_until(lambda: all(sim.serving("scaler")[s] == "1" for s in sim.sites[:10] if s != "ro-00008"),
                         what="every site back on version 1")
        # revisions only go up: the rollback went out with new, higher revisions
        revs = query(dsn, "SELECT site, revision FROM desired WHERE kind = 'model' ORDER BY site")
        assert len(revs) == 10
        assert all(r > first["created"] * 1e6 for _, r in revs)

        result = await asyncio.to_thread(runner.invoke, fleet, ["status", "--dsn", dsn, "--json"])
        states = [r["state"] for r in json.loads(result.output)]
        assert states == ["rolled_back", "done"]
        result = await asyncio.to_thread(runner.invoke, fleet, ["sites", "--dsn", dsn, "--selector", "region=us", "--json"])
        assert len(json.loads(result.output)) == 10
        result = await asyncio.to_thread(runner.invoke, fleet, ["rollout", "--model", "scaler:9", *common])
        assert result.exit_code == 2 and "not in the fleet store" in result.output
        result = await asyncio.to_thread(runner.invoke, fleet, ["sites", "--dsn", dsn, "--selector", "region"])
        assert result.exit_code == 2 and "label=value" in result.output
        assert sim.stats.downlink_refused == {}
        body = Fleet(dsn).model_body("scaler", "2")
        assert base64.b64decode(body["data"]) == (tmp_path / "m2.onnx").read_bytes()
    finally:
        sim.close()
        worker.stop()
        await asyncio.wait_for(task, 20)
