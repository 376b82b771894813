"""Console access: users and roles from the site's secrets, sessions with CSRF tokens, login throttling.

* Passwords are checked against argon2 hashes (argon2-cffi); the site file holds only hashes,
  by secret reference. Hashing runs off the event loop (it is deliberately slow).
* A session is a random token in an HttpOnly, SameSite=Strict cookie (Secure under TLS), kept
  in memory: a restarted host asks everyone to log in again. Each session has its own CSRF token
  that every state-changing request must echo in the ``X-CSRF-Token`` header.
* Failed logins are counted per user name and per client address; after ``max_failed_logins``
  within the lockout window, further attempts are refused (HTTP 429) until it has passed.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from edgeplane.console.config import ConsoleConfig

__all__ = ["Authenticator", "LoginThrottle", "Session", "SessionStore", "hash_password"]

# argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane) rather than argon2-cffi's
# default (64 MiB, 3 passes, 4 lanes): a login must not take an edge box's cores for half a second
# (measured here: ~0.5 s with the default). A hash carries its own parameters, so hashes made with
# other settings still verify.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# a real hash to verify against when the user does not exist: the answer takes as long either way
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``, for a user's ``password_hash``."""
    if len(password) < 8:
        raise ValueError("a console password needs at least 8 characters")
    return _hasher.hash(password)


@dataclass
class Session:
    token: str
    user: str
    role: str
    csrf: str
    created: float
    seen: float

    @property
    def can_write(self) -> bool:
        return self.role == "operator"


class SessionStore:
    def __init__(self, ttl: float, limit: int = 1000):
        self.ttl = ttl
        self.limit = limit
        self._sessions: dict[str, Session] = {}

    def create(self, user: str, role: str) -> Session:
        self._expire()
        if len(self._sessions) >= self.limit:  # bounded: the oldest session goes first
            oldest = min(self._sessions.values(), key=lambda s: s.seen)
            del self._sessions[oldest.token]
        now = time.monotonic()
        session = Session(secrets.token_urlsafe(32), user, role, secrets.token_urlsafe(32), now, now)
        self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.seen > self.ttl:
            del self._sessions[token]
            return None
        session.seen = now
        return session

    def alive(self, token: str) -> bool:
        """Whether a session still exists (without counting this as activity)."""
        return token in self._sessions

    def end(self, token: str) -> None:
        self._sessions.pop(token, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, s in self._sessions.items() if now - s.seen > self.ttl]:
            del self._sessions[token]

    def __len__(self) -> int:
        return len(self._sessions)


@dataclass
class LoginThrottle:
    """Failed logins per key (a user name, a client address) in a sliding window."""

    max_failures: int
    window: float
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def locked(self, *keys: str) -> float:
        """Seconds until the first of ``keys`` may try again; 0 when none is locked."""
        now = time.monotonic()
        wait = 0.0
        for key in keys:
            times = self._failures.get(key)
            if not times:
                continue
            while times and now - times[0] > self.window:
                times.popleft()
            if len(times) >= self.max_failures:
                wait = max(wait, self.window - (now - times[0]))
        return wait

    def fail(self, *keys: str) -> None:
        now = time.monotonic()
        if len(self._failures) > 10_000:  # bounded under a spray of made-up names
            self._failures.clear()
        for key in keys:
            self._failures.setdefault(key, deque(maxlen=self.max_failures * 2)).append(now)

    def succeed(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)


class Authenticator:
    """Checks a user name and password against the site's console users."""

    def __init__(self, config: ConsoleConfig):
        self.config = config

    def verify(self, user: str, password: str) -> str | None:
        """The user's role if the password is right, else None. Blocking (argon2): run it in a thread."""
        entry = self.config.users.get(user)
        stored = entry.password_hash.get_secret_value() if entry is not None else _DUMMY_HASH
        try:
            ok: bool = _hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if entry is None:
            return None
        return entry.role if ok else None


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))
