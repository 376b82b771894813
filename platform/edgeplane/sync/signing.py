"""Signed downlink messages: ed25519 over the exact payload bytes.

A signed message on the wire is JSON ``{"v": 1, "key": <key id>, "payload": <base64>, "sig": <base64>}``;
the payload is JSON ``{"id", "site", "kind", "issued", "expires", "body"}``. The key id is the
first 16 hex digits of the sha256 of the raw 32-byte public key, so a site can hold several
trusted keys (rotation) and say which one a message claimed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["DownlinkRefused", "generate_keypair", "key_id", "load_private_key", "load_public_key", "sign", "verify"]


class DownlinkRefused(Exception):
    """A downlink message was refused. ``reason`` is a short metric label, the message says why."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An ed25519 public key from a PEM file or a file holding 64 hex digits."""
    data = Path(path).read_bytes()
    try:
        if b"BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(data.decode().strip()))
    except ValueError as e:
        raise ValueError(f"{path}: not an ed25519 public key (PEM or 64 hex digits): {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: is a {type(key).__name__}, the sync layer trusts ed25519 keys only")
    return key


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an ed25519 private key")
    return key


def generate_keypair(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new key pair (PEM; the private file mode 0600); returns the key id."""
    key = Ed25519PrivateKey.generate()
    private_path, public_path = Path(private_path), Path(public_path)
    private_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    private_path.chmod(0o600)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_id(key.public_key())


def sign(private_key: Ed25519PrivateKey, *, site: str, kind: str, body: dict[str, Any], ttl: float | None = None,
         issued: float | None = None, message_id: str | None = None) -> bytes:
    """A signed downlink message for ``site``; ``ttl`` seconds after ``issued`` it expires."""
    issued = time.time() if issued is None else issued
    payload = json.dumps({"id": message_id or uuid.uuid4().hex, "site": site, "kind": kind, "issued": issued,
                          "expires": None if ttl is None else issued + ttl, "body": body},
                         separators=(",", ":"), sort_keys=True).encode()
    return json.dumps({"v": 1, "key": key_id(private_key.public_key()), "payload": base64.b64encode(payload).decode(),
                       "sig": base64.b64encode(private_key.sign(payload)).decode()}).encode()


def verify(data: bytes, trusted: dict[str, Ed25519PublicKey], *, site: str, now: float) -> dict[str, Any]:
    """The verified payload, or :class:`DownlinkRefused` (unsigned, unknown_key, forged, wrong_site, expired)."""
    try:
        wrapper = json.loads(data)
        payload = base64.b64decode(wrapper["payload"], validate=True)
        signature = base64.b64decode(wrapper["sig"], validate=True)
        claimed = str(wrapper["key"])
    except Exception:  # noqa: BLE001 - anything unparseable is unsigned
        raise DownlinkRefused("unsigned", "downlink message is not a signed edgeplane message: refused") from None
    key = trusted.get(claimed)
    if key is None:
        raise DownlinkRefused("unknown_key", f"downlink message signed by key {claimed!r}, which this site does not "
                                             f"trust (trusted: {', '.join(trusted) or 'none'}): add it to sync.trust.keys")
    try:
        key.verify(signature, payload)
    except InvalidSignature:
        raise DownlinkRefused("forged", f"downlink message signature does not verify with key {claimed!r}: refused") from None
    message = json.loads(payload)
    if message.get("site") != site:
        raise DownlinkRefused("wrong_site", f"downlink message is for site {message.get('site')!r}, not {site!r}")
    expires = message.get("expires")
    if expires is not None and now > float(expires):
        raise DownlinkRefused("expired", f"downlink {message.get('kind')} {message.get('id')} expired "
                                         f"{now - float(expires):.0f} s ago: refused")
    return message
