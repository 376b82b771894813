"""The static description of one signalised intersection: lanes, green phases, clearances.

Everything the controllers and the safety shield need to know about an intersection that is not
a live reading: the incoming lanes in the order the policy saw them in training (sumo-rl's order:
SUMO's controlled lanes, duplicates removed), their lengths, the green phases (sumo-rl's rule: a
phase with no yellow that is not all red), the yellow state between every two greens, an all-red
state, the movements each green serves (for max-pressure), and the network's own fixed program.

It is built from a SUMO net file (:func:`layout_from_net`, no simulation needed) and travels as
JSON in a model's metadata, so a controller on a real intersection needs no SUMO at all.

The phase table shared by the connector and the shield (``phase`` command values):
``0..G-1`` the greens, ``G + k`` the yellow of the k-th ordered pair ``(i, j)``, ``i != j``
(pairs in row order, as sumo-rl builds them), and the last index the all-red state.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["IntersectionLayout", "Movement", "layout_from_net", "point_name", "signal_layouts", "tls_ids"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def point_name(sumo_id: str) -> str:
    """A SUMO id as a point-name segment: ``#``, ``+``, ``/``, ``.`` and ``:`` are topic syntax here."""
    return _UNSAFE.sub("_", sumo_id)


@dataclass(frozen=True)
class Movement:
    """One signal link: traffic from ``in_lane`` to ``out_lane`` under signal index ``link``."""

    link: int
    in_lane: str
    out_lane: str


@dataclass
class IntersectionLayout:
    tls: str
    lanes: list[str]  # incoming lanes, in observation order
    lane_lengths: list[float]
    out_lanes: list[str]
    out_lane_lengths: list[float]
    green_states: list[str]
    movements: list[Movement]
    fixed_program: list[tuple[str, float]]  # the network's own program: (state, duration)
    yellow_pairs: list[tuple[int, int]] = field(default_factory=list)
    yellow_states: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.yellow_pairs:
            self.yellow_pairs, self.yellow_states = [], []
            for i, a in enumerate(self.green_states):
                for j, b in enumerate(self.green_states):
                    if i == j:
                        continue
                    self.yellow_pairs.append((i, j))
                    self.yellow_states.append(
                        "".join("y" if a[s] in "Gg" and b[s] in "rs" else a[s] for s in range(len(a)))
                    )
        self.yellow_pairs = [tuple(p) for p in self.yellow_pairs]  # type: ignore[misc]
        self.fixed_program = [(str(s), float(d)) for s, d in self.fixed_program]

    # ---- the phase table
    @property
    def num_greens(self) -> int:
        return len(self.green_states)

    @property
    def phase_states(self) -> list[str]:
        return [*self.green_states, *self.yellow_states, self.all_red_state]

    @property
    def all_red_state(self) -> str:
        return "r" * len(self.green_states[0])

    @property
    def all_red_phase(self) -> int:
        return self.num_greens + len(self.yellow_pairs)

    def yellow_phase(self, from_green: int, to_green: int) -> int:
        return self.num_greens + self.yellow_pairs.index((from_green, to_green))

    def phase_kind(self, phase: int) -> str:
        """``green``, ``yellow`` or ``all-red`` for a phase-table index; ValueError when out of range."""
        if 0 <= phase < self.num_greens:
            return "green"
        if self.num_greens <= phase < self.all_red_phase:
            return "yellow"
        if phase == self.all_red_phase:
            return "all-red"
        raise ValueError(f"phase {phase} is not in the phase table of signal {self.tls!r} (0..{self.all_red_phase})")

    def yellow_target(self, phase: int) -> tuple[int, int]:
        return self.yellow_pairs[phase - self.num_greens]

    def green_movements(self, green: int) -> list[Movement]:
        state = self.green_states[green]
        return [m for m in self.movements if state[m.link] in "Gg"]

    @property
    def observation_size(self) -> int:
        return self.num_greens + 1 + 2 * len(self.lanes)

    @property
    def observation_size_detectors(self) -> int:
        """Length of the detector-only observation (:func:`~edgeplane_traffic.observation.build_detector_observation`)."""
        return self.num_greens + 2 + 4 * len(self.lanes)

    def observation_names(self) -> list[str]:
        return [
            *(f"phase_{i}" for i in range(self.num_greens)),
            "min_green",
            *(f"density:{lane}" for lane in self.lanes),
            *(f"queue:{lane}" for lane in self.lanes),
        ]

    # ---- serialisation
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["movements"] = [asdict(m) for m in self.movements]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntersectionLayout:
        data = dict(data)
        data["movements"] = [Movement(**m) for m in data["movements"]]
        return cls(**data)

    def fingerprint(self) -> str:
        """A short hash of what the policy depends on (lanes, their lengths, greens)."""
        core = json.dumps([self.lanes, [round(x, 2) for x in self.lane_lengths], self.green_states])
        return hashlib.sha256(core.encode()).hexdigest()[:16]

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> IntersectionLayout:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _read_net(net_file: str | Path) -> Any:
    from edgeplane_traffic.sumo_runtime import ensure_sumo_home

    ensure_sumo_home()
    import sumolib

    return sumolib.net.readNet(str(net_file), withPrograms=True, withInternal=False)


def _stamp(net_file: str | Path) -> tuple[str, int]:
    path = Path(net_file).resolve()
    try:
        return str(path), path.stat().st_mtime_ns
    except OSError:
        return str(path), 0


def tls_ids(net_file: str | Path) -> list[str]:
    """The signal ids of a net, sorted (cached like :func:`layout_from_net`)."""
    return sorted(_parse_net(*_stamp(net_file))[0])


def layout_from_net(net_file: str | Path, tls: str | None = None) -> IntersectionLayout:
    """Read the layout of signal ``tls`` (default: the first one) from a SUMO net file.

    Cached by file and modification time: parsing a city net takes a CPU-bound tenth of a second,
    which a host's parts (connectors, solutions) should pay once. Treat the result as frozen.
    """
    layouts, problems = _parse_net(*_stamp(net_file))
    if not layouts and not problems:
        raise ValueError(f"net {net_file} has no traffic lights to control")
    if tls is None:
        tls = sorted({*layouts, *problems})[0]
    if tls in problems:
        raise ValueError(problems[tls])
    if tls not in layouts:
        raise ValueError(f"net {net_file} has no traffic light {tls!r}; it has {sorted({*layouts, *problems})}")
    return layouts[tls]


@functools.lru_cache(maxsize=16)
def _parse_net(net_file: str, mtime: int) -> tuple[dict[str, IntersectionLayout], dict[str, str]]:
    net = _read_net(net_file)
    layouts: dict[str, IntersectionLayout] = {}
    problems: dict[str, str] = {}
    for light in net.getTrafficLights():
        tls = light.getID()
        connections = sorted(light.getConnections(), key=lambda c: c[2])
        movements = [Movement(int(link), inl.getID(), outl.getID()) for inl, outl, link in connections]
        lanes = list(dict.fromkeys(m.in_lane for m in movements))
        out_lanes = sorted(set(m.out_lane for m in movements))
        programs = light.getPrograms()
        if not programs:
            problems[tls] = f"traffic light {tls!r} in {net_file} has no signal program"
            continue
        program = programs[sorted(programs)[0]]
        phases = [(p.state, float(p.duration)) for p in program.getPhases()]
        greens = [st for st, _ in phases if "y" not in st and (st.count("r") + st.count("s")) != len(st)]
        if len(greens) < 2:
            problems[tls] = f"traffic light {tls!r} in {net_file} has {len(greens)} green phase(s): nothing to control"
            continue
        layouts[tls] = IntersectionLayout(
            tls=tls,
            lanes=lanes,
            lane_lengths=[net.getLane(lane).getLength() for lane in lanes],
            out_lanes=out_lanes,
            out_lane_lengths=[net.getLane(lane).getLength() for lane in out_lanes],
            green_states=greens,
            movements=movements,
            fixed_program=phases,
        )
    return layouts, problems


def signal_layouts(net: str | Path) -> list[IntersectionLayout]:
    """Every signal of ``net`` with two or more greens (the ones a controller decides for)."""
    layouts = []
    for tls in tls_ids(net):
        try:
            layouts.append(layout_from_net(net, tls))
        except ValueError:
            continue  # one green: nothing to decide, it keeps its program
    if not layouts:
        raise ValueError(f"net {net} has no signal with two or more greens to control")
    return layouts
