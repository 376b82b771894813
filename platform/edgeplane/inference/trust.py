"""ed25519 signing and verification of model manifests.

A site trusts the public keys listed in ``inference.trust.keys``. A manifest's signature is
checked against the key whose id it names. Key files are read by :mod:`edgeplane.keys` (PEM,
OpenSSH, base64 or hex); its functions are re-exported here.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeplane.inference.errors import TrustError
from edgeplane.inference.manifest import ModelManifest, Signature
from edgeplane.keys import KeyFileError, generate_keypair, key_id, load_private_key, load_public_key

__all__ = ["TrustPolicy", "generate_keypair", "key_id", "load_private_key", "load_public_key", "sign_manifest"]


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
            try:
                key = load_public_key(path, what="trusted key")
            except KeyFileError as e:
                raise TrustError(f"{e}; fix inference.trust.keys") from None
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
