"""One SNMP session with a signal controller: GET and SET of NTCIP objects by OID, v2c or v3 (USM).

Errors (every one names the device, the address and what to do), under the core's ConnectorError::

    NtcipError (also ConnectionError)
     ├── NtcipTimeout        no answer in time: controller off-line, wrong address, or (v2c) a wrong
     │                       community, which an agent drops without answering
     ├── NtcipAuthError      SNMPv3: unknown user, wrong authentication or privacy key, unsupported level
     ├── NtcipNoSuchObject   the controller has no such object or row (wrong index, unsupported object)
     └── NtcipRejected       the controller answered with an error status (e.g. a SET it refuses)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Iterable

from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    get_cmd,
    set_cmd,
)
from pysnmp.hlapi.v3arch.asyncio import auth as _auth
from pysnmp.proto import rfc1902, rfc1905

from edgeplane.errors import ConnectorError

__all__ = ["AUTH_PROTOCOLS", "PRIV_PROTOCOLS", "NtcipAuthError", "NtcipError", "NtcipNoSuchObject", "NtcipRejected",
           "NtcipTimeout", "SnmpCredentials", "SnmpSession"]

AUTH_PROTOCOLS = {
    "none": _auth.USM_AUTH_NONE, "md5": _auth.USM_AUTH_HMAC96_MD5, "sha": _auth.USM_AUTH_HMAC96_SHA,
    "sha224": _auth.USM_AUTH_HMAC128_SHA224, "sha256": _auth.USM_AUTH_HMAC192_SHA256,
    "sha384": _auth.USM_AUTH_HMAC256_SHA384, "sha512": _auth.USM_AUTH_HMAC384_SHA512,
}
PRIV_PROTOCOLS = {
    "none": _auth.USM_PRIV_NONE, "des": _auth.USM_PRIV_CBC56_DES, "3des": _auth.USM_PRIV_CBC168_3DES,
    "aes128": _auth.USM_PRIV_CFB128_AES, "aes192": _auth.USM_PRIV_CFB192_AES, "aes256": _auth.USM_PRIV_CFB256_AES,
}
_AUTH_HINTS = ("unknown usm user", "wrong snmp pdu digest", "decryption error", "unsupported security level",
               "unknown security name", "not in time window", "authentication")


class NtcipError(ConnectorError, ConnectionError):
    """A request to a signal controller failed."""


class NtcipTimeout(NtcipError):
    pass


class NtcipAuthError(NtcipError):
    pass


class NtcipNoSuchObject(NtcipError):
    pass


class NtcipRejected(NtcipError):
    pass


@dataclass(frozen=True)
class SnmpCredentials:
    """SNMPv2c (``community``) or SNMPv3 USM (``user`` with optional auth and privacy keys)."""

    version: str = "2c"
    community: str = "public"
    user: str | None = None
    auth_protocol: str = "none"
    auth_key: str | None = None
    priv_protocol: str = "none"
    priv_key: str | None = None

    def auth_data(self) -> CommunityData | UsmUserData:
        if self.version == "2c":
            return CommunityData(self.community, mpModel=1)
        return UsmUserData(
            self.user or "",
            authKey=self.auth_key, privKey=self.priv_key,
            authProtocol=AUTH_PROTOCOLS[self.auth_protocol], privProtocol=PRIV_PROTOCOLS[self.priv_protocol],
        )


class SnmpSession:
    """GET/SET by numeric OID to one agent; values come back as Python ints (or bytes for strings)."""

    def __init__(self, device: str, host: str, port: int, credentials: SnmpCredentials, timeout: float, retries: int,
                 max_varbinds: int = 40):
        self.device, self.host, self.port = device, host, port
        self.credentials = credentials
        self.timeout, self.retries, self.max_varbinds = timeout, retries, max_varbinds
        self._engine: SnmpEngine | None = None
        self._target: UdpTransportTarget | None = None
        self._auth = credentials.auth_data()
        self._context = ContextData()
        # pysnmp resolves an ObjectIdentity on first use and keeps the result: reuse them (a fresh one per poll
        # costs more CPU than the request itself)
        self._identities: dict[str, ObjectType] = {}

    def _object(self, oid: str) -> ObjectType:
        found = self._identities.get(oid)
        if found is None:
            if len(self._identities) > 10_000:  # bounded: OIDs come from the site file, this is a guard
                self._identities.clear()
            found = self._identities[oid] = ObjectType(ObjectIdentity(oid))
        return found

    @property
    def address(self) -> str:
        return f"udp://{self.host}:{self.port}"

    async def open(self) -> None:
        if self._engine is None:
            self._engine = SnmpEngine()
            self._target = await UdpTransportTarget.create((self.host, self.port), timeout=self.timeout, retries=self.retries)

    def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close_dispatcher()

    async def get(self, oids: Iterable[str]) -> dict[str, Any]:
        """Read ``oids``; raises :class:`NtcipNoSuchObject` naming every OID the agent does not have."""
        values, missing = await self.get_many(oids)
        if missing:
            raise NtcipNoSuchObject(f"device {self.device!r} ({self.address}) has no object {', '.join(missing)}: "
                                    f"check the point's object and index against the controller's MIB")
        return values

    async def get_many(self, oids: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
        """Read ``oids`` in requests of at most ``max_varbinds``: (values by OID, OIDs the agent does not have)."""
        oids = list(oids)
        out: dict[str, Any] = {}
        missing: list[str] = []
        for i in range(0, len(oids), self.max_varbinds):
            chunk = oids[i:i + self.max_varbinds]
            var_binds = await self._request(get_cmd, [self._object(o) for o in chunk], "GET")
            if len(var_binds) != len(chunk):
                raise NtcipError(f"device {self.device!r} ({self.address}) answered {len(var_binds)} values to a GET "
                                 f"of {len(chunk)}: lower max_varbinds")
            for oid, (_, value) in zip(chunk, var_binds):
                if isinstance(value, (rfc1905.NoSuchObject, rfc1905.NoSuchInstance, rfc1905.EndOfMibView)):
                    missing.append(oid)
                elif isinstance(value, rfc1902.OctetString):
                    out[oid] = bytes(value)
                else:
                    out[oid] = int(value)
        return out, missing

    async def set(self, values: dict[str, int]) -> None:
        """Write integers (NTCIP bit masks and enumerations are INTEGER) in one SET request."""
        await self._request(set_cmd, [ObjectType(ObjectIdentity(o), rfc1902.Integer(int(v))) for o, v in values.items()], "SET")

    async def _request(self, command: Any, var_binds: list[ObjectType], what: str) -> Any:
        await self.open()
        budget = self.timeout * (self.retries + 1) + 1.0  # pysnmp times out itself; this is a backstop
        try:
            error, status, index, answer = await asyncio.wait_for(
                command(self._engine, self._auth, self._target, self._context, *var_binds, lookupMib=False), budget)
        except asyncio.TimeoutError:
            error, status, index, answer = "requestTimedOut", 0, 0, ()
        if error:
            text = str(error)
            if "timed out" in text.lower() or "timeout" in text.lower():
                hint = ("check the address and that the controller is on-line; with SNMPv2c also the community: an agent "
                        "drops requests with an unknown community without answering") if self.credentials.version == "2c" \
                    else "check the address and that the controller is on-line"
                raise NtcipTimeout(f"device {self.device!r}: no answer to SNMP {what} from {self.address} within "
                                   f"{self.timeout:g} s x {self.retries + 1} tries: {hint}")
            if any(h in text.lower() for h in _AUTH_HINTS):
                raise NtcipAuthError(f"device {self.device!r} ({self.address}) refused SNMPv3 credentials of user "
                                     f"{self.credentials.user!r}: {text}; check user, auth_protocol/auth_key and "
                                     f"priv_protocol/priv_key against the controller's USM table")
            raise NtcipError(f"device {self.device!r} ({self.address}): SNMP {what} failed: {text}")
        if int(status):
            bad = var_binds[int(index) - 1][0] if 0 < int(index) <= len(var_binds) else None
            name = status.prettyPrint() if hasattr(status, "prettyPrint") else str(status)
            oid = str(bad) if bad is not None else "?"
            if name in ("noSuchName", "notWritable", "noAccess", "noCreation") and what == "SET":
                raise NtcipRejected(f"device {self.device!r} ({self.address}) refused SET of {oid}: {name}; "
                                    f"the object is read-only or absent on this controller (or the community/user "
                                    f"has no write access)")
            raise NtcipRejected(f"device {self.device!r} ({self.address}): SNMP {what} of {oid} answered {name}")
        return answer
