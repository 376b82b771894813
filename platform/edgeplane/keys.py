"""ed25519 key files, for every signature edgeplane makes or checks (model manifests, signed downlink).

One reader for every format a key arrives in, one writer, one key id:

* public keys: PEM (``-----BEGIN PUBLIC KEY``), OpenSSH (``ssh-ed25519 AAAA...``), the raw 32 bytes
  in base64, or the raw 32 bytes as 64 hex digits;
* private keys: unencrypted PEM (PKCS#8) or OpenSSH;
* :func:`generate_keypair` writes PEM (the private file mode 0600);
* :func:`key_id` is the first 16 hex digits of the sha256 of the raw public key.

``edgeplane.inference.trust`` and ``edgeplane.sync.signing`` re-export these; a file either of
them wrote before they shared this module still loads. A file that cannot be used raises
:class:`KeyFileError`, which is an :class:`~edgeplane.errors.EdgeplaneError` and a ``ValueError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgeplane.errors import EdgeplaneError

__all__ = ["KeyFileError", "generate_keypair", "key_id", "load_private_key", "load_public_key", "public_key_pem"]

_HEX_KEY = re.compile(rb"[0-9a-fA-F]{64}")
MAX_KEY_FILE_BYTES = 64 * 1024
"""A key file is at most a few kilobytes; anything larger is the wrong file."""


class KeyFileError(EdgeplaneError, ValueError):
    """A key file cannot be read, or does not hold an ed25519 key of the kind asked for."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short id of a public key: the first 16 hex digits of the sha256 of its raw 32 bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    """The public key as PEM (SubjectPublicKeyInfo), the form :func:`generate_keypair` writes."""
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _read(path: str | Path, what: str) -> bytes:
    try:
        with Path(path).open("rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise KeyFileError(f"cannot read {what} file {path}: {e.strerror}; check the path") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path} is larger than {MAX_KEY_FILE_BYTES // 1024} KiB: not a {what} file")
    return data


def load_public_key(path: str | Path, *, what: str = "public key") -> Ed25519PublicKey:
    """An ed25519 public key from a PEM, OpenSSH, base64 or 64-hex-digit file (``what`` names it in errors)."""
    data = _read(path, what).strip()
    key: object
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        elif data.startswith(b"ssh-ed25519"):
            key = serialization.load_ssh_public_key(data)
        elif _HEX_KEY.fullmatch(data):
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(data.decode()))
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data, validate=True))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as e:
        raise KeyFileError(f"{path} is not an ed25519 public key ({e}); use a PEM, OpenSSH, base64 or "
                           "64-hex-digit ed25519 key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an ed25519 public key: edgeplane trusts "
                           "ed25519 keys only")
    return key


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An ed25519 private key from an unencrypted PEM (PKCS#8) or OpenSSH file."""
    data = _read(path, "private key")
    key: object
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path} is not an unencrypted ed25519 private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an ed25519 private key")
    return key


def generate_keypair(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new key pair as PEM files (the private one readable by its owner only); returns the key id."""
    key = Ed25519PrivateKey.generate()
    private_path, public_path = Path(private_path), Path(public_path)
    private_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    private_path.chmod(0o600)
    public_path.write_bytes(public_key_pem(key.public_key()))
    return key_id(key.public_key())
