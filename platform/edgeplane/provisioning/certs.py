"""Site certificates and keys for ``edgeplane site certs``: X.509 for mutual TLS, ed25519 for the downlink.

Layout in a site folder::

    certs/site.key      the site's private key (EC P-256), mode 0600, never printed
    certs/site.csr      a request for an external CA (CN = the site id)
    certs/site.pem      the site's certificate (from the given CA, or the lab CA): client auth to the
                        broker; with --host, also server auth for the site console's TLS
    certs/ca.pem        the CA that signed it (the broker must trust it; the site trusts it for the broker)
    keys/cloud.pub      the downlink trust key: the cloud's ed25519 public key (sync.trust.keys)

With no CA given, a lab CA and a lab downlink signing key are made in the **operator folder**
(``--operator-dir``, else ``$EDGEPLANE_OPERATOR_DIR``, else ``~/.config/edgeplane/operator``)::

    lab-ca/ca.pem, lab-ca/ca.key      the lab CA (key 0600): signs site certificates
    cloud-signing.key, .pub           the downlink signing key pair (private key 0600)

Never in the site folder: a site folder is copied onto the site (a ConfigMap, a volume, a USB
stick), and whoever holds the signing key can reconfigure every site that trusts it, whoever
holds the CA key can mint a certificate for any other site's topic tree. An operator folder
inside the site folder is refused, and keys an older version left in ``FOLDER/lab-ca/`` are
moved out to the operator folder. In the field the CA and the signing key stay with the
operator (or in an HSM) and only the public parts come to the site.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertResult", "issue_certificate", "make_ca", "operator_folder", "provision_certs", "revoke_certificates",
           "write_private"]

# private keys that can sign a certificate (what a CA key file must hold)
_ISSUER_KEYS = (rsa.RSAPrivateKey, dsa.DSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
                ed448.Ed448PrivateKey)


def operator_folder(given: Path | None = None) -> Path:
    """Where the operator's lab CA and downlink signing key live: never on a site."""
    if given is not None:
        return Path(given)
    env = os.environ.get("EDGEPLANE_OPERATOR_DIR")
    return Path(env) if env else Path.home() / ".config" / "edgeplane" / "operator"


def write_private(path: Path, data: bytes) -> None:
    """Write a private key file that is 0600 from its first byte (no window where others can read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(cn: str, days: int = 3650) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new self-signed CA (EC P-256)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5)).not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_certificate(csr_or_key: x509.CertificateSigningRequest | ec.EllipticCurvePrivateKey, cn: str,
                      ca_cert: x509.Certificate, ca_key: CertificateIssuerPrivateKeyTypes, *, days: int = 365, server: bool = False,
                      hosts: list[str] | None = None) -> x509.Certificate:
    """A leaf certificate for ``cn`` signed by the CA: client auth, plus server auth and SANs if ``server``."""
    public_key = csr_or_key.public_key()
    builder = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject).public_key(public_key).serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5)).not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, *([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])]),
                       critical=False)
        # the CA key's public half is the one in ca_cert (make_ca and _load_ca pair them)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


@dataclass
class CertResult:
    """What :func:`provision_certs` wrote (paths), for the CLI to list. Never holds key material."""

    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _load_ca(ca_cert_path: Path, ca_key_path: Path) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key, _ISSUER_KEYS):
        raise ValueError(f"{ca_key_path} holds a {type(ca_key).__name__}, which cannot sign certificates: give the "
                         f"CA's RSA, DSA, EC or Ed25519/Ed448 private key")
    if ca_cert.public_key() != ca_key.public_key():
        raise ValueError(f"{ca_key_path} is not the private key of {ca_cert_path}: give the matching pair")
    return ca_cert, ca_key


def _move_off_site(folder: Path, operator: Path, result: CertResult) -> None:
    """Keys an older version wrote into the site folder go to the operator folder (or are flagged)."""
    old = folder / "lab-ca"
    moves = {old / "ca.key": operator / "lab-ca" / "ca.key", old / "ca.pem": operator / "lab-ca" / "ca.pem",
             old / "cloud-signing.key": operator / "cloud-signing.key"}
    for source, target in moves.items():
        if not source.exists():
            continue
        if target.exists():
            result.notes.append(f"{source} is a copy of an operator key on the site: delete it "
                                f"(the operator's is {target})")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        if target.name == "cloud-signing.key":
            from edgeplane.sync.signing import load_private_key

            public = load_private_key(target).public_key()
            target.with_suffix(".pub").write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                                                        serialization.PublicFormat.SubjectPublicKeyInfo))
        result.notes.append(f"moved {source} to {target}: keys that sign for the fleet never stay on a site")
    if old.is_dir() and not any(old.iterdir()):
        old.rmdir()


def provision_certs(folder: Path, site_id: str, *, ca_cert: Path | None = None, ca_key: Path | None = None,
                    trust_key: Path | None = None, days: int = 365, force: bool = False,
                    operator_dir: Path | None = None, hosts: Sequence[str] = ()) -> CertResult:
    """Write the site's key, CSR, certificate, CA and downlink trust key into ``folder``; a lab CA
    and signing key, when made, into the operator folder (see module doc).

    The certificate always authenticates the site to the broker (client auth). With ``hosts`` (the
    names and addresses browsers reach the site console at) it also serves the console over TLS:
    server auth, with those as its subject alternative names."""
    from edgeplane.sync.signing import generate_keypair, load_public_key

    result = CertResult()
    operator = operator_folder(operator_dir).expanduser().resolve()
    if operator.is_relative_to(folder.resolve()):
        raise ValueError(f"the operator folder {operator} is inside the site folder {folder}: the CA key and the "
                         "downlink signing key must never be on a site; pass --operator-dir outside it")
    if (ca_cert is None) != (ca_key is None):
        raise ValueError("give both --ca-cert and --ca-key (to sign here), or neither (a lab CA is made)")
    certs, keys = folder / "certs", folder / "keys"
    certs.mkdir(parents=True, exist_ok=True)
    keys.mkdir(parents=True, exist_ok=True)
    _move_off_site(folder, operator, result)

    key_path = certs / "site.key"
    if key_path.exists() and not force:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC key; remove it or pass --force to make a new one")
        os.chmod(key_path, 0o600)
        result.kept.append(key_path)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(key_path, _key_pem(key))
        result.written.append(key_path)

    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site_id)]))
           .sign(key, hashes.SHA256()))
    (certs / "site.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    result.written.append(certs / "site.csr")

    if ca_cert is not None and ca_key is not None:
        ca, ca_private = _load_ca(Path(ca_cert), Path(ca_key))
        result.notes.append(f"signed by the CA {ca.subject.rfc4514_string()} ({ca_cert})")
    else:
        lab = operator / "lab-ca"
        lab_cert, lab_key = lab / "ca.pem", lab / "ca.key"
        if lab_cert.exists() and lab_key.exists():
            ca, ca_private = _load_ca(lab_cert, lab_key)
            result.kept += [lab_cert, lab_key]
        else:
            ca, ca_private = make_ca(f"edgeplane lab CA ({site_id})")
            lab.mkdir(parents=True, exist_ok=True)
            lab_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
            write_private(lab_key, _key_pem(ca_private))
            result.written += [lab_cert, lab_key]
        result.notes.append(f"signed by the lab CA in {lab}/ (the operator's side, not the site's): for a lab only; "
                            "in the field, have certs/site.csr signed by your CA and run again with --ca-cert/--ca-key, "
                            "or copy the signed file to certs/site.pem")
    cert = issue_certificate(key, site_id, ca, ca_private, days=days, server=bool(hosts), hosts=list(hosts))
    (certs / "site.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (certs / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    result.written += [certs / "site.pem", certs / "ca.pem"]

    trust_target = keys / "cloud.pub"
    if trust_key is not None:
        load_public_key(trust_key)  # refuse a file that is not an ed25519 public key before copying it
        trust_target.write_bytes(Path(trust_key).read_bytes())
        result.written.append(trust_target)
    elif trust_target.exists() and not force:
        result.kept.append(trust_target)
    else:
        signing, public = operator / "cloud-signing.key", operator / "cloud-signing.pub"
        signing.parent.mkdir(parents=True, exist_ok=True)
        if not (signing.exists() and public.exists()):
            generate_keypair(signing, public)  # one lab signing key per operator, shared by the lab's sites
            result.written += [signing, public]
        else:
            result.kept += [signing, public]
        os.chmod(signing, 0o600)
        trust_target.write_bytes(public.read_bytes())
        result.written.append(trust_target)
        result.notes.append(f"the lab downlink signing key is {signing} (the operator's side): 'edgeplane cloud push-site' "
                            "signs with it; in the field, pass --trust-key with the cloud's public key instead")
    return result


def revoke_certificates(crl_path: Path, ca_cert_path: Path, ca_key_path: Path, certificates: list[Path], *,
                        days: int = 30) -> list[x509.Certificate]:
    """Add ``certificates`` to the CA's certificate revocation list at ``crl_path`` (made if absent),
    re-signed by the CA and valid for ``days``; returns the certificates newly revoked.

    The broker reads the list (Mosquitto: ``crlfile`` in the listener) and refuses a revoked
    site's TLS handshake. Re-issue the list before ``days`` run out: a broker refuses every
    client once its CRL has expired.
    """
    ca, ca_key = _load_ca(Path(ca_cert_path), Path(ca_key_path))
    now = _now()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
               .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=days)))
    revoked_serials: set[int] = set()
    if Path(crl_path).exists():
        old = x509.load_pem_x509_crl(Path(crl_path).read_bytes())
        if not old.is_signature_valid(ca_key.public_key()):  # the CA's public key (_load_ca checked the pair)
            raise ValueError(f"{crl_path} is not signed by {ca_cert_path}: give the CA that issued it")
        for entry in old:
            builder = builder.add_revoked_certificate(entry)
            revoked_serials.add(entry.serial_number)
    added = []
    for path in certificates:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
        if cert.issuer != ca.subject:
            raise ValueError(f"{path} was issued by {cert.issuer.rfc4514_string()}, not by {ca.subject.rfc4514_string()}")
        if cert.serial_number in revoked_serials:
            continue
        entry = (x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(now)
                 .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False).build())
        builder = builder.add_revoked_certificate(entry)
        revoked_serials.add(cert.serial_number)
        added.append(cert)
    crl = builder.sign(ca_key, hashes.SHA256())
    Path(crl_path).parent.mkdir(parents=True, exist_ok=True)
    Path(crl_path).write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return added
