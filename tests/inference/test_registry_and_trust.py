"""The model registry on disk, sha256 integrity, ed25519 signatures under the site's trust policy."""

from __future__ import annotations

import json

import pytest

from edgeplane.inference import (
    InferenceConfig,
    IntegrityError,
    ManifestError,
    ModelNotFoundError,
    ModelRegistry,
    Provenance,
    TrustError,
)
from edgeplane.inference import testing as toy
from edgeplane.inference.registry import version_key
from edgeplane.inference.trust import TrustPolicy, generate_keypair, load_private_key


def test_add_writes_a_manifest_with_signature_and_provenance(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    source = toy.save(toy.cnn1d(3, 256, (8,), (5,), 4), tmp_path / "cnn.onnx")
    provenance = Provenance(command="edgeplane pdm train --epochs 20", data=["shared/data/bearing"], metrics={"f1": 0.93})
    manifest = registry.add(source, "cnn", "1", provenance)
    on_disk = json.loads((tmp_path / "models" / "cnn" / "1" / "manifest.json").read_text())
    assert on_disk["sha256"] == manifest.sha256 and len(manifest.sha256) == 64
    assert on_disk["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 3, 256]}]
    assert on_disk["outputs"] == [{"name": "y", "dtype": "float32", "shape": ["batch", 4]}]
    assert on_disk["provenance"]["command"] == "edgeplane pdm train --epochs 20"
    assert on_disk["provenance"]["metrics"] == {"f1": 0.93}
    assert registry.names() == ["cnn"] and registry.versions("cnn") == ["1"]
    with pytest.raises(ManifestError, match="already exists"):
        registry.add(source, "cnn", "1")


def test_versions_sort_numerically_and_newest_is_default(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    source = toy.save(toy.mlp(), tmp_path / "m.onnx")
    for version in ("9", "10", "1.2"):
        registry.add(source, "m", version)
    assert registry.versions("m") == ["1.2", "9", "10"]
    assert registry.entry("m").version == "10"
    assert sorted(["1.10", "1.9", "1.9.1"], key=version_key) == ["1.9", "1.9.1", "1.10"]
    assert registry.remove("m", "10") == ["10"]
    assert registry.entry("m").version == "9"
    with pytest.raises(ModelNotFoundError, match="no model 'nope'.*known models: m"):
        registry.entry("nope")


def test_plugin_model_folders_are_found_and_the_site_folder_wins(tmp_path):
    source = toy.save(toy.mlp(), tmp_path / "m.onnx")
    shipped = ModelRegistry(tmp_path / "plugin_models")
    shipped.add(source, "policy", "1")
    shipped.add(source, "shared", "1")
    registry = ModelRegistry(tmp_path / "models", [tmp_path / "plugin_models"])
    registry.add(source, "shared", "5")
    assert registry.names() == ["policy", "shared"]
    assert registry.entry("policy").writable is False
    assert registry.versions("shared") == ["5"]


def test_sha256_mismatch_is_refused_with_a_clear_error(site_dir):
    path = site_dir / "models" / "mlp" / "1" / "model.onnx"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    registry = ModelRegistry(site_dir / "models")
    with pytest.raises(IntegrityError, match=r"model 'mlp' version '1' is refused: sha256 of .*model.onnx is .* manifest says"):
        registry.verify("mlp", "1", TrustPolicy({}))


async def test_the_service_refuses_a_tampered_model(make_service, site_dir):
    (site_dir / "models" / "cnn" / "1" / "model.onnx").write_bytes(b"not the model")
    async with make_service() as service:
        with pytest.raises(IntegrityError, match="'cnn'"):
            await service.infer("cnn", [[0.0]])
        assert "cnn" not in service.loaded()


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    generate_keypair(folder / "site.key", folder / "site.pub")
    generate_keypair(folder / "other.key", folder / "other.pub")
    return folder


def _signed_registry(tmp_path, keys):
    registry = ModelRegistry(tmp_path / "models")
    source = toy.save(toy.mlp(), tmp_path / "m.onnx")
    registry.add(source, "signed", "1", sign_key=load_private_key(keys / "site.key"))
    registry.add(source, "foreign", "1", sign_key=load_private_key(keys / "other.key"))
    registry.add(source, "unsigned", "1")
    return registry


def test_signatures_under_a_policy_that_requires_them(tmp_path, keys):
    registry = _signed_registry(tmp_path, keys)
    policy = TrustPolicy.from_files([keys / "site.pub"], required=True)
    assert registry.verify("signed", None, policy).trust.startswith("signed by ")
    with pytest.raises(TrustError, match="'unsigned' .* is not signed and this site requires signed models"):
        registry.verify("unsigned", None, policy)
    with pytest.raises(TrustError, match="'foreign' .* signed by key [0-9a-f]{16}, which this site does not trust"):
        registry.verify("foreign", None, policy)


def test_a_manifest_changed_after_signing_is_refused_even_when_signatures_are_optional(tmp_path, keys):
    registry = _signed_registry(tmp_path, keys)
    manifest_path = tmp_path / "models" / "signed" / "1" / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["provenance"]["metrics"] = {"accuracy": 0.99}  # someone improves the numbers
    manifest_path.write_text(json.dumps(data))
    policy = TrustPolicy.from_files([keys / "site.pub"], required=False)
    with pytest.raises(TrustError, match="signature does not match the manifest"):
        registry.verify("signed", None, policy)
    assert registry.verify("unsigned", None, policy).trust == "unsigned"  # optional: unsigned is fine


async def test_the_service_applies_the_site_trust_policy(make_service, site_dir, keys):
    registry = ModelRegistry(site_dir / "models")
    registry.add(toy.save(toy.mlp(), site_dir / "sources" / "s.onnx"), "signed", "1", sign_key=load_private_key(keys / "site.key"))
    async with make_service(trust={"keys": [str(keys / "site.pub")], "required": True}) as service:
        assert (await service.infer("signed", [[0.0] * 32]))["y"].shape == (1, 8)
        with pytest.raises(TrustError, match="'mlp'.*not signed"):
            await service.load("mlp")


def test_key_formats_and_bad_key_files(tmp_path, keys):
    from cryptography.hazmat.primitives import serialization

    public = load_private_key(keys / "site.key").public_key()
    (tmp_path / "k.ssh").write_bytes(public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    import base64

    (tmp_path / "k.b64").write_text(base64.b64encode(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode())
    ids = {next(iter(TrustPolicy.from_files([p]).keys)) for p in (keys / "site.pub", tmp_path / "k.ssh", tmp_path / "k.b64")}
    assert len(ids) == 1
    (tmp_path / "bad.pub").write_text("hello")
    with pytest.raises(TrustError, match="bad.pub is not an ed25519 public key"):
        TrustPolicy.from_files([tmp_path / "bad.pub"])
    with pytest.raises(TrustError, match="cannot read trusted key file"):
        TrustPolicy.from_files([tmp_path / "missing.pub"])


def test_config_section_is_validated():
    config = InferenceConfig.model_validate(
        {"providers": ["cuda", "cpu"], "models": "models/", "batching": {"max_batch": 32, "max_delay": "5ms"},
         "per_model": {"rul": {"version": 3, "max_batch": 8}}}
    )
    assert config.batching.max_delay == pytest.approx(0.005)
    assert config.per_model["rul"].version == "3"
    assert config.batching_for("rul").max_batch == 8 and config.batching_for("other").max_batch == 32
    with pytest.raises(ValueError, match="extra"):
        InferenceConfig.model_validate({"batchin": {}})
    with pytest.raises(ValueError, match="trust.required is true but trust.keys is empty"):
        InferenceConfig.model_validate({"trust": {"required": True}})
    with pytest.raises(ValueError):
        InferenceConfig.model_validate({"providers": ["tpu"]})
