"""A SunSpec inverter on pymodbus's server: for tests, demos and the solar reference deployment.

Models, laid out from pysunspec2's definitions, by ``family``:

* ``"legacy"``: common (1), three-phase inverter (103), nameplate (120), immediate controls (123),
  multiple MPPT (160, one module per string);
* ``"der"``: the IEEE 1547-2018 DER models new inverters ship: common (1), DER AC measurement
  (701), DER capacity (702), DER AC controls (704), and 160;
* ``"der714"``: the same DER with its DC side in DER DC measurement (714, one port per string)
  instead of 160;
* default: the legacy chain plus 704 (a legacy inverter with a DER control model bolted on).

Its AC power follows irradiance (a constant, a series stepped per update, or a function of
time), obeys ``123.WMaxLimPct`` when ``123.WMaxLim_Ena`` is 1 and ``704.WMaxLimPct`` when
``704.WMaxLimPctEna`` is 1 (the lower of the two when both are).

It fails safe as a real inverter does: a limit enabled with a revert timer
(``123.WMaxLimPct_RvrtTms``, ``704.WMaxLimPctRvrtTms``; power factor: ``123.OutPFSet_RvrtTms``,
``704.PFWInjRvrtTms``) reverts on the inverter's own clock when no write renews it in time (123:
the limit is disabled; 704: the ``*Rvrt`` values are applied), logged in :attr:`reverts` with the
time on ``timer_clock`` (real time by default, also when ``clock`` runs a plant faster). A new
limit is approached over ``123.WMaxLimPct_RmpTms`` seconds, or at ``704.WRmp`` % of rating per
second. Failures can be injected::

    sim = SunSpecInverterSimulator(rating_w=10_000, irradiance=[0, 200, 800, 950])
    port = await sim.start(port=0)
    sim.trip() / sim.restore()          # offline: W = 0, St = FAULT (7)
    sim.lose_string(1)                  # string 1 produces nothing
    sim.clip(6000)                      # AC output capped at 6 kW (an undersized inverter)
    sim.freeze("103.W")                 # the register stops changing (a stuck value)

Writes outside the writable control registers answer Modbus exception 2; a WMaxLimPct outside
0..100 % answers exception 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import Any, Awaitable, Callable, Mapping, Sequence

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edgeplane_modbus import sunspec

ST_OFF, ST_SLEEPING, ST_MPPT, ST_THROTTLED, ST_FAULT = 1, 2, 4, 5, 7
#: the alarm a trip raises: OVER_TEMP, bit 7 alike in 103.Evt1 and 701.Alrm (pysunspec2's model_103/701.json)
TRIP_ALARM_BIT = 7
#: the model chain of each family (160 carries the strings in both)
FAMILIES: dict[str | None, tuple[int, ...]] = {
    None: (1, 103, 120, 123, 160, 704),
    "legacy": (1, 103, 120, 123, 160),
    "der": (1, 701, 702, 704, 160),
    "der714": (1, 701, 702, 704, 714),
}
#: registers after ID and L of each fixed-length model served
MODEL_LENGTH = {1: 66, 103: 50, 120: 26, 123: 24, 701: 153, 702: 50, 704: 65}
IrradianceSource = float | Sequence[float] | Callable[[float], float]
#: pymodbus's device action: (function code, start address, address, count, registers, values to set) -> exception code or None
Action = Callable[[int, int, int, int, list[Any], Any], Awaitable[Any]]


class SimServer:
    """pymodbus's Modbus TCP server for simulated devices on loopback: the one wrapper of it.

    ``action`` sees every request (pymodbus's device action: it may fill ``registers`` or answer
    an exception code); the server counts them in :attr:`requests` and answers each
    :attr:`delay` seconds late (a slow device). It can be stopped and started again, e.g. on the
    same port after a simulated reboot::

        server = SimServer(action)
        port = await server.start({1: [SimData(40000, values=image, datatype=DataType.REGISTERS)]})
        server.delay = 2.0
        await server.stop()

    ``framer=FramerType.RTU`` serves RTU frames over TCP (``rtu+tcp://``).
    """

    def __init__(self, action: Action | None = None, *, framer: FramerType = FramerType.SOCKET,
                 ignore_missing_devices: bool = False):
        self.action = action
        self.framer = framer
        self.ignore_missing_devices = ignore_missing_devices
        self.delay = 0.0
        self.requests = 0
        self.port: int | None = None
        self._server: ModbusTcpServer | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    async def _on_request(self, function_code: int, start_address: int, address: int, count: int, registers: list[Any],
                          set_values: Any) -> Any:
        self.requests += 1
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        if self.action is None:
            return None
        return await self.action(function_code, start_address, address, count, registers, set_values)

    async def start(self, devices: Mapping[int, Any], host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve ``devices`` (unit id -> pymodbus simdata, as :class:`SimDevice` takes it) on ``host:port``
        (0 picks a free port); returns the port."""
        sim_devices = [SimDevice(unit, simdata=simdata, action=self._on_request) for unit, simdata in devices.items()]
        self._server = ModbusTcpServer(sim_devices, address=(host, port), framer=self.framer,
                                       ignore_missing_devices=self.ignore_missing_devices)
        await self._server.serve_forever(background=True)
        self.port = int(self._server.transport.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop serving (open connections drop); :meth:`start` serves again."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()


class SunSpecInverterSimulator:
    """A simulated SunSpec inverter (see module doc). ``update()`` recomputes its registers."""

    def __init__(self, *, rating_w: float = 10_000.0, strings: int = 2, irradiance: IrradianceSource = 800.0,
                 unit: int = 1, base: int = 40000, interval: float | None = 1.0, serial: str = "SIM0001",
                 clock: Callable[[], float] = time.time, ambient_c: float = 20.0, family: str | None = None,
                 timer_clock: Callable[[], float] = time.monotonic):
        if family not in FAMILIES:
            raise ValueError(f"family {family!r}: use one of {', '.join(map(repr, FAMILIES))}")
        self.family = family
        # revert timers and ramps run on the firmware's own (real-time) clock, also when ``clock`` runs a
        # simulated plant faster than real time
        self.timer_clock = timer_clock
        self._last_timer: float | None = None
        self.rating_w = float(rating_w)
        self.strings = strings
        self.irradiance_source = irradiance
        self.unit = unit
        self.base = base
        self.interval = interval
        self.clock = clock
        self.ambient_c = ambient_c
        self.tripped = False
        self.lost_strings: set[int] = set()
        self.clip_w: float | None = None
        self.frozen: set[str] = set()
        self.writes: list[tuple[str, Any]] = []  # (point, raw value) of every accepted control write
        self.irradiance = 0.0
        self.energy_wh = 0.0
        self._step = 0
        self._last_update: float | None = None
        # revert timers: control -> the deadline on this inverter's clock; and what reverted when
        self._deadline: dict[str, float] = {}
        self.reverts: list[tuple[str, float]] = []
        # the limit in force (% of rating) as it ramps towards the setpoint; None: no limit
        self._effective_pct: float | None = None
        self._ramp_from = 100.0  # where the current ramp started
        self.server = SimServer(self._action)
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None
        self._build_image(serial)

    # -- register image ---------------------------------------------------------------------

    def _build_image(self, serial: str) -> None:
        # 704 (DER AC controls, SunSpec's newer DER information model) after the legacy chain,
        # so a client may limit power through either model
        lengths = {m: (8 + 20 * self.strings if m == 160 else 18 + 25 * self.strings if m == 714 else MODEL_LENGTH[m])
                   for m in FAMILIES[self.family]}
        self.image = [0x5375, 0x6E53]
        self.points: dict[str, sunspec.SunSpecPoint] = {}
        address = self.base + 2
        for model_id, length in lengths.items():
            instance = sunspec.layout(model_id, address, length, str(model_id))
            self.image += [model_id, length] + [0] * length
            for point in instance.points:
                self.points[point.name] = point
            address += length + 2
        self.image += [0xFFFF, 0]
        self.writable = {p.address + i: p.name for p in self.points.values() if p.writable for i in range(p.size)}
        # unimplemented by default, so a client sees exactly what this simulator fills in
        for point in self.points.values():
            if point.name.split(".")[-1] in ("ID", "L") and point.name.count(".") == 1:
                continue
            if point.type in ("int16", "sunssf"):
                self._put(point.name, -0x8000, force=True)
            elif point.type in ("uint16", "enum16", "bitfield16", "count"):
                self._put(point.name, 0xFFFF, force=True)
            elif point.type in ("uint32", "enum32", "bitfield32"):
                self._put(point.name, 0xFFFFFFFF, force=True)
        for name, text in (("1.Mn", "edgeplane"), ("1.Md", "SunSpec inverter simulator"), ("1.Vr", "0.1"),
                           ("1.SN", serial)):
            self._put(name, text, force=True)
        self._put("1.DA", self.unit, force=True)
        # scale factors: W in 1 W, A in 0.01 A, V in 0.1 V, Hz in 0.01 Hz, WMaxLimPct in 0.1 %
        defaults = {"103.A_SF": -2, "103.V_SF": -1, "103.W_SF": 0, "103.Hz_SF": -2, "103.VA_SF": 0,
                    "103.VAr_SF": 0, "103.PF_SF": -2, "103.WH_SF": 0, "103.DCA_SF": -2, "103.DCV_SF": -1,
                    "103.DCW_SF": 0, "103.Tmp_SF": -1, "120.WRtg_SF": 0, "120.VARtg_SF": 0,
                    "120.ARtg_SF": -2, "123.WMaxLimPct_SF": -1, "123.OutPFSet_SF": -3, "123.VArPct_SF": -1,
                    "160.DCA_SF": -2, "160.DCV_SF": -1, "160.DCW_SF": 0, "160.DCWH_SF": 0,
                    "701.A_SF": -2, "701.V_SF": -1, "701.Hz_SF": -2, "701.W_SF": 0, "701.PF_SF": -3, "701.VA_SF": 0,
                    "701.Var_SF": 0, "701.Tmp_SF": -1, "702.W_SF": 0, "702.PF_SF": -3, "702.VA_SF": 0,
                    "702.Var_SF": 0, "702.V_SF": -1, "702.A_SF": -2,
                    "704.WMaxLimPct_SF": -1, "704.PF_SF": -3,
                    "120.DERTyp": 4,  # PV
                    "120.WRtg": int(self.rating_w), "120.VARtg": int(self.rating_w),
                    "120.ARtg": int(self.rating_w / 3 / 230 * 100), "702.WMaxRtg": int(self.rating_w),
                    "702.VAMaxRtg": int(self.rating_w), "702.WMax": int(self.rating_w),
                    "123.WMaxLimPct": 1000, "123.WMaxLim_Ena": 0, "123.Conn": 1, "123.WMaxLimPct_RvrtTms": 0,
                    "123.WMaxLimPct_RmpTms": 0, "123.OutPFSet_RvrtTms": 0, "123.OutPFSet_Ena": 0,
                    "704.WMaxLimPct": 1000, "704.WMaxLimPctEna": 0, "704.WMaxLimPctRvrt": 1000,
                    "704.WMaxLimPctEnaRvrt": 0, "704.WMaxLimPctRvrtTms": 0, "704.WMaxLimPctRvrtRem": 0,
                    "704.PFWInjEna": 0, "704.PFWInjEnaRvrt": 0, "704.PFWInjRvrtTms": 0, "704.PFWInjRvrtRem": 0,
                    "704.WRmp": 0, "701.ACType": 3, "160.N": self.strings,
                    "714.NPrt": self.strings, "714.DCA_SF": -2, "714.DCV_SF": -1, "714.DCW_SF": 0}
        for name, value in defaults.items():
            if name in self.points:
                self._put(name, value, force=True)
        if "160.N" in self.points:
            for n in range(1, self.strings + 1):
                self._put(f"160.module.{n}.ID", n, force=True)
                self._put(f"160.module.{n}.IDStr", f"string {n}", force=True)
        if "714.NPrt" in self.points:
            for n in range(1, self.strings + 1):
                self._put(f"714.Prt.{n}.PrtTyp", 0, force=True)  # PV
                self._put(f"714.Prt.{n}.ID", n, force=True)
                self._put(f"714.Prt.{n}.IDStr", f"string {n}", force=True)

    def _put(self, name: str, raw: Any, force: bool = False) -> None:
        if name in self.frozen and not force or name not in self.points:
            return
        point = self.points[name]
        registers = sunspec.encode_value(raw, point.type, point.size)
        i = point.address - self.base
        self.image[i:i + point.size] = registers

    def put(self, name: str, raw: Any) -> None:
        """Put the raw value ``raw`` into a point's registers, as the inverter's own panel would: no
        Modbus write checks, no revert timer, not logged in :attr:`writes`. A frozen point, or one
        this family does not serve, keeps its value."""
        self._put(name, raw)

    def get(self, name: str) -> Any:
        """The raw value a point holds now (None if not implemented or not in this family's models)."""
        point = self.points.get(name)
        if point is None:
            return None
        i = point.address - self.base
        return sunspec.decode_value(self.image[i:i + point.size], point.type)

    # -- behaviour --------------------------------------------------------------------------

    def _next_irradiance(self, now: float) -> float:
        source = self.irradiance_source
        if callable(source):
            return float(source(now))
        if isinstance(source, (int, float)):
            return float(source)
        value = float(source[min(self._step, len(source) - 1)]) if len(source) else 0.0
        self._step += 1
        return value

    def update(self, now: float | None = None) -> None:
        """Advance one step: read the irradiance source and recompute every measured register."""
        now = self.clock() if now is None else now
        self.irradiance = max(0.0, self._next_irradiance(now))
        per_string = self.rating_w * 1.1 * self.irradiance / 1000.0 / self.strings  # DC array oversized 10 %
        dc = [0.0 if (n in self.lost_strings or self.tripped) else per_string for n in range(1, self.strings + 1)]
        tick = self.timer_clock()
        self._check_reverts(tick)
        limit = self.rating_w
        target = self._limit_setpoint()
        limiting = target is not None
        if target is not None or self._effective_pct is not None:
            self._effective_pct = self._ramped(100.0 if target is None else target, tick)
            if self._effective_pct >= 100.0 and target is None:
                self._effective_pct = None
            else:
                limit = min(limit, self.rating_w * self._effective_pct / 100.0)
        if self.clip_w is not None:
            limit = min(limit, self.clip_w)
        ac = 0.0 if self.tripped else min(sum(dc) * 0.97, limit)
        if sum(dc) * 0.97 > ac > 0:  # curtailed: the MPPT backs off, DC follows AC
            scale = ac / 0.97 / sum(dc)
            dc = [d * scale for d in dc]
        if self._last_update is not None:
            self.energy_wh += ac * max(0.0, now - self._last_update) / 3600.0
        self._last_update = now
        volts = 230.0
        if self.tripped:
            state = ST_FAULT
        elif self.irradiance < 5:
            state = ST_SLEEPING
        else:
            state = ST_THROTTLED if limiting and ac >= limit - 1 else ST_MPPT
        amps = ac / 3 / volts if ac else 0.0
        self._put("103.W", int(round(ac)))
        self._put("103.VA", int(round(ac)))
        self._put("103.VAr", 0)
        self._put("103.PF", 100)
        self._put("103.A", int(round(amps * 3 * 100)))
        for ph in "ABC":
            self._put(f"103.Aph{ph}", int(round(amps * 100)))
            self._put(f"103.PhVph{ph}", int(round(volts * 10)))
        for pair in ("AB", "BC", "CA"):
            self._put(f"103.PPVph{pair}", int(round(volts * math.sqrt(3) * 10)))
        self._put("103.Hz", 6000)
        self._put("103.WH", int(self.energy_wh) & 0xFFFFFFFF)
        dc_v = 600.0 if not self.tripped and self.irradiance >= 5 else 0.0
        self._put("103.DCW", int(round(sum(dc))))
        self._put("103.DCV", int(round(dc_v * 10)))
        self._put("103.DCA", int(round(sum(dc) / dc_v * 100)) if dc_v else 0)
        self._put("103.TmpCab", int(round((self.ambient_c + 15 * ac / self.rating_w) * 10)))
        self._put("103.St", state)
        self._put("103.Evt1", 1 << TRIP_ALARM_BIT if self.tripped else 0)
        self._put("701.W", int(round(ac)))
        self._put("701.VA", int(round(ac)))
        self._put("701.Var", 0)
        self._put("701.PF", 1000)
        self._put("701.A", int(round(amps * 3 * 100)))
        self._put("701.LNV", int(round(volts * 10)))
        self._put("701.Hz", 6000)
        self._put("701.TmpCab", int(round((self.ambient_c + 15 * ac / self.rating_w) * 10)))
        self._put("701.St", 0 if self.tripped else 1)  # 0 off, 1 on
        # InvSt: 1 sleeping, 3 running, 4 throttled, 6 fault
        self._put("701.InvSt", 6 if self.tripped else 1 if self.irradiance < 5 else 4 if state == ST_THROTTLED else 3)
        self._put("701.ConnSt", 0 if self.tripped else 1)
        self._put("701.Alrm", 1 << TRIP_ALARM_BIT if self.tripped else 0)
        self._put("701.ThrotPct", int(round(100 * ac / self.rating_w)) if state == ST_THROTTLED else 0)
        remaining = self._deadline.get("704.limit")
        self._put("704.WMaxLimPctRvrtRem", max(0, int(math.ceil(remaining - tick))) if remaining else 0)
        remaining = self._deadline.get("704.pf")
        self._put("704.PFWInjRvrtRem", max(0, int(math.ceil(remaining - tick))) if remaining else 0)
        self._last_timer = tick
        for n, power in enumerate(dc, start=1):
            self._put(f"160.module.{n}.DCW", int(round(power)))
            self._put(f"160.module.{n}.DCV", int(round(dc_v * 10)) if power else 0)
            self._put(f"160.module.{n}.DCA", int(round(power / dc_v * 100)) if dc_v and power else 0)
            self._put(f"160.module.{n}.DCSt", 4 if power else 1)
            self._put(f"714.Prt.{n}.DCW", int(round(power)))
            self._put(f"714.Prt.{n}.DCV", int(round(dc_v * 10)) if power else 0)
            self._put(f"714.Prt.{n}.DCA", int(round(power / dc_v * 100)) if dc_v and power else 0)
        self._put("714.DCW", int(round(sum(dc))))
        self._put("714.DCA", int(round(sum(dc) / dc_v * 100)) if dc_v else 0)

    def _limit_setpoint(self) -> float | None:
        """The lowest enabled limit setpoint (% of rating), or None."""
        pcts = [(self.get(setpoint) or 0) / 10.0
                for enable, setpoint in (("123.WMaxLim_Ena", "123.WMaxLimPct"), ("704.WMaxLimPctEna", "704.WMaxLimPct"))
                if self.get(enable) == 1]
        return min(pcts) if pcts else None

    def _ramped(self, target: float, now: float) -> float:
        """Move the limit in force towards ``target`` at the ramp the controls ask for."""
        current = 100.0 if self._effective_pct is None else self._effective_pct
        dt = 0.0 if self._last_timer is None else max(0.0, now - self._last_timer)
        ramp_s = self.get("123.WMaxLimPct_RmpTms") or 0
        rate = self.get("704.WRmp") or 0  # % of rating per second
        if ramp_s > 0:
            step = abs(target - self._ramp_from) * dt / ramp_s
        elif rate > 0:
            step = rate * dt
        else:
            return target
        if abs(target - current) <= step:
            return target
        return current + step if target > current else current - step

    def _arm(self, names: set[str], now: float) -> None:
        """A control write arrived: (re)start the revert timers it touches, remember where a ramp starts."""
        groups = {  # control: (setpoint, enable, revert timer)
            "123.limit": ("123.WMaxLimPct", "123.WMaxLim_Ena", "123.WMaxLimPct_RvrtTms"),
            "123.pf": ("123.OutPFSet", "123.OutPFSet_Ena", "123.OutPFSet_RvrtTms"),
            "704.limit": ("704.WMaxLimPct", "704.WMaxLimPctEna", "704.WMaxLimPctRvrtTms"),
            "704.pf": ("704.PFWInj.PF", "704.PFWInjEna", "704.PFWInjRvrtTms"),
        }
        for control, (setpoint, enable, timer) in groups.items():
            if not names & {setpoint, enable, timer}:
                continue
            seconds = self.get(timer) or 0
            if self.get(enable) == 1 and seconds > 0:
                self._deadline[control] = now + seconds
            else:
                self._deadline.pop(control, None)
        if names & {"123.WMaxLimPct", "123.WMaxLim_Ena", "704.WMaxLimPct", "704.WMaxLimPctEna"}:
            self._ramp_from = 100.0 if self._effective_pct is None else self._effective_pct

    def _check_reverts(self, now: float) -> None:
        """Controls whose timer ran out return to their defaults, on this inverter's own clock."""
        for control, deadline in list(self._deadline.items()):
            if now < deadline:
                continue
            del self._deadline[control]
            if control == "123.limit":
                self._put("123.WMaxLim_Ena", 0, force=True)
            elif control == "123.pf":
                self._put("123.OutPFSet_Ena", 0, force=True)
            elif control == "704.limit":
                self._put("704.WMaxLimPct", self.get("704.WMaxLimPctRvrt") or 1000, force=True)
                self._put("704.WMaxLimPctEna", self.get("704.WMaxLimPctEnaRvrt") or 0, force=True)
            elif control == "704.pf":
                self._put("704.PFWInjEna", self.get("704.PFWInjEnaRvrt") or 0, force=True)
            self._ramp_from = 100.0 if self._effective_pct is None else self._effective_pct
            self.reverts.append((control, now))

    def trip(self) -> None:
        """Go offline (a grid fault): W = 0, St = FAULT, until :meth:`restore`."""
        self.tripped = True
        self.update()

    def restore(self) -> None:
        self.tripped = False
        self.update()

    def lose_string(self, n: int) -> None:
        """String ``n`` (1-based) stops producing (a blown fuse, a cut cable)."""
        if not 1 <= n <= self.strings:
            raise ValueError(f"string {n} does not exist; this inverter has strings 1..{self.strings}")
        self.lost_strings.add(n)
        self.update()

    def clip(self, watts: float | None) -> None:
        """Cap AC output at ``watts`` (None: no cap), as an undersized or derating inverter does."""
        self.clip_w = watts
        self.update()

    def freeze(self, name: str, raw: Any = None) -> None:
        """Stop updating point ``name`` (a stuck sensor); optionally pin its raw value first."""
        if name not in self.points:
            raise KeyError(f"no point {name!r}; points look like '103.W'")
        if raw is not None:
            self._put(name, raw, force=True)
        self.frozen.add(name)

    def unfreeze(self, name: str) -> None:
        self.frozen.discard(name)

    # -- Modbus server ----------------------------------------------------------------------

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: Any) -> ExcCodes | None:
        offset = self.base - start_address
        if not set_values:
            registers[offset:offset + len(self.image)] = self.image
            return None
        values = list(set_values) if isinstance(set_values, (list, tuple)) else [set_values]
        if function_code not in (6, 16):
            return ExcCodes.ILLEGAL_FUNCTION
        for i in range(len(values)):
            if address + i not in self.writable:
                return ExcCodes.ILLEGAL_ADDRESS
        saved = list(self.image)
        i = address - self.base
        self.image[i:i + len(values)] = [int(v) & 0xFFFF for v in values]
        for name in ("123.WMaxLimPct", "704.WMaxLimPct", "704.WMaxLimPctRvrt"):
            pct = self.get(name)
            if pct is not None and not 0 <= pct <= 1000:
                self.image = saved
                return ExcCodes.ILLEGAL_VALUE
        written = {self.writable[address + k] for k in range(len(values))}
        for name in sorted(written):
            self.writes.append((name, self.get(name)))
        self._arm(written, self.timer_clock())
        self.update(self.clock()) if self.interval is not None else None
        registers[offset:offset + len(self.image)] = self.image
        return None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on ``host:port`` (0 picks a free port); returns the port."""
        self.update()
        self.port = await self.server.start({self.unit: [SimData(self.base, values=list(self.image),
                                                                 datatype=DataType.REGISTERS)]}, host, port)
        if self.interval:
            self._task = asyncio.get_running_loop().create_task(self._updater())
        return self.port

    async def _updater(self) -> None:
        while True:
            await asyncio.sleep(self.interval or 1.0)
            self.update()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.server.stop()

    async def __aenter__(self) -> SunSpecInverterSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
