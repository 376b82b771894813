"""The NTCIP objects this distribution reads and writes, by their standard names.

Actuated signal controller objects of NTCIP 1202 (v03; the same numbers as v02) under
``asc`` = 1.3.6.1.4.1.1206.4.2.1, and NTCIP 1201's ``globalTime``. A table column's instance is
its row index (a phase group, a detector group, a detector number); a scalar's instance is 0.

Phase and detector *groups* carry 8 members per row as a bit mask: bit 0 of group 1 is phase 1
(detector 1), bit 7 is phase 8; group 2 holds phases 9-16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ASC", "OBJECTS", "NtcipObject", "bits_to_members", "members_to_bits", "object_named"]

ASC = "1.3.6.1.4.1.1206.4.2.1"


@dataclass(frozen=True)
class NtcipObject:
    name: str  # the standard's name
    oid: str  # without the instance
    kind: Literal["scalar", "column"]
    access: Literal["r", "rw"]
    syntax: str  # what the value means, for documentation and messages
    max_index: int = 0  # columns: the largest row this distribution addresses

    def instance(self, index: int = 0) -> str:
        """The full OID of one instance (``index`` 0 for scalars)."""
        if self.kind == "scalar":
            if index not in (0, None):
                raise ValueError(f"{self.name} is a scalar: it has no index (got {index})")
            return f"{self.oid}.0"
        if not 1 <= index <= self.max_index:
            raise ValueError(f"{self.name} rows are numbered 1..{self.max_index}, got index {index}")
        return f"{self.oid}.{index}"


_OBJECTS = [
    # phase parameters (phaseTable, asc.1.2.1.<column>.<phase>): the controller's own timing
    NtcipObject("maxPhases", f"{ASC}.1.1", "scalar", "r", "phases this controller supports"),
    NtcipObject("phaseMinimumGreen", f"{ASC}.1.2.1.4", "column", "r", "minimum green, s", 255),
    NtcipObject("phasePassage", f"{ASC}.1.2.1.5", "column", "r", "passage (gap) time, tenths of s", 255),
    NtcipObject("phaseMaximum1", f"{ASC}.1.2.1.6", "column", "r", "maximum green 1, s", 255),
    NtcipObject("phaseYellowChange", f"{ASC}.1.2.1.8", "column", "r", "yellow change, tenths of s", 255),
    NtcipObject("phaseRedClear", f"{ASC}.1.2.1.9", "column", "r", "red clearance, tenths of s", 255),
    # phase status groups (phaseStatusGroupTable, asc.1.4.1.<column>.<group>): bit masks
    NtcipObject("phaseStatusGroupReds", f"{ASC}.1.4.1.2", "column", "r", "phases showing red (bit mask)", 32),
    NtcipObject("phaseStatusGroupYellows", f"{ASC}.1.4.1.3", "column", "r", "phases showing yellow (bit mask)", 32),
    NtcipObject("phaseStatusGroupGreens", f"{ASC}.1.4.1.4", "column", "r", "phases showing green (bit mask)", 32),
    NtcipObject("phaseStatusGroupVehCalls", f"{ASC}.1.4.1.8", "column", "r", "phases with a vehicle call (bit mask)", 32),
    NtcipObject("phaseStatusGroupPhaseOns", f"{ASC}.1.4.1.10", "column", "r", "phases active (bit mask)", 32),
    NtcipObject("phaseStatusGroupPhaseNexts", f"{ASC}.1.4.1.11", "column", "r", "phases chosen to be served next (bit mask)", 32),
    # phase control groups (phaseControlGroupTable, asc.1.5.1.<column>.<group>): bit masks
    NtcipObject("phaseControlGroupPhaseOmit", f"{ASC}.1.5.1.2", "column", "rw", "omit these phases (bit mask)", 32),
    NtcipObject("phaseControlGroupHold", f"{ASC}.1.5.1.4", "column", "rw", "retain these phases' green (bit mask)", 32),
    NtcipObject("phaseControlGroupForceOff", f"{ASC}.1.5.1.5", "column", "rw", "terminate these phases' green (bit mask)", 32),
    NtcipObject("phaseControlGroupVehCall", f"{ASC}.1.5.1.6", "column", "rw", "place a vehicle call on these phases (bit mask)", 32),
    # detectors (asc.2)
    NtcipObject("maxVehicleDetectors", f"{ASC}.2.1", "scalar", "r", "vehicle detectors this controller supports"),
    NtcipObject("vehicleDetectorStatusGroupActive", f"{ASC}.2.4.1.2", "column", "r",
                "detectors sensing a vehicle now (bit mask)", 32),
    NtcipObject("volumeOccupancySequence", f"{ASC}.2.5.1", "scalar", "r", "counts completed volume/occupancy periods (0-255, wraps)"),
    NtcipObject("volumeOccupancyPeriod", f"{ASC}.2.5.2", "scalar", "r", "volume/occupancy period, s"),
    NtcipObject("detectorVolume", f"{ASC}.2.5.4.1.1", "column", "r", "vehicles counted in the last period (0-254, 255 = overflow)", 255),
    NtcipObject("detectorOccupancy", f"{ASC}.2.5.4.1.2", "column", "r",
                "occupancy in the last period, 0-200 = 0-100 % in 0.5 % steps; 201-255 = detector fault", 255),
    # overlap status groups (overlapStatusGroupTable, asc.9.4.1.<column>.<group>): bit masks, read as points
    NtcipObject("overlapStatusGroupReds", f"{ASC}.9.4.1.2", "column", "r", "overlaps showing red (bit mask)", 32),
    NtcipObject("overlapStatusGroupYellows", f"{ASC}.9.4.1.3", "column", "r", "overlaps showing yellow (bit mask)", 32),
    NtcipObject("overlapStatusGroupGreens", f"{ASC}.9.4.1.4", "column", "r", "overlaps showing green (bit mask)", 32),
    # unit (asc.3)
    NtcipObject("unitFlashStatus", f"{ASC}.3.6", "scalar", "r",
                "other 1, notFlash 2, automatic 3, localManual 4, faultMonitor 5, mmu 6, startup 7, preempt 8"),
    # NTCIP 1201 global time (1.3.6.1.4.1.1206.4.2.6.3.1): the controller's clock
    NtcipObject("globalTime", "1.3.6.1.4.1.1206.4.2.6.3.1", "scalar", "r", "controller time, s since 1970 UTC"),
]

OBJECTS: dict[str, NtcipObject] = {o.name: o for o in _OBJECTS}


def object_named(name: str) -> NtcipObject:
    try:
        return OBJECTS[name]
    except KeyError:
        raise ValueError(f"{name!r} is not an NTCIP object this connector knows; known: {', '.join(OBJECTS)}") from None


def members_to_bits(members: set[int] | frozenset[int] | list[int], group: int = 1) -> int:
    """The bit mask of ``members`` (phase or detector numbers) that fall in row ``group`` (8 per row)."""
    first = 8 * (group - 1) + 1
    mask = 0
    for m in members:
        if first <= m < first + 8:
            mask |= 1 << (m - first)
    return mask


def bits_to_members(mask: int, group: int = 1) -> set[int]:
    """The phase or detector numbers set in row ``group``'s bit mask."""
    first = 8 * (group - 1) + 1
    return {first + b for b in range(8) if int(mask) >> b & 1}
