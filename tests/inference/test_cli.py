"""``edgeplane models add|list|remove|bench|quantize``, run through click."""

from __future__ import annotations

import json

import numpy as np
import yaml
from click.testing import CliRunner

from edgeplane.inference import testing as toy
from edgeplane.inference.cli import models
from edgeplane.inference.trust import generate_keypair


def run(*args: str):
    result = CliRunner().invoke(models, list(args), catch_exceptions=False)
    return result


def test_add_list_remove(tmp_path):
    source = toy.save(toy.mlp(), tmp_path / "m.onnx")
    folder = str(tmp_path / "models")
    result = run("--models", folder, "add", str(source), "--name", "rul", "--version", "1",
                 "--command", "edgeplane pdm train", "--data", "bearing.csv", "--metric", "rmse=12.5")
    assert result.exit_code == 0, result.output
    assert "added rul 1" in result.output and "sha256" in result.output
    result = run("--models", folder, "list")
    assert result.exit_code == 0
    assert "inference runs on CPUExecutionProvider" in result.output
    assert "rul 1: ok, unsigned" in result.output
    assert "in x: float32[batch, 32]; out y: float32[batch, 8]" in result.output
    assert "made by: edgeplane pdm train" in result.output
    listed = json.loads(run("--models", folder, "list", "--json").output)
    assert listed["providers"][-1] == "CPUExecutionProvider"
    assert listed["models"][0]["provenance"]["metrics"] == {"rmse": 12.5}
    (tmp_path / "models" / "rul" / "1" / "model.onnx").write_bytes(b"changed")
    assert "rul 1: REFUSED: model 'rul' version '1' is refused: sha256" in run("--models", folder, "list").output
    assert run("--models", folder, "remove", "rul").output.strip() == "removed rul version 1"
    result = run("--models", folder, "remove", "rul")
    assert result.exit_code == 1 and "no model 'rul'" in result.output


def test_site_trust_policy_applies_to_list_and_signed_add(tmp_path):
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"site": {"id": "t"}, "inference": {"models": "models", "trust": {"keys": ["k.pub"], "required": True}}}))
    source = toy.save(toy.mlp(), tmp_path / "m.onnx")
    assert run("--site", str(site), "add", str(source), "--name", "a", "--version", "1", "--sign-key", str(tmp_path / "k.key")).exit_code == 0
    assert run("--site", str(site), "add", str(source), "--name", "b", "--version", "1").exit_code == 0
    output = run("--site", str(site), "list").output
    assert "a 1: ok, signed by" in output
    assert "b 1: REFUSED: model 'b' version '1'" in output and "not signed" in output


def test_bench_prints_each_batch_size(tmp_path):
    source = toy.save(toy.mlp(), tmp_path / "m.onnx")
    folder = str(tmp_path / "models")
    run("--models", folder, "add", str(source), "--name", "m", "--version", "1")
    result = run("--models", folder, "bench", "m", "--batch", "1,16", "--seconds", "0.1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split() == ["batch", "p50", "ms", "p99", "ms", "rows/s"]
    assert [line.split()[0] for line in lines[2:]] == ["1", "16"]


def test_quantize_adds_an_int8_version_and_reports_size_speed_accuracy(tmp_path):
    source = toy.save(toy.mlp(64, (256, 256), 16), tmp_path / "m.onnx")
    folder = str(tmp_path / "models")
    run("--models", folder, "add", str(source), "--name", "m", "--version", "1")
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((200, 64)).astype(np.float32))
    result = run("--models", folder, "quantize", "m", "--data", str(data), "--seconds", "0.1")
    assert result.exit_code == 0, result.output
    assert "quantized m 1 -> 1-int8" in result.output
    assert "size" in result.output and "speed" in result.output and "y_max_abs_diff" in result.output
    manifest = json.loads((tmp_path / "models" / "m" / "1-int8" / "manifest.json").read_text())
    metrics = manifest["provenance"]["metrics"]
    assert metrics["size_bytes_after"] < 0.5 * metrics["size_bytes_before"]
    assert 0 < metrics["y_mean_abs_diff"] < 0.5
    assert metrics["y_argmax_agreement"] > 0.5
    assert manifest["provenance"]["source"].startswith("int8 dynamic quantization of m 1")
    bad = tmp_path / "bad.npz"
    np.savez(bad, a=np.zeros((2, 64), np.float32), b=np.zeros((2, 64), np.float32))
    result = run("--models", folder, "quantize", "m", "--version", "1", "--data", str(bad), "--as-version", "q2")
    assert result.exit_code == 1 and "lacks inputs ['x']" in result.output
