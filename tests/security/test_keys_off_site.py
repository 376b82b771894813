"""Item 1 of issue 14 (second half): `edgeplane site certs` never leaves a key that signs for the
fleet (the downlink signing key, the lab CA key) in the site folder, which is copied onto the site."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeplane.provisioning.site_cli import site_group
from edgeplane.sync.signing import load_private_key, load_public_key, key_id


def site(*args: object, code: int = 0):
    result = CliRunner().invoke(site_group, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def private_keys_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    site("init", folder, "--from", Path(__file__).parents[1] / "kit" / "sites" / "factory.yaml", "--name", "line-4")
    return folder


def test_the_signing_key_and_the_lab_ca_key_stay_with_the_operator(folder: Path, tmp_path: Path):
    site("certs", folder)
    # the only private key on the site is the site's own
    assert private_keys_in(folder) == [folder / "certs" / "site.key"]
    operator = tmp_path / "operator"  # EDGEPLANE_OPERATOR_DIR, set for every test in tests/conftest.py
    signing = load_private_key(operator / "cloud-signing.key")
    trusted = load_public_key(folder / "keys" / "cloud.pub")
    assert key_id(signing.public_key()) == key_id(trusted)  # the site trusts the operator's key
    assert (operator / "lab-ca" / "ca.key").stat().st_mode & 0o777 == 0o600


def test_an_operator_folder_inside_the_site_folder_is_refused(folder: Path):
    out = site("certs", folder, "--operator-dir", folder / "keys" / "operator", code=2)
    assert "must never be on a site" in out
    assert private_keys_in(folder) == []


def test_keys_an_older_version_left_in_the_site_folder_are_moved_out(folder: Path, tmp_path: Path):
    from edgeplane.provisioning.certs import make_ca
    from edgeplane.sync.signing import generate_keypair

    old = folder / "lab-ca"
    old.mkdir()
    (folder / "keys").mkdir()
    generate_keypair(old / "cloud-signing.key", folder / "keys" / "cloud.pub")
    ca, ca_key = make_ca("old lab CA")
    from cryptography.hazmat.primitives import serialization

    (old / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    # the old layout, written by hand: an unencrypted PKCS#8 CA key beside the site's files
    (old / "ca.key").write_bytes(ca_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    before = (old / "cloud-signing.key").read_bytes()
    out = site("certs", folder)
    assert "moved" in out
    assert private_keys_in(folder) == [folder / "certs" / "site.key"]
    operator = tmp_path / "operator"
    assert (operator / "cloud-signing.key").read_bytes() == before  # the lab keeps working
    assert key_id(load_public_key(operator / "cloud-signing.pub")) == key_id(load_public_key(folder / "keys" / "cloud.pub"))
