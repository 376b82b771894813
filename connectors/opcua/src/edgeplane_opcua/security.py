"""The secure channel: this client's certificate and key, and the decision to trust a server.

A server is trusted when its certificate (as its endpoint presents it) is the pinned file, is
in the trust folder, or has the pinned thumbprint. Anything else is refused before a single
secured byte is sent, with the thumbprint in the message so an operator can pin it knowingly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgeplane.errors import ConnectorError

from edgeplane_opcua.config import SecurityConfig

__all__ = ["CertificateRejected", "ClientIdentity", "check_server_certificate", "first_certificate", "load_identity",
           "thumbprint"]

_POLICIES = {"Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256}
_MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}
_CERT_SUFFIXES = {".der", ".pem", ".crt", ".cer"}


class CertificateRejected(ConnectorError):
    """The server's certificate is not trusted, or this client's own certificate is unusable."""


@dataclass(frozen=True)
class ClientIdentity:
    """This client's certificate and key (DER) and the application URI its certificate names."""

    certificate_der: bytes
    private_key_der: bytes
    application_uri: str | None


def _load_cert(data: bytes, source: str) -> x509.Certificate:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise CertificateRejected(f"{source} is not a certificate (DER or PEM): {e}") from None


def thumbprint(der: bytes, algorithm: str = "sha1") -> str:
    """Hex thumbprint of a DER certificate (SHA-1 is what OPC UA tools show)."""
    return hashlib.new(algorithm, der).hexdigest()


def first_certificate(der_chain: bytes) -> bytes:
    """The leaf certificate of a DER chain (servers may send their chain concatenated)."""
    if len(der_chain) < 4 or der_chain[0] != 0x30 or der_chain[1] != 0x82:
        return der_chain
    return der_chain[: int.from_bytes(der_chain[2:4], "big") + 4]


def load_identity(security: SecurityConfig, base: Path) -> ClientIdentity:
    """Read the client certificate and key named by ``security`` (blocking: run it in a thread)."""
    assert security.certificate and security.private_key
    cert_path = (base / security.certificate).expanduser()
    key_path = (base / security.private_key).expanduser()
    try:
        cert = _load_cert(cert_path.read_bytes(), f"client certificate {str(cert_path)!r}")
    except OSError as e:
        raise CertificateRejected(f"cannot read client certificate {str(cert_path)!r}: {e.strerror}") from None
    try:
        key_bytes = key_path.read_bytes()
    except OSError as e:
        raise CertificateRejected(f"cannot read client private key {str(key_path)!r}: {e.strerror}") from None
    password = security.private_key_password.get_secret_value().encode() if security.private_key_password else None
    try:
        if b"-----BEGIN" in key_bytes:
            key = serialization.load_pem_private_key(key_bytes, password)
        else:
            key = serialization.load_der_private_key(key_bytes, password)
    except (ValueError, TypeError) as e:
        raise CertificateRejected(
            f"cannot load client private key {str(key_path)!r}: {e} (a wrong or missing 'private_key_password'?)"
        ) from None
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise CertificateRejected(f"client certificate {str(cert_path)!r} and key {str(key_path)!r} do not belong together")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ClientIdentity(cert.public_bytes(serialization.Encoding.DER), key_der, uris[0] if uris else None)


def _trusted_ders(security: SecurityConfig, base: Path) -> list[bytes]:
    ders: list[bytes] = []
    if security.server_certificate:
        path = (base / security.server_certificate).expanduser()
        try:
            ders.append(_load_cert(path.read_bytes(), f"server certificate {str(path)!r}").public_bytes(serialization.Encoding.DER))
        except OSError as e:
            raise CertificateRejected(f"cannot read pinned server certificate {str(path)!r}: {e.strerror}") from None
    if security.trust_dir:
        folder = (base / security.trust_dir).expanduser()
        if not folder.is_dir():
            raise CertificateRejected(f"trust folder {str(folder)!r} does not exist: create it and copy the server's certificate into it")
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in _CERT_SUFFIXES and path.is_file():
                ders.append(_load_cert(path.read_bytes(), f"trusted certificate {str(path)!r}").public_bytes(serialization.Encoding.DER))
    return ders


def check_server_certificate(server_der: bytes, security: SecurityConfig, base: Path) -> None:
    """Raise :class:`CertificateRejected` unless the server certificate is trusted (blocking)."""
    leaf = first_certificate(server_der)
    if security.server_thumbprint:
        algorithm = "sha1" if len(security.server_thumbprint) == 40 else "sha256"
        if thumbprint(leaf, algorithm) == security.server_thumbprint:
            return
    if leaf in _trusted_ders(security, base):
        return
    raise CertificateRejected(
        f"the server's certificate (SHA-1 thumbprint {thumbprint(leaf)}) is not trusted: it matches neither "
        "'server_thumbprint', 'server_certificate' nor a file in 'trust_dir'. If this server is the one you "
        "expect, pin it with 'server_thumbprint: " + thumbprint(leaf) + "'"
    )


async def server_endpoint(url: str, security: SecurityConfig, timeout: float) -> ua.EndpointDescription:
    """The server's endpoint for the configured policy and mode (asked over an unsecured channel)."""
    probe = Client(url, timeout=timeout)
    endpoints = await probe.connect_and_get_server_endpoints()
    policy_uri = _POLICIES[security.policy].URI
    mode = _MODES[security.mode]
    for endpoint in endpoints:
        if endpoint.SecurityPolicyUri == policy_uri and endpoint.SecurityMode == mode:
            return endpoint
    offered = sorted({f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}" for e in endpoints})
    raise CertificateRejected(
        f"the server offers no endpoint with policy {security.policy} and mode {security.mode}; "
        f"it offers: {', '.join(offered)}"
    )


async def apply_security(client: Client, security: SecurityConfig, identity: ClientIdentity, server_der: bytes) -> None:
    """Configure ``client`` for the secure channel (call before ``connect``)."""
    await client.set_security(
        _POLICIES[security.policy],
        certificate=identity.certificate_der,
        private_key=identity.private_key_der,
        server_certificate=first_certificate(server_der),
        mode=_MODES[security.mode],
    )
