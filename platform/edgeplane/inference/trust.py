"""ed25519 signing and verification of model manifests.

A site trusts the public keys listed in ``inference.trust.keys``. A manifest's signature is
checked against the key whose id it names. Key files may be PEM (``-----BEGIN PUBLIC KEY``),
OpenSSH (``ssh-ed25519 AAAA...``) or the raw 32 bytes in base64.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from edgeplane.inference.errors import TrustError
from edgeplane.inference.manifest import ModelManifest, Signature

__all__ = ["TrustPolicy", "generate_keypair", "key_id", "load_private_key", "load_public_key", "sign_manifest"]


def _raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Any) -> str:
    """A short id of a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def load_public_key(path: Path) -> Any:
    """An ``Ed25519PublicKey`` from a PEM, OpenSSH or raw-base64 file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        data = Path(path).read_bytes().strip()
    except OSError as e:
        raise TrustError(f"cannot read trusted key file {path}: {e.strerror}; fix inference.trust.keys") from None
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        elif data.startswith(b"ssh-ed25519"):
            key = serialization.load_ssh_public_key(data)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data, validate=True))
    except (ValueError, TypeError) as e:
        raise TrustError(f"{path} is not an ed25519 public key ({e}); use a PEM, OpenSSH or base64 ed25519 key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise TrustError(f"{path} holds a {type(key).__name__}, not an ed25519 public key")
    return key


def load_private_key(path: Path) -> Any:
    """An ``Ed25519PrivateKey`` from an unencrypted PEM (PKCS#8) or OpenSSH private key file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = Path(path).read_bytes()
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise TrustError(f"{path} is not an unencrypted ed25519 private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise TrustError(f"{path} holds a {type(key).__name__}, not an ed25519 private key")
    return key


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """Write a new ed25519 key pair as PEM files (the private one readable by its owner only)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def sign_manifest(manifest: ModelManifest, private_key: Any) -> ModelManifest:
    """A copy of ``manifest`` carrying an ed25519 signature made with ``private_key``."""
    unsigned = manifest.model_copy(update={"signature": None})
    value = base64.b64encode(private_key.sign(unsigned.signed_bytes())).decode()
    return unsigned.model_copy(update={"signature": Signature(key_id=key_id(private_key.public_key()), value=value)})


@dataclass
class TrustPolicy:
    """The site's trust policy: trusted keys by id, and whether a signature is required."""

    keys: dict[str, Any]
    required: bool = False

    @classmethod
    def from_files(cls, files: Iterable[Path], required: bool = False) -> TrustPolicy:
        keys = {}
        for path in files:
            key = load_public_key(path)
            keys[key_id(key)] = key
        if required and not keys:
            raise TrustError("signatures are required but no trusted key is configured: list inference.trust.keys")
        return cls(keys, required)

    def check(self, manifest: ModelManifest, where: str) -> str:
        """Verify ``manifest`` under this policy; returns 'signed (key ...)' or 'unsigned'.

        A signature that does not verify is refused even when signatures are not required:
        a bad signature means the manifest was changed after signing.
        """
        from cryptography.exceptions import InvalidSignature

        label = f"model {manifest.name!r} version {manifest.version!r} ({where})"
        signature = manifest.signature
        if signature is None:
            if self.required:
                raise TrustError(
                    f"{label} is not signed and this site requires signed models: sign it with "
                    f"`edgeplane models add ... --sign-key KEY` using a key listed in inference.trust.keys"
                )
            return "unsigned"
        if signature.algorithm != "ed25519":
            raise TrustError(f"{label} is signed with {signature.algorithm!r}; only ed25519 is supported")
        key = self.keys.get(signature.key_id)
        if key is None:
            if self.required or self.keys:
                raise TrustError(
                    f"{label} is signed by key {signature.key_id}, which this site does not trust "
                    f"(trusted: {', '.join(self.keys) or 'none'}); add its public key to inference.trust.keys"
                )
            return f"signed by {signature.key_id} (not checked: no trusted keys configured)"
        try:
            key.verify(base64.b64decode(signature.value), manifest.signed_bytes())
        except (InvalidSignature, ValueError):
            raise TrustError(
                f"{label}: the signature does not match the manifest (it was changed after signing, or the "
                f"model was replaced); restore the original files or sign the new model again"
            ) from None
        return f"signed by {signature.key_id}"
