"""For tests of plugins that talk NTCIP: a controller simulator's defaults (start time, an SNMPv3 user)."""

from __future__ import annotations

from edgeplane_ntcip.simulator import UsmUser

__all__ = ["SIM_START", "SIM_USER"]

SIM_START = 1_700_000_000.0  # the simulator's globalTime at its first period
SIM_USER = UsmUser("tms", "sha256", "auth-key-123", "aes128", "priv-key-123")
