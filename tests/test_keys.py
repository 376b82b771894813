"""One module reads and writes ed25519 key files for both signature users (models, downlink)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import edgeplane.inference.trust as trust
import edgeplane.keys as keys
import edgeplane.sync.signing as signing
from edgeplane.errors import EdgeplaneError
from edgeplane.inference.errors import TrustError


def test_both_users_share_the_one_implementation():
    for name in ("generate_keypair", "key_id", "load_private_key", "load_public_key"):
        assert getattr(trust, name) is getattr(keys, name) is getattr(signing, name), name


def test_every_public_key_format_gives_the_same_key_id(tmp_path):
    expected = keys.generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    public = keys.load_private_key(tmp_path / "k.key").public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    files = {
        "pem": tmp_path / "k.pub",
        "ssh": tmp_path / "k.ssh",
        "b64": tmp_path / "k.b64",
        "hex": tmp_path / "k.hex",  # what the sync layer's own reader accepted
    }
    files["ssh"].write_bytes(public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    files["b64"].write_text(base64.b64encode(raw).decode() + "\n")
    files["hex"].write_text(raw.hex().upper() + "\n")
    assert {kind: keys.key_id(keys.load_public_key(path)) for kind, path in files.items()} == dict.fromkeys(files, expected)


def test_key_files_written_by_the_old_writers_still_load(tmp_path):
    # both old generate_keypair wrote PKCS#8 PEM private keys and SubjectPublicKeyInfo PEM public keys
    key = Ed25519PrivateKey.generate()
    (tmp_path / "old.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    (tmp_path / "old.pub").write_bytes(keys.public_key_pem(key.public_key()))
    (tmp_path / "old.ssh-key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                             serialization.NoEncryption()))
    want = keys.key_id(key.public_key())
    assert keys.key_id(signing.load_private_key(tmp_path / "old.key").public_key()) == want
    assert keys.key_id(trust.load_private_key(tmp_path / "old.ssh-key").public_key()) == want
    assert next(iter(trust.TrustPolicy.from_files([tmp_path / "old.pub"]).keys)) == want


def test_bad_files_raise_one_error_that_old_callers_still_catch(tmp_path):
    (tmp_path / "bad.pub").write_text("hello")
    (tmp_path / "big.pub").write_bytes(b"a" * (keys.MAX_KEY_FILE_BYTES + 10))
    for path, match in ((tmp_path / "bad.pub", "bad.pub is not an ed25519 public key"),
                        (tmp_path / "missing.pub", "cannot read public key file"),
                        (tmp_path / "big.pub", "larger than")):
        with pytest.raises(keys.KeyFileError, match=match) as caught:
            signing.load_public_key(path)
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, EdgeplaneError)
    with pytest.raises(ValueError, match="not an unencrypted ed25519 private key"):
        signing.load_private_key(tmp_path / "bad.pub")
    with pytest.raises(TrustError, match="bad.pub is not an ed25519 public key.*fix inference.trust.keys"):
        trust.TrustPolicy.from_files([tmp_path / "bad.pub"])
