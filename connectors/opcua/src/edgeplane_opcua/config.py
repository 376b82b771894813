"""What a site file may say about an OPC UA device and its points.

A device entry::

    plc1:
      connector: opcua
      url: opc.tcp://10.0.0.5:4840
      security: {policy: Basic256Sha256, mode: SignAndEncrypt,
                 certificate: pki/client.der, private_key: pki/client.pem,
                 server_thumbprint: 3F:2A:...}          # or trust_dir: pki/trusted
      username: edge
      password: ${env:PLC1_PASSWORD}
      points:
        temperature: {node: "ns=2;s=Machine.Temperature", sampling_interval: 100ms, deadband: 0.1}
        speed:       {path: "Objects/2:Machine/2:Speed", mode: poll}
        vibration:   {node: "ns=2;s=Machine.Vibration", sample_rate: 1000}   # an array window
        setpoint:    {node: "ns=2;s=Machine.Setpoint", access: rw, limits: {min: 0, max: 100}}
        reset:       {method: "ns=2;s=Machine.Reset", object: "ns=2;s=Machine", access: w}

Paths in ``security`` are relative to the site file.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from edgeplane import DeviceConfig, Duration, PointSpec
from edgeplane.reconnect import ReconnectPolicy

__all__ = ["OpcUaConfig", "OpcUaPoint", "SecurityConfig"]

_THUMBPRINT_RE = re.compile(r"^[0-9a-fA-F:]+$")


class OpcUaPoint(PointSpec):
    """One point: a variable (by ``node`` or ``path``) or a method (``method``)."""

    node: str | None = Field(None, description="NodeId string, e.g. 'ns=2;s=Machine.Temperature' or 'ns=2;i=1001'")
    path: str | None = Field(
        None,
        description="browse path from the Objects folder, e.g. 'Machine/Temperature' or '2:Machine/2:Temperature' "
        "(a name without 'ns:' matches that browse name in any namespace)",
    )
    method: str | None = Field(
        None, description="a method to call when this point is commanded: NodeId string or browse path"
    )
    object: str | None = Field(
        None, description="the object that owns 'method' (NodeId or browse path); default: the method's parent"
    )
    mode: Literal["subscribe", "poll"] | None = Field(None, description="override the device's mode for this point")
    sampling_interval: Duration | None = Field(None, description="server sampling interval; default the device's")
    queue_size: int | None = Field(None, ge=0, description="server-side queue of the monitored item")
    deadband: float | None = Field(None, ge=0, description="report a change only when it exceeds this")
    deadband_type: Literal["absolute", "percent"] = "absolute"
    sample_rate: float | None = Field(
        None, gt=0,
        description="for array (waveform) nodes: samples per second; each sample gets its own timestamp, "
        "the last sample carries the node's timestamp. Without it every sample carries the node's timestamp",
    )

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaPoint:
        given = [k for k in ("node", "path", "method") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "a point needs exactly one of 'node' (a NodeId such as 'ns=2;s=Temp'), 'path' (a browse path "
                f"such as 'Machine/Temp') or 'method'; got {', '.join(given) or 'none'}"
            )
        if self.method and self.access == "r":
            raise ValueError("a method point is a command: set 'access: w'")
        if self.object and not self.method:
            raise ValueError("'object' only applies to method points")
        if self.node:
            from asyncua import ua

            try:
                ua.NodeId.from_string(self.node)
            except Exception as e:  # noqa: BLE001 - asyncua raises several types for bad strings
                raise ValueError(f"{self.node!r} is not a NodeId string ({e}); write e.g. 'ns=2;s=Temp' or 'ns=2;i=1001'") from None
        return self


class SecurityConfig(BaseModel):
    """The secure channel: policy, mode, this client's certificate, and which server to trust.

    Not :class:`edgeplane.config.TlsSettings`: OPC UA signs and encrypts its own messages with an
    application instance certificate (DER or PEM, its application URI in subjectAltName) and
    trusts a server by thumbprint, pinned certificate or trust folder, not by a CA chain and a
    host name, and no ``ssl.SSLContext`` is involved (asyncua does the crypto).
    """

    model_config = ConfigDict(extra="forbid")

    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: str | None = Field(None, description="client certificate (DER or PEM), relative to the site file")
    private_key: str | None = Field(None, description="client private key (PEM or DER), relative to the site file")
    private_key_password: SecretStr | None = None
    server_certificate: str | None = Field(None, description="the server's certificate file to pin")
    trust_dir: str | None = Field(None, description="folder of trusted server certificates (DER or PEM)")
    server_thumbprint: str | None = Field(
        None, description="SHA-1 (OPC UA's usual) or SHA-256 hex thumbprint of the server certificate to pin"
    )

    @field_validator("policy", "mode", mode="before")
    @classmethod
    def _none_spelled_null(cls, value: object) -> object:
        # YAML reads a bare `None` as the string "None" but `null`/`~` as None: both mean no security
        return "None" if value is None else value

    @field_validator("server_thumbprint")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _THUMBPRINT_RE.match(value) or len(value.replace(":", "")) not in (40, 64):
            raise ValueError("a thumbprint is 40 (SHA-1) or 64 (SHA-256) hex digits, colons allowed")
        return value.replace(":", "").lower()

    @model_validator(mode="after")
    def _consistent(self) -> SecurityConfig:
        if self.policy == "None":
            if self.mode != "None":
                raise ValueError(f"mode {self.mode!r} needs a policy: set 'policy: Basic256Sha256'")
            return self
        if self.mode == "None":
            raise ValueError(f"policy {self.policy} needs 'mode: Sign' or 'mode: SignAndEncrypt'")
        if not (self.certificate and self.private_key):
            raise ValueError(
                f"policy {self.policy} needs this client's 'certificate' and 'private_key' files "
                "(an application certificate with the URI in its subjectAltName, e.g. made with openssl)"
            )
        if not (self.server_certificate or self.trust_dir or self.server_thumbprint):
            raise ValueError(
                "a secure channel must know which server to trust: set 'server_thumbprint' (shown by "
                "`edgeplane opcua browse`), 'server_certificate' or 'trust_dir'"
            )
        return self


class OpcUaConfig(DeviceConfig):
    """An OPC UA server (one endpoint) and the points read from it."""

    url: str = Field(description="endpoint URL, e.g. opc.tcp://10.0.0.5:4840/freeopcua/server/")
    points: dict[str, OpcUaPoint] = Field(default_factory=dict)
    mode: Literal["subscribe", "poll"] = Field(
        "subscribe", description="data-change subscriptions, or polling (set 'poll:') for servers without them"
    )
    publishing_interval: Duration = Field(0.5, description="how often the server sends a subscription's changes")
    sampling_interval: Duration = Field(0.1, description="default server sampling interval of each point")
    queue_size: int = Field(1, ge=0, description="default server-side queue size of each monitored item")
    timestamps: Literal["source", "server", "client"] = Field(
        "source", description="which time stamps a reading: the source's, the server's (falling back in that "
        "order to the next one when a server leaves it out), or this host's clock"
    )
    timeout: Duration = Field(4.0, description="how long one request may take")
    watchdog: Duration = Field(1.0, description="how often the link is checked while no data arrive")
    reconnect_initial: Duration = Field(ReconnectPolicy.initial, description="first wait before reconnecting after a lost link")
    reconnect_max: Duration = Field(ReconnectPolicy.maximum, description="longest wait between reconnect attempts: "
                                    "a server that returns is reconnected within this long")
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    username: str | None = None
    password: SecretStr | None = Field(None, description="write it as a reference: ${env:NAME} or ${file:PATH}")
    application_uri: str | None = Field(
        None, description="this client's application URI; default: taken from the client certificate"
    )

    @field_validator("url")
    @classmethod
    def _opc_tcp(cls, value: str) -> str:
        if not value.startswith("opc.tcp://"):
            raise ValueError(f"{value!r} is not an OPC UA endpoint: write e.g. 'opc.tcp://10.0.0.5:4840'")
        return value

    @model_validator(mode="after")
    def _auth(self) -> OpcUaConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("'username' and 'password' go together: set both, or neither for anonymous access")
        if self.mode == "poll" or any(p.mode == "poll" for p in self.points.values()):
            if self.poll is None:
                raise ValueError("polled points need the device's polling period: add e.g. 'poll: 1s'")
        return self
