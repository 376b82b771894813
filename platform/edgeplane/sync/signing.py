"""Signed downlink messages: ed25519 over the exact payload bytes.

A signed message on the wire is JSON ``{"v": 1, "key": <key id>, "payload": <base64>, "sig": <base64>}``;
the payload is JSON ``{"id", "site", "kind", "revision", "issued", "expires", "body"}``. The key id
is the first 16 hex digits of the sha256 of the raw 32-byte public key, so a site can hold several
trusted keys (rotation) and say which one a message claimed.

``revision`` is a non-negative integer that the sender raises for every message of a kind to a
site; the site refuses a message whose revision is not above the highest it has accepted for
that kind (:class:`~edgeplane.sync.downlink.Downlink`), so an old signed message cannot be
replayed to roll a site back. ``issued``/``expires`` bound how long a message may take to arrive;
they are not the replay defence (a site's clock may be wrong).

Nothing from a message is echoed back before its signature verifies: a refusal names a claimed
key id only when it has the shape of one.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
import uuid
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgeplane.errors import EdgeplaneError
from edgeplane.keys import generate_keypair, key_id, load_private_key, load_public_key

__all__ = ["MAX_REVISION", "DownlinkRefused", "generate_keypair", "key_id", "load_private_key", "load_public_key", "sign",
           "verify"]

MAX_REVISION = 2**63 - 1  # fits SQLite's INTEGER and a signed 64-bit counter anywhere else
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_MAX_ID = 128


class DownlinkRefused(EdgeplaneError):
    """A downlink message was refused. ``reason`` is a short metric label, the message says why."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


def sign(private_key: Ed25519PrivateKey, *, site: str, kind: str, body: dict[str, Any], revision: int,
         ttl: float | None = None, issued: float | None = None, message_id: str | None = None) -> bytes:
    """A signed downlink message for ``site``; ``ttl`` seconds after ``issued`` it expires.

    ``revision`` must be higher than that of every earlier ``kind`` message to this site, or
    the site refuses it as replayed.
    """
    if isinstance(revision, bool) or not isinstance(revision, int) or not 0 <= revision <= MAX_REVISION:
        raise ValueError(f"revision must be an integer from 0 to {MAX_REVISION}, got {revision!r}")
    issued = time.time() if issued is None else issued
    payload = json.dumps({"id": message_id or uuid.uuid4().hex, "site": site, "kind": kind, "revision": revision,
                          "issued": issued, "expires": None if ttl is None else issued + ttl, "body": body},
                         separators=(",", ":"), sort_keys=True).encode()
    return json.dumps({"v": 1, "key": key_id(private_key.public_key()), "payload": base64.b64encode(payload).decode(),
                       "sig": base64.b64encode(private_key.sign(payload)).decode()}).encode()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _shape_problem(message: Any) -> str | None:
    """What is wrong with a verified payload's shape, or None. Signed is not the same as well-formed."""
    if not isinstance(message, dict):
        return f"the payload is a JSON {type(message).__name__}, not an object"
    problems = []
    if not isinstance(message.get("id"), str) or not 0 < len(message["id"]) <= _MAX_ID:
        problems.append(f"'id' must be a string of 1 to {_MAX_ID} characters")
    if not isinstance(message.get("site"), str):
        problems.append("'site' must be a string")
    if not isinstance(message.get("kind"), str):
        problems.append("'kind' must be a string")
    revision = message.get("revision")
    if isinstance(revision, bool) or not isinstance(revision, int) or not 0 <= revision <= MAX_REVISION:
        problems.append(f"'revision' must be an integer from 0 to {MAX_REVISION}")
    if not _number(message.get("issued")):
        problems.append("'issued' must be a finite number (seconds since the epoch)")
    if "expires" not in message or (message["expires"] is not None and not _number(message["expires"])):
        problems.append("'expires' must be null or a finite number (seconds since the epoch)")
    if not isinstance(message.get("body"), dict):
        problems.append("'body' must be an object")
    return "; ".join(problems) or None


def verify(data: bytes, trusted: dict[str, Ed25519PublicKey], *, site: str, now: float) -> dict[str, Any]:
    """The verified payload, or :class:`DownlinkRefused`.

    Reasons: unsigned, unknown_key, forged (no valid signature), malformed (signed, but not
    the payload shape above), wrong_site, expired. A returned payload has every field with
    its documented type.
    """
    try:
        wrapper = json.loads(data)
        payload = base64.b64decode(wrapper["payload"], validate=True)
        signature = base64.b64decode(wrapper["sig"], validate=True)
        claimed = wrapper["key"]
        if not isinstance(claimed, str):
            raise TypeError("key id is not a string")
    except Exception:  # noqa: BLE001 - anything unparseable is unsigned
        raise DownlinkRefused("unsigned", "downlink message is not a signed edgeplane message: refused") from None
    key = trusted.get(claimed)
    if key is None:
        # the claimed id is unauthenticated: name it only when it looks like a key id, never echo arbitrary bytes
        shown = repr(claimed) if _KEY_ID.fullmatch(claimed) else f"<not a key id, {len(claimed)} characters>"
        raise DownlinkRefused("unknown_key", f"downlink message signed by key {shown}, which this site does not "
                                             f"trust (trusted: {', '.join(trusted) or 'none'}): add it to sync.trust.keys")
    try:
        key.verify(signature, payload)
    except InvalidSignature:
        raise DownlinkRefused("forged", f"downlink message signature does not verify with key {claimed!r}: refused") from None
    try:
        message = json.loads(payload)
    except ValueError:
        message = payload
    problem = _shape_problem(message)
    if problem is not None:
        raise DownlinkRefused("malformed", f"signed downlink message from key {claimed!r} is malformed: {problem}")
    if message["site"] != site:
        raise DownlinkRefused("wrong_site", f"downlink message is for site {message['site'][:64]!r}, not {site!r}")
    expires = message["expires"]
    if expires is not None and now > expires:
        raise DownlinkRefused("expired", f"downlink {message['kind'][:32]} {message['id']} expired "
                                         f"{now - expires:.0f} s ago: refused")
    return message  # type: ignore[no-any-return]  # json.loads: _shape_problem checked it is such a dict
