"""The ``console:`` section of a site file: the site console on the host's HTTP port.

::

    http: {host: 0.0.0.0, port: 8712}
    console:
      users:                                   # password hashes by reference, never in the file
        alice: {role: operator, password_hash: "${file:secrets/alice.hash}"}
        bob:   {role: viewer,   password_hash: "${env:CONSOLE_BOB_HASH}"}
      tls: {cert: certs/site.pem, key: certs/site.key}   # required when http.host is not loopback

Make a hash with ``python -m edgeplane.console hash-password``. Without a ``console:`` section
the HTTP port serves only ``/metrics``, ``/healthz`` and ``/readyz``.

This module imports nothing heavy, so the core's config can import it.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from edgeplane.config.base import ConfigModel
from edgeplane.config.tls import TlsSettings
from edgeplane.config.units import Duration

__all__ = ["ConsoleConfig", "ConsoleTls", "ConsoleUser", "is_loopback"]

Role = Literal["viewer", "operator"]


class ConsoleUser(ConfigModel):
    role: Role = Field(description="viewer: sees everything, writes nothing; operator: may also write points")
    password_hash: SecretStr = Field(
        description="argon2 hash of the password (python -m edgeplane.console hash-password), by reference: "
                    "'${file:secrets/NAME.hash}' or '${env:NAME}'"
    )

    @field_validator("password_hash")
    @classmethod
    def _is_a_hash(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if not text.startswith("$argon2"):
            raise ValueError("not an argon2 hash (it must start with '$argon2'): never put a password here; "
                             "make the hash with `python -m edgeplane.console hash-password`")
        return value


class ConsoleTls(TlsSettings):
    """The core's :class:`TlsSettings` on the server side: the site's certificate and key, nothing to verify."""

    cert: str | None = Field("certs/site.pem", description="the site's certificate (PEM), relative to the site file")
    key: str | None = Field("certs/site.key", description="its private key (PEM), relative to the site file")

    @model_validator(mode="after")
    def _server_fields_only(self) -> ConsoleTls:
        # the console asks browsers for no certificate, so the client-side fields would do nothing
        for name in ("ca", "verify", "verify_hostname"):
            if name in self.model_fields_set:
                raise ValueError(f"'{name}' does not apply to the console (a server that asks browsers for "
                                 "no certificate): remove it; set 'cert' and 'key' (and 'key_password')")
        return self


class ConsoleConfig(ConfigModel):
    enabled: bool = True
    users: dict[str, ConsoleUser] = Field(default_factory=dict, description="who may log in, with their role")
    tls: ConsoleTls | None = Field(None, description="serve the HTTP port over TLS; required beyond localhost")
    session_ttl: Duration = Field(8 * 3600.0, description="a session ends after this long without a request")
    max_failed_logins: int = Field(5, ge=1, description="failed logins per user or address before a lockout")
    lockout: Duration = Field(300.0, description="how long a lockout lasts")
    history_points: int = Field(900, ge=10, le=100_000, description="samples kept per point for its plot (one per second)")
    profiles_dir: str = Field("profiles", description="where commissioning saves device profiles, relative to the site file")

    @field_validator("users")
    @classmethod
    def _user_names(cls, value: dict[str, ConsoleUser]) -> dict[str, ConsoleUser]:
        import re

        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", name):
                raise ValueError(f"user name {name!r}: use letters, digits, '_', '.', '@', '-' (at most 64)")
        return value

    def check_binding(self, http_host: str) -> None:
        """Refuse a console reachable beyond this machine without TLS (raises ValueError)."""
        if self.enabled and self.tls is None and not is_loopback(http_host):
            raise ValueError(f"console: http.host is {http_host!r}, reachable beyond this machine, and console.tls is "
                             "not set: add 'console: {tls: {cert: certs/site.pem, key: certs/site.key}}' (the site's "
                             "certificate, see `edgeplane site certs`) or bind http.host to 127.0.0.1")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
