"""A signal controller that speaks NTCIP 1202 over SNMP: a phase sequencer with its own timing, a
conflict monitor, and an SNMP agent (pysnmp) that serves them on a UDP port.

:class:`SignalControllerModel` is the cabinet: stages (sets of phases shown green together) served
one after another in one ring, each green from its minimum to its maximum, yellow change and red
clearance per phase; it answers vehicle calls (from its detectors and ``phaseControlGroupVehCall``),
holds (``phaseControlGroupHold``: keep this green), force-offs (``phaseControlGroupForceOff``: end
this green once its minimum has run) and omits (``phaseControlGroupPhaseOmit``). Its timing is
authoritative: a force-off never cuts a minimum green, a clearance is never shortened. Control
words that nobody rewrites for ``control_timeout`` seconds lapse, so a dead central system leaves a
controller that runs on its own (maximum green on conflicting calls), not one held in green.

:class:`ConflictMonitor` checks what the signal shows, independently of the sequencer (as a
cabinet's MMU does): no two conflicting phases green or yellow together, no green ending without
its full yellow, no green starting before every conflicting phase has had its red clearance. A
fault puts the controller in flash (all red here; ``unitFlashStatus`` = mmu(6)) and stays.

:class:`ControllerAgent` serves the objects of :mod:`edgeplane_ntcip.mib` for one model, with a
read-write SNMPv2c community and, optionally, SNMPv3 USM users, plus ``private`` read-only objects
of the caller's (a vendor's own objects under NEMA's private arc ``1.3.6.1.4.1.1206.3``; a simulated
cabinet serves its simulation's measures there). The intersection behind the model
(a SUMO simulation, or nothing) is the caller's: it calls :meth:`SignalControllerModel.step` once
per period with the detector readings, and shows :meth:`SignalControllerModel.display`.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config, engine
from pysnmp.entity.rfc3413 import cmdrsp, context
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.smi import error as smi_error
from pysnmp.smi.instrum import AbstractMibInstrumController

from edgeplane_ntcip.mib import OBJECTS, bits_to_members, members_to_bits
from edgeplane_ntcip.session import AUTH_PROTOCOLS, PRIV_PROTOCOLS

__all__ = ["NEMA_PRIVATE", "ConflictMonitor", "ControllerAgent", "DetectorReading", "PhaseTiming", "SignalControllerModel"]

NOT_FLASH, FLASH_MMU = 2, 6
NEMA_PRIVATE = "1.3.6.1.4.1.1206.3"  # nemaPrivate (NTCIP 8004): where vendors put their own objects


@dataclass(frozen=True)
class PhaseTiming:
    """One phase's timing in seconds (NTCIP holds yellow and red clearance in tenths)."""

    min_green: float = 5.0
    max_green: float = 50.0
    yellow: float = 3.0
    red_clear: float = 2.0
    passage: float = 3.0


@dataclass
class DetectorReading:
    """What one loop saw during the last period: vehicles counted, occupancy (0..1), presence at its end."""

    volume: int = 0
    occupancy: float = 0.0
    active: bool = False
    fault: int | None = None  # a detector fault: detectorOccupancy reports this code (201-255) instead


class ConflictMonitor:
    """Watches the displayed colours; the first violation puts the controller in flash for good."""

    def __init__(self, stages: list[frozenset[int]], timing: dict[int, PhaseTiming]):
        self._stages = stages
        self._timing = timing
        self._color: dict[int, str] = {}
        self._since: dict[int, float] = {}
        self._red_since: dict[int, float] = {}
        self.faults: list[str] = []

    def conflict(self, a: int, b: int) -> bool:
        return a != b and not any(a in s and b in s for s in self._stages)

    def check(self, now: float, colors: dict[int, str]) -> None:
        shown = [p for p, c in colors.items() if c in "GY"]
        for i, a in enumerate(shown):
            for b in shown[i + 1:]:
                if self.conflict(a, b):
                    self.faults.append(f"t={now:g}: conflicting phases {a} and {b} shown together")
        for p, c in colors.items():
            before = self._color.get(p, "R")
            if c == before:
                continue
            held = now - self._since.get(p, now)
            if before == "G" and c == "R":
                self.faults.append(f"t={now:g}: phase {p} went from green to red without yellow")
            if before == "Y" and held + 1e-6 < self._timing[p].yellow:
                self.faults.append(f"t={now:g}: phase {p} yellow lasted {held:g} s < {self._timing[p].yellow:g} s")
            if c == "G":
                for q, red_at in self._red_since.items():
                    if self.conflict(p, q) and colors.get(q) == "R" and now - red_at + 1e-6 < self._timing[q].red_clear:
                        self.faults.append(f"t={now:g}: phase {p} green {now - red_at:g} s after conflicting phase {q} "
                                           f"ended its yellow (red clearance {self._timing[q].red_clear:g} s)")
            if c == "R":
                self._red_since[p] = now
            self._color[p] = c
            self._since[p] = now


class SignalControllerModel:
    """A one-ring stage sequencer with NTCIP phase control, detector reports and a conflict monitor."""

    def __init__(self, stages: Iterable[Iterable[int]], timing: PhaseTiming | dict[int, PhaseTiming] = PhaseTiming(),
                 detector_phases: dict[int, Iterable[int]] | None = None, *, start_time: float = 0.0,
                 control_timeout: float = 10.0, period: int = 1):
        self.stages = [frozenset(s) for s in stages]
        if not self.stages or any(not s for s in self.stages):
            raise ValueError("a controller needs at least one stage, each with at least one phase")
        self.phases = sorted(set().union(*self.stages))
        if self.phases[0] < 1 or self.phases[-1] > 16:
            raise ValueError(f"phases are numbered 1..16, got {self.phases}")
        self.timing = timing if isinstance(timing, dict) else {p: timing for p in self.phases}
        self.detector_phases = {d: frozenset(ps) for d, ps in (detector_phases or {}).items()}
        self.max_detectors = max(self.detector_phases, default=0)
        self.now = float(start_time)
        self.period = period
        self.control_timeout = control_timeout
        self.stage, self.interval, self.timer = 0, "G", 0.0
        self.next_stage: int | None = None
        self.calls: set[int] = set()  # phases with a detector call waiting (locking memory)
        self.control: dict[str, set[int]] = {"hold": set(), "force_off": set(), "veh_call": set(), "omit": set()}
        self._control_written = self.now
        self.control_lapses = 0
        self.detectors: dict[int, DetectorReading] = {d: DetectorReading() for d in self.detector_phases}
        self.sequence = 0
        self.monitor = ConflictMonitor(self.stages, self.timing)
        self.monitor.check(self.now, self.colors())
        self.history: list[tuple[float, str, int]] = [(self.now, "G", 0)]  # (time, interval, stage) at every change

    # ---- what the signal shows
    @property
    def flashing(self) -> bool:
        return bool(self.monitor.faults)

    def colors(self) -> dict[int, str]:
        """Phase number -> 'G', 'Y' or 'R' (all red while in flash)."""
        out = {p: "R" for p in self.phases}
        if not self.monitor.faults and self.interval in "GY":
            for p in self.stages[self.stage]:
                out[p] = self.interval
        return out

    def display(self) -> tuple[str, int, int | None]:
        """(interval 'G'|'Y'|'R', stage, next stage) of the sequencer ('R' in flash)."""
        if self.flashing:
            return "R", self.stage, None
        return self.interval, self.stage, self.next_stage

    # ---- central control (SNMP SETs land here)
    def write_control(self, column: str, group: int, mask: int) -> None:
        first = 8 * (group - 1) + 1
        members = self.control[column]
        members.difference_update(range(first, first + 8))
        members.update(bits_to_members(mask, group))
        self._control_written = self.now

    def control_mask(self, column: str, group: int) -> int:
        return members_to_bits(self.control[column], group)

    # ---- the clock
    def step(self, readings: dict[int, DetectorReading] | None = None, dt: float | None = None) -> None:
        """Advance one period: take the detectors' readings, time the intervals, check the display."""
        dt = float(self.period if dt is None else dt)
        self.now += dt
        self.timer += dt
        if self.now - self._control_written > self.control_timeout and any(self.control.values()):
            for members in self.control.values():
                members.clear()  # central control lapsed: run free
            self.control_lapses += 1
        if readings is not None:
            for d, r in readings.items():
                if d in self.detectors:
                    self.detectors[d] = r
            self.sequence = (self.sequence + 1) % 256
        green = self.stages[self.stage] if self.interval == "G" else frozenset()
        for d, r in self.detectors.items():
            if r.active or r.volume:
                self.calls |= self.detector_phases[d] - green
        if self.flashing:
            return
        timing = [self.timing[p] for p in self.stages[self.stage]]
        if self.interval == "G":
            candidate = self._next_called()
            held = bool(self.control["hold"] & self.stages[self.stage])
            forced = bool(self.control["force_off"] & self.stages[self.stage])
            if candidate is not None and self.timer + 1e-9 >= max(t.min_green for t in timing) and (
                    forced or (not held and self.timer + 1e-9 >= max(t.max_green for t in timing))):
                self.interval, self.timer, self.next_stage = "Y", 0.0, candidate
        elif self.interval == "Y":
            if self.timer + 1e-9 >= max(t.yellow for t in timing):
                self.interval, self.timer = "R", 0.0
        elif self.timer + 1e-9 >= max(t.red_clear for t in timing):
            self.stage, self.interval, self.timer = self.next_stage if self.next_stage is not None else self.stage, "G", 0.0
            self.next_stage = None
            self.calls -= self.stages[self.stage]
            self.control["veh_call"] -= self.stages[self.stage]
        self.monitor.check(self.now, self.colors())
        if self.history[-1][1:] != (self.interval, self.stage):
            self.history.append((self.now, self.interval, self.stage))

    def intervals(self) -> list[tuple[str, int, float]]:
        """(interval, stage, seconds shown) of every finished interval, from :attr:`history`."""
        return [(i, s, round(t1 - t0, 6)) for (t0, i, s), (t1, _, _) in zip(self.history, self.history[1:])]

    def _next_called(self) -> int | None:
        wanted = (self.calls | self.control["veh_call"]) - self.control["omit"] - self.stages[self.stage]
        for k in range(1, len(self.stages)):
            s = (self.stage + k) % len(self.stages)
            if self.stages[s] & wanted:
                return s
        return None

    # ---- the objects an agent serves
    def read(self, name: str, index: int) -> int | None:
        """The value of NTCIP object ``name`` at row ``index`` (0 for scalars), or None if there is none."""
        groups = (max(self.phases) - 1) // 8 + 1
        colors = self.colors()
        phase_group = {"phaseStatusGroupGreens": "G", "phaseStatusGroupYellows": "Y", "phaseStatusGroupReds": "R"}
        if name in phase_group:
            return members_to_bits({p for p, c in colors.items() if c == phase_group[name]}, index) if 1 <= index <= groups else None
        if name == "phaseStatusGroupPhaseNexts":
            nexts = self.stages[self.next_stage] if self.next_stage is not None and not self.flashing else set()
            return members_to_bits(nexts, index) if 1 <= index <= groups else None
        if name == "phaseStatusGroupPhaseOns":
            return members_to_bits(self.stages[self.stage] if not self.flashing else set(), index) if 1 <= index <= groups else None
        if name == "phaseStatusGroupVehCalls":
            return members_to_bits(self.calls | self.control["veh_call"], index) if 1 <= index <= groups else None
        control = {"phaseControlGroupHold": "hold", "phaseControlGroupForceOff": "force_off",
                   "phaseControlGroupVehCall": "veh_call", "phaseControlGroupPhaseOmit": "omit"}
        if name in control:
            return self.control_mask(control[name], index) if 1 <= index <= groups else None
        timing = {"phaseMinimumGreen": lambda t: round(t.min_green), "phaseMaximum1": lambda t: round(t.max_green),
                  "phaseYellowChange": lambda t: round(t.yellow * 10), "phaseRedClear": lambda t: round(t.red_clear * 10),
                  "phasePassage": lambda t: round(t.passage * 10)}
        if name in timing:
            return timing[name](self.timing[index]) if index in self.timing else None
        if name == "maxPhases":
            return max(self.phases)
        if name == "maxVehicleDetectors":
            return self.max_detectors
        if name == "vehicleDetectorStatusGroupActive":
            if not 1 <= index <= (self.max_detectors - 1) // 8 + 1:
                return None
            return members_to_bits({d for d, r in self.detectors.items() if r.active}, index)
        if name == "volumeOccupancySequence":
            return self.sequence
        if name == "volumeOccupancyPeriod":
            return self.period
        if name == "detectorVolume":
            return min(self.detectors[index].volume, 255) if index in self.detectors else None
        if name == "detectorOccupancy":
            if index not in self.detectors:
                return None
            reading = self.detectors[index]
            return reading.fault if reading.fault is not None else round(max(0.0, min(1.0, reading.occupancy)) * 200)
        if name == "unitFlashStatus":
            return FLASH_MMU if self.flashing else NOT_FLASH
        if name == "globalTime":
            return int(self.now)
        return None


_WRITABLE = {"phaseControlGroupHold": "hold", "phaseControlGroupForceOff": "force_off",
             "phaseControlGroupVehCall": "veh_call", "phaseControlGroupPhaseOmit": "omit"}
_BY_OID = {tuple(int(x) for x in o.oid.split(".")): o for o in OBJECTS.values()}


def _split(oid: tuple[int, ...]) -> tuple[str, int] | None:
    obj = _BY_OID.get(oid[:-1])
    return (obj.name, oid[-1]) if obj is not None else None


class _ModelInstrumentation(AbstractMibInstrumController):
    """pysnmp's view of the model: GET, GETNEXT and SET by OID, access checked by VACM."""

    def __init__(self, agent: ControllerAgent):
        self._agent = agent

    def _denied(self, view: str, idx: int, name: Any, value: Any, ctx: dict[str, Any]) -> bool:
        check = ctx.get("acFun")
        return bool(check and check(view, (name, value), **{**ctx, "idx": idx}))

    def _value(self, oid: tuple[int, ...]) -> Any:
        private = self._agent.private_objects.get(oid)
        if private is not None:
            value = private()
            return rfc1902.Integer32(value) if value is not None else None
        found = _split(oid)
        value = self._agent.model.read(*found) if found else None
        if value is None:
            return None
        return rfc1902.Counter32(value) if found[0] == "globalTime" else rfc1902.Integer32(value)

    def read_variables(self, *var_binds: Any, **ctx: Any) -> list[Any]:
        out = []
        for idx, (name, value) in enumerate(var_binds):
            oid = tuple(name)
            if self._denied("read", idx, name, value, ctx):
                out.append((name, rfc1905.noSuchObject))
                continue
            got = self._value(oid)
            known = _split(oid) or oid in self._agent.private_objects
            out.append((name, got if got is not None else (rfc1905.noSuchInstance if known else rfc1905.noSuchObject)))
        return out

    def read_next_variables(self, *var_binds: Any, **ctx: Any) -> list[Any]:
        out = []
        names = self._agent.instances()
        for idx, (name, value) in enumerate(var_binds):
            oid = tuple(name)
            following = next((n for n in names if n > oid), None)
            if following is None:
                out.append((name, rfc1905.endOfMibView))
                continue
            out.append((rfc1902.ObjectName(following), self._value(following)))
        return out

    def write_variables(self, *var_binds: Any, **ctx: Any) -> list[Any]:
        checked = []
        for idx, (name, value) in enumerate(var_binds):
            oid = tuple(name)
            if self._denied("write", idx, name, value, ctx):
                raise smi_error.NoAccessError(name=name, idx=idx)
            if oid in self._agent.private_objects:
                raise smi_error.NotWritableError(name=name, idx=idx)
            found = _split(oid)
            if found is None or self._agent.model.read(*found) is None:
                raise smi_error.NoSuchObjectError(name=name, idx=idx)
            if found[0] not in _WRITABLE:
                raise smi_error.NotWritableError(name=name, idx=idx)
            if value.getTagSet() != rfc1902.Integer32.tagSet:
                raise smi_error.WrongTypeError(name=name, idx=idx)
            if not 0 <= int(value) <= 255:
                raise smi_error.WrongValueError(name=name, idx=idx)
            checked.append((name, found, int(value)))
        for name, (obj, group), value in checked:
            self._agent.model.write_control(_WRITABLE[obj], group, value)
            self._agent.sets += 1
        return [(name, rfc1902.Integer32(value)) for name, _, value in checked]


@dataclass
class UsmUser:
    user: str
    auth_protocol: str = "sha"
    auth_key: str | None = None
    priv_protocol: str = "aes128"
    priv_key: str | None = None


@dataclass
class ControllerAgent:
    """An SNMP agent (v2c community, optional v3 users) serving one :class:`SignalControllerModel`.

    ``private`` maps full numeric instance OIDs under :data:`NEMA_PRIVATE` (``...1206.3.<arc>...0``)
    to functions returning their current whole value (Integer32; None: no such instance): read-only
    objects of the caller's, served beside the NTCIP ones."""

    model: SignalControllerModel
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port, read .port after start
    community: str = "public"
    users: list[UsmUser] = field(default_factory=list)
    private: dict[str, Callable[[], int | None]] = field(default_factory=dict)
    sets: int = 0

    def __post_init__(self) -> None:
        self.private_objects: dict[tuple[int, ...], Callable[[], int | None]] = {}
        for oid, read in self.private.items():
            parts = oid.strip(".").split(".")
            if not all(p.isdigit() for p in parts) or not oid.strip(".").startswith(NEMA_PRIVATE + "."):
                raise ValueError(f"private object {oid!r}: give a numeric instance OID under {NEMA_PRIVATE} "
                                 f"(nemaPrivate), e.g. {NEMA_PRIVATE}.9999.1.1.0")
            self.private_objects[tuple(int(p) for p in parts)] = read

    def instances(self) -> list[tuple[int, ...]]:
        out = []
        for obj in OBJECTS.values():
            base = tuple(int(x) for x in obj.oid.split("."))
            for index in ([0] if obj.kind == "scalar" else range(1, obj.max_index + 1)):
                if self.model.read(obj.name, index) is not None:
                    out.append((*base, index))
        out += [oid for oid, read in self.private_objects.items() if read() is not None]
        return sorted(out)

    async def start(self) -> None:
        self._engine = engine.SnmpEngine()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.host, self.port))
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._transport = udp.UdpTransport().open_server_mode(sock=sock)
        config.add_transport(self._engine, udp.DOMAIN_NAME, self._transport)
        ntcip = (1, 3, 6, 1, 4, 1, 1206)
        config.add_v1_system(self._engine, "edgeplane-ntcip-area", self.community)
        config.add_vacm_user(self._engine, 2, "edgeplane-ntcip-area", "noAuthNoPriv", ntcip, ntcip)
        for u in self.users:
            level = "authPriv" if u.priv_key else ("authNoPriv" if u.auth_key else "noAuthNoPriv")
            config.add_v3_user(self._engine, u.user, AUTH_PROTOCOLS[u.auth_protocol if u.auth_key else "none"], u.auth_key,
                               PRIV_PROTOCOLS[u.priv_protocol if u.priv_key else "none"], u.priv_key)
            config.add_vacm_user(self._engine, 3, u.user, level, ntcip, ntcip)
        snmp_context = context.SnmpContext(self._engine)
        snmp_context.unregister_context_name(b"")
        snmp_context.register_context_name(b"", _ModelInstrumentation(self))
        for responder in (cmdrsp.GetCommandResponder, cmdrsp.NextCommandResponder, cmdrsp.BulkCommandResponder,
                          cmdrsp.SetCommandResponder):
            responder(self._engine, snmp_context)
        self._engine.open_dispatcher()

    async def stop(self) -> None:
        engine_, self._engine = getattr(self, "_engine", None), None
        if engine_ is not None:
            config.delete_transport(engine_, udp.DOMAIN_NAME)
            self._transport.close_transport()
            engine_.close_dispatcher()
            await asyncio.sleep(0)  # the datagram transport closes its socket on the next loop turn
            self._sock.close()
