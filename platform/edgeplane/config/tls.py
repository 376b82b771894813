"""TLS settings, once for every link: the sync uplink, the MQTT connector, the cloud's clients, http-json, the console.

A client (``client_context``) checks the peer's certificate against ``ca`` (the system's CAs when
it is not set) and, unless told otherwise, that the certificate names the host it dialled; with
``cert`` and ``key`` it also shows a certificate of its own (mutual TLS). A server
(``server_context``: the site console) shows ``cert`` with ``key``.

Paths are relative to the site file's folder (``base_dir``), ``~`` is expanded. The files are read
when the context is built: build it in a worker thread where the event loop must not wait.

Where a section writes them (site files use both shapes)::

    devices: {plant: {connector: mqtt, url: mqtts://broker:8883,
                      tls: {ca: certs/ca.pem, cert: certs/edge.pem, key: certs/edge.key}}}
    sync: {uplink: {url: mqtts://cloud:8883, ca: certs/ca.pem, cert: certs/site.pem, key: certs/site.key}}
    console: {tls: {cert: certs/site.pem, key: certs/site.key}}

OPC UA's secure channel is not TLS (it signs and encrypts OPC UA messages with application
certificates and trusts a server by thumbprint or trust list), so ``edgeplane_opcua`` keeps its
own ``security:`` section.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from edgeplane.config.base import ConfigModel

__all__ = ["TlsSettings"]


class TlsSettings(ConfigModel):
    """Which certificates to trust and which one to show, and one :class:`ssl.SSLContext` built from them."""

    ca: str | None = Field(None, description="CA bundle (PEM) that signed the peer's certificate; default: the system's CAs")
    cert: str | None = Field(None, description="this end's certificate (PEM): a client's for mutual TLS, a server's own")
    key: str | None = Field(None, description="the private key (PEM) of 'cert'")
    key_password: SecretStr | None = Field(None, description="password of an encrypted 'key', as ${env:NAME} or ${file:PATH}")
    verify: bool = Field(True, description="check the peer's certificate; turn off only for a lab device")
    verify_hostname: bool = Field(True, description="check that the peer's certificate names the host dialled")

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS needs both 'cert' and 'key' (the certificate and its private key): give both or neither")
        return self

    def path(self, value: str | None, base_dir: Path | None = None) -> str | None:
        """``value`` (one of the file fields) as a path: relative to ``base_dir``, ``~`` expanded."""
        return None if value is None else str((Path(base_dir or ".") / value).expanduser())

    def client_context(self, base_dir: Path | None = None) -> ssl.SSLContext:
        """The context a client connects with (reads the files: call it off the event loop)."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.path(self.ca, base_dir))
        if not self.verify_hostname or not self.verify:
            context.check_hostname = False
        if not self.verify:
            context.verify_mode = ssl.CERT_NONE
        self._load_identity(context, base_dir)
        return context

    def server_context(self, base_dir: Path | None = None) -> ssl.SSLContext:
        """The context a server listens with: it shows ``cert``, TLS 1.2 or newer."""
        if self.cert is None:
            raise ValueError("a TLS server needs 'cert' and 'key': set both")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load_identity(context, base_dir)
        return context

    def _load_identity(self, context: ssl.SSLContext, base_dir: Path | None) -> None:
        certfile, keyfile = self.path(self.cert, base_dir), self.path(self.key, base_dir)
        if certfile is None:
            return
        password = self.key_password.get_secret_value() if self.key_password else None
        try:
            context.load_cert_chain(certfile, keyfile, password)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"cannot load the certificate {certfile!r} with key {keyfile!r}: {e}; "
                             "fix the paths in 'cert'/'key' (relative to the site file) or the 'key_password'") from e
