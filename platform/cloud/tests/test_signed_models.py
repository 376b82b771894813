"""A model from a fleet rollout carries its signed manifest, so a site that requires signed models accepts it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeplane.inference import ManifestError
from edgeplane.inference.manifest import ModelManifest
from edgeplane.inference.registry import ModelRegistry
from edgeplane.inference.trust import TrustPolicy, generate_keypair as model_keypair
from edgeplane.sync.downlink import Downlink
from edgeplane.sync.signing import generate_keypair, key_id, load_public_key

from edgeplane_cloud.fleet import Fleet, signed_message

from .test_rollouts import tiny_model


async def test_a_fleet_model_passes_a_site_trust_policy_that_requires_signatures(clean_store: str, tmp_path: Path):
    cloud_key, cloud_pub = tmp_path / "cloud.key", tmp_path / "cloud.pub"
    generate_keypair(cloud_key, cloud_pub)
    model_key, model_pub = tmp_path / "model.key", tmp_path / "model.pub"
    model_keypair(model_key, model_pub)
    fleet = Fleet(clean_store)
    try:
        fleet.add_model(tiny_model(tmp_path / "m.onnx", 3.0), "scaler", "5", model_key=model_key)
        body = fleet.model_body("scaler", "5")
    finally:
        fleet.close()
    registry = ModelRegistry(tmp_path / "registry")
    required = TrustPolicy.from_files([model_pub], required=True)
    received: list[dict] = []

    async def apply_model(*, name: str, version: str, path: Path, sha256: str, manifest: dict | None = None) -> None:
        # what the host does with it (Host._apply_model): the registry keeps the manifest as it came
        received.append(manifest)
        given = ModelManifest.model_validate(manifest) if manifest is not None else None
        registry.add(path, name, version, replace=True, manifest=given)
        registry.verify(name, version, required)

    public = load_public_key(cloud_pub)
    downlink = Downlink(site_id="plant-9", store_dir=tmp_path / "site", trusted={key_id(public): public}, base_site=None,
                        apply_config=None, apply_model=apply_model, execute_command=None, on_refused=lambda r, m: None)
    payload, message = signed_message(cloud_key, site="plant-9", kind="model", body=body, revision=1)
    await downlink.handle(payload, message["issued"])
    assert downlink.twin["models"]["scaler"]["status"] == "applied", downlink.twin["models"]["scaler"]
    assert received[0]["signature"]["key_id"]
    assert "signed" in registry.verify("scaler", "5", required).trust

    # a manifest that does not describe the file it came with is refused by the registry
    other = tiny_model(tmp_path / "other.onnx", 4.0)
    with pytest.raises(ManifestError, match="sha256"):
        registry.add(other, "scaler", "6", manifest=ModelManifest.model_validate({**body["manifest"], "version": "6"}))
    # without the manifest (what the cloud sent before) a site that requires signatures refuses the model
    registry.add(other, "scaler", "7")
    with pytest.raises(Exception, match="(?i)sign"):
        registry.verify("scaler", "7", required)
    assert json.loads((tmp_path / "registry" / "scaler" / "5" / "manifest.json").read_text())["signature"]
