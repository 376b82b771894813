"""Read coalescing: the fewest requests that read every point of a device.

Points of one table are sorted by address and merged greedily into a block while the block
stays within ``max_span`` registers (``max_bits`` coils/inputs) and the hole before the next
point is at most ``max_gap`` registers (16 x ``max_gap`` bits). Bridging a small hole costs a
few bytes on the wire; a separate request costs a whole round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from edgeplane_modbus.config import BIT_TABLES

#: function code that reads each table
READ_FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


@dataclass(frozen=True)
class Span:
    """Something to read: a name and where it lies."""

    name: str
    table: str
    address: int
    count: int

    @property
    def end(self) -> int:
        return self.address + self.count - 1


@dataclass
class ReadBlock:
    """One read request and the spans it serves."""

    table: str
    start: int
    count: int
    members: list[Span] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.start + self.count - 1

    @property
    def function_code(self) -> int:
        return READ_FUNCTION[self.table]

    def __str__(self) -> str:
        return f"{self.table} {self.start}..{self.end} ({len(self.members)} points)"


def plan_reads(spans: Iterable[Span], *, max_span: int = 125, max_bits: int = 2000, max_gap: int = 8,
               coalesce: bool = True) -> list[ReadBlock]:
    """Group ``spans`` into read blocks; ``coalesce=False`` gives one block per span."""
    by_table: dict[str, list[Span]] = {}
    for span in spans:
        by_table.setdefault(span.table, []).append(span)
    blocks: list[ReadBlock] = []
    for table in sorted(by_table):
        limit, gap = (max_bits, max_gap * 16) if table in BIT_TABLES else (max_span, max_gap)
        current: ReadBlock | None = None
        for span in sorted(by_table[table], key=lambda s: (s.address, s.count)):
            if current is not None and coalesce:
                new_end = max(current.end, span.end)
                if span.address - current.end - 1 <= gap and new_end - current.start + 1 <= limit:
                    current.count = new_end - current.start + 1
                    current.members.append(span)
                    continue
            current = ReadBlock(table, span.address, span.count, [span])
            blocks.append(current)
    return blocks
