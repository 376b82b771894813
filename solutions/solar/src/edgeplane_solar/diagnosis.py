"""Per-inverter diagnosis: actual against expected power, faults, alerts with hysteresis and evidence.

:class:`InverterDiagnoser` is the logic (no I/O): feed it one :class:`Snapshot` per poll and it
answers the alerts that were raised or cleared. :class:`DiagnosisSolution` (``type: solar.diagnosis``)
gathers snapshots from the bus (SunSpec points of each inverter and the weather station), emits
``alerts/<name>`` events (kind ``alarm`` / ``clear``, severity critical or warning) and keeps
:attr:`DiagnosisSolution.state` for dashboards and the demo.

Faults: ``offline`` (SunSpec state FAULT/OFF in daylight, or no power at good irradiance),
``comms_lost`` (no data for ``stale_after``), ``lost_string`` (one string's DC current far below
the others at normal irradiance), ``derating`` (performance index below ``pi_low`` while not
curtailed by a limit and not clipping at nameplate), ``frozen_power`` / ``frozen_irradiance``
(AC power that stands still between two polls while DC power moves; irradiance that stands still while
the plant's output moves by more than 3 %), ``implausible_sensor`` (station irradiance outside -20..1500 W/m2 or module
temperature outside -40..95 degC: inverters are not judged against it), ``event`` (SunSpec Evt1 bits
set), ``soiling`` (the slow average of the performance index drifting below ``soiling_pi``).

Two point families, per inverter, chosen as dispatch chooses them (:func:`edgeplane_solar.controls.family_for`:
``controls: auto`` takes what the scan published): a legacy inverter is judged on ``plant.points``
(103 power, state and Evt1; 160 strings; 123 limit); an IEEE 1547-2018 DER inverter on its 701 points
as pysunspec2's ``model_701.json`` defines them (``W``; ``InvSt`` FAULT or, in daylight, OFF, ``St``
OFF or ``ConnSt`` DISCONNECTED: offline; ``InvSt`` THROTTLED: curtailed; ``Alrm`` bits: events), its
704 limit, and its DC side from model 714 (``714.DCW``, strings ``714.Prt.{n}.DCA``) or, where the
inverter serves no 714, from 160 (string currents, DC power as the sum of the strings' ``DCW``). When
neither gives DC power the alert evidence says so (``missing``), and frozen AC power is judged
against irradiance instead.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from edgeplane import Batch, Context, Solution, SolutionConfig
from edgeplane.config import Duration

from edgeplane_modbus.sunspec import model_definition

from edgeplane_solar.controls import CONTROLS_DESCRIPTION, ControlsChoice, family_for, is_der_point
from edgeplane_solar.plant import PlantConfig, PlantModel

ST_OFF, ST_FAULT, ST_THROTTLED = 1, 7, 5


def _bit_names(model_id: int, point: str) -> dict[int, str]:
    """The named bits of a bitfield point, as pysunspec2's definition of the model gives them."""
    definition = model_definition(model_id) or {"group": {"points": []}}
    for p in definition["group"]["points"]:
        if p["name"] == point:
            return {int(sym["value"]): sym["name"] for sym in p.get("symbols", [])}
    raise LookupError(f"pysunspec2's model {model_id} has no point {point}: reinstall pysunspec2")


EVT1_BITS = _bit_names(103, "Evt1")


@dataclass(frozen=True)
class StateCodes:
    """What a family's state point says: which values are a fault, off, or throttled."""

    fault: frozenset[int]
    off: frozenset[int]
    throttled: frozenset[int]


LEGACY_STATES = StateCodes(fault=frozenset({ST_FAULT}), off=frozenset({ST_OFF}), throttled=frozenset({ST_THROTTLED}))
# 701.InvSt: OFF 0, SLEEPING 1, STARTING 2, RUNNING 3, THROTTLED 4, SHUTTING_DOWN 5, FAULT 6, STANDBY 7
DER_STATES = StateCodes(fault=frozenset({6}), off=frozenset({0}), throttled=frozenset({4}))


@dataclass(frozen=True)
class DiagnosisPoints:
    """The points diagnosis judges one inverter on. Templates with ``{n}`` run over its strings; of
    several alternatives, the first the inverter publishes is used."""

    family: str
    power: str
    status: str
    states: StateCodes
    events: str
    event_bits: dict[int, str]
    limit_enable: str
    limit_pct: str
    dc_power: tuple[str, ...]  # a template with {n} sums the strings
    string_current: tuple[str, ...]
    operating: str | None = None  # 0 = OFF (701.St)
    connection: str | None = None  # 0 = DISCONNECTED (701.ConnSt)

    def names(self, strings: int) -> list[str]:
        single = [self.power, self.status, self.events, self.limit_enable, self.limit_pct, self.operating,
                  self.connection]
        templates = [*self.dc_power, *self.string_current]
        return [p for p in single if p] + [t.format(n=n) for t in templates for n in range(1, strings + 1)
                                          if "{n}" in t or n == 1]


def legacy_points(plant: PlantConfig) -> DiagnosisPoints:
    pts = plant.points
    return DiagnosisPoints("legacy", pts.power, pts.status, LEGACY_STATES, pts.events, EVT1_BITS, pts.limit_enable,
                           pts.limit_pct, (pts.dc_power,), (pts.string_current,))


def der_points(plant: PlantConfig) -> DiagnosisPoints:
    return DiagnosisPoints("der", "701.W", "701.InvSt", DER_STATES, "701.Alrm", _bit_names(701, "Alrm"),
                           "704.WMaxLimPctEna", "704.WMaxLimPct", ("714.DCW", "160.module.{n}.DCW"),
                           ("714.Prt.{n}.DCA", plant.points.string_current), operating="701.St",
                           connection="701.ConnSt")


SEVERITY = {"offline": "critical", "comms_lost": "critical", "lost_string": "warning", "derating": "warning",
            "frozen_power": "warning", "frozen_irradiance": "warning", "event": "warning", "soiling": "warning",
            "implausible_sensor": "warning"}


class DiagnosisConfig(SolutionConfig):
    plant: PlantConfig
    min_irradiance: float = Field(150.0, description="W/m2 of POA below which performance is not judged")
    pi_low: float = Field(0.85, gt=0, lt=1, description="raise 'derating' below this performance index")
    pi_clear: float = Field(0.93, gt=0, le=1.2, description="clear it above this (hysteresis)")
    lost_string_ratio: float = Field(0.3, gt=0, lt=1, description="a string below this share of its peers' median current is lost")
    raise_after: int = Field(2, ge=1, description="consecutive faulty polls before an alert (offline and frozen: 1)")
    clear_after: int = Field(3, ge=1, description="consecutive healthy polls before it clears")
    stale_after: Duration = Field(5.0, description="no data from an inverter for this long: comms_lost")
    soiling_pi: float = Field(0.9, description="raise 'soiling' when the slow performance index falls below this")
    soiling_samples: int = Field(2000, ge=10, description="daylight polls the slow average spans")
    controls: ControlsChoice = Field("auto", description=CONTROLS_DESCRIPTION)

    @model_validator(mode="after")
    def _needs_irradiance(self) -> DiagnosisConfig:
        if self.plant.weather is None:
            raise ValueError("plant.weather: diagnosis compares power with irradiance; set plant.weather.poa "
                             "(or ghi) to the weather station's topic, e.g. 'met/poa'")
        if self.pi_clear <= self.pi_low:
            raise ValueError(f"pi_clear ({self.pi_clear}) must be above pi_low ({self.pi_low}): that gap is the hysteresis")
        return self


@dataclass
class Snapshot:
    """One poll of one inverter, with the weather at that time."""

    ts: float
    power_w: float
    status: int | None
    events: int | None
    limit_enabled: bool
    limit_pct: float | None
    string_currents: list[float]
    poa: float
    module_temp: float | None
    dc_power_w: float | None = None
    states: StateCodes = LEGACY_STATES
    event_bits: dict[int, str] = field(default_factory=lambda: EVT1_BITS)
    disconnected: bool = False  # 701: operating state OFF or grid connection DISCONNECTED
    family: str = "legacy"
    missing: list[str] = field(default_factory=list)  # what the inverter does not publish, for the evidence


@dataclass
class Alert:
    device: str
    fault: str
    active: bool
    message: str
    evidence: dict[str, Any]


@dataclass
class _Check:
    active: bool = False
    bad: int = 0
    good: int = 0


@dataclass
class InverterDiagnoser:
    """The diagnosis of one inverter; see the module doc."""

    device: str
    rating_w: float
    strings: int
    expected: Any  # callable(poa, module_temp) -> expected AC W
    config: DiagnosisConfig
    checks: dict[str, _Check] = field(default_factory=dict)
    history: deque = field(default_factory=lambda: deque(maxlen=2))
    slow_pi: float | None = None
    slow_n: int = 0
    last: dict[str, Any] = field(default_factory=dict)

    def _step(self, fault: str, faulty: bool, healthy: bool, message: str, evidence: dict[str, Any],
              raise_after: int | None = None) -> Alert | None:
        """Hysteresis: raise after ``raise_after`` faulty polls, clear after ``clear_after`` healthy ones."""
        check = self.checks.setdefault(fault, _Check())
        need = raise_after or self.config.raise_after
        if faulty:
            check.bad, check.good = check.bad + 1, 0
            if not check.active and check.bad >= need:
                check.active = True
                return Alert(self.device, fault, True, message, evidence)
        elif healthy:
            check.good, check.bad = check.good + 1, 0
            if check.active and check.good >= self.config.clear_after:
                check.active = False
                return Alert(self.device, fault, False, f"{fault} cleared", evidence)
        else:
            check.bad = 0  # in the dead band: neither counts
        return None

    def observe(self, s: Snapshot) -> list[Alert]:
        cfg = self.config
        expected = float(self.expected(s.poa, s.module_temp))
        sunny = s.poa >= cfg.min_irradiance and expected >= 0.1 * self.rating_w
        pi = s.power_w / expected if expected > 1 else math.nan
        limit_w = self.rating_w * (s.limit_pct or 100.0) / 100.0 if s.limit_enabled else self.rating_w
        curtailed = (s.limit_enabled and s.power_w >= 0.95 * limit_w and limit_w < expected) or \
            s.status in s.states.throttled
        clipping = expected >= 0.99 * self.rating_w and s.power_w >= 0.98 * self.rating_w  # expected is capped at nameplate
        events = [name for bit, name in s.event_bits.items() if s.events and s.events & (1 << bit)]
        evidence = {"ts": s.ts, "power_w": round(s.power_w, 1), "expected_w": round(expected, 1),
                    "performance_index": None if math.isnan(pi) else round(pi, 3), "poa_wm2": round(s.poa, 1),
                    "status": s.status, "events": events, "string_currents_a": [round(a, 2) for a in s.string_currents],
                    "limit_pct": s.limit_pct if s.limit_enabled else None, "family": s.family,
                    "dc_power_w": None if s.dc_power_w is None else round(s.dc_power_w, 1)}
        if s.missing:
            evidence["missing"] = list(s.missing)
        self.history.append((s.power_w, s.dc_power_w if s.dc_power_w is not None else s.poa))
        alerts: list[Alert | None] = []
        offline = s.status in s.states.fault or (sunny and (s.status in s.states.off or s.disconnected
                                                            or s.power_w <= 0.01 * self.rating_w))
        alerts.append(self._step("offline", offline, not offline and (not sunny or pi > 0.5),
                                 f"{self.device} is offline (state {s.status}, {s.power_w:.0f} W, expected {expected:.0f} W)",
                                 evidence, raise_after=1))
        alerts.append(self._step("event", bool(events) and not offline, not events,
                                 f"{self.device} reports events {', '.join(events)}", evidence))
        currents = [a for a in s.string_currents if a is not None and not math.isnan(a)]
        lost = False
        if sunny and not offline and not curtailed and len(currents) >= 2:
            for n, amps in enumerate(currents, start=1):
                peers = [a for m, a in enumerate(currents, start=1) if m != n]
                median = float(np.median(peers))
                if median > 0.5 and amps < cfg.lost_string_ratio * median:
                    lost = True
                    evidence = {**evidence, "lost_string": n}
                    break
        elif sunny and not offline and not curtailed and self.strings == 1:
            lost = not math.isnan(pi) and pi < cfg.lost_string_ratio
        alerts.append(self._step("lost_string", lost, sunny and not lost and not offline,
                                 f"{self.device}: string {evidence.get('lost_string', '?')} makes no current at "
                                 f"{s.poa:.0f} W/m2", evidence))
        judged = sunny and not offline and not curtailed and not clipping and not lost and not math.isnan(pi)
        alerts.append(self._step("derating", judged and pi < cfg.pi_low, judged and pi > cfg.pi_clear,
                                 f"{self.device} underperforms: {s.power_w:.0f} W of {expected:.0f} W expected "
                                 f"(performance index {pi:.2f}), not curtailed", evidence))
        frozen = False
        if len(self.history) == 2 and sunny and not offline and not curtailed and not clipping:
            # a stuck register: AC power stands still while DC power (what it is made from) moves;
            # a derating inverter holds AC and DC still together, so it is not taken for frozen
            powers = [p for p, _ in self.history]
            drivers = [d for _, d in self.history]
            moved = (max(drivers) - min(drivers)) / max(max(drivers), 1.0) > 0.01
            frozen = powers[0] > 0 and len(set(powers)) == 1 and moved
        alerts.append(self._step("frozen_power", frozen, len({p for p, _ in self.history}) > 1,
                                 f"{self.device}: AC power stuck at {s.power_w:.0f} W while DC power changes", evidence,
                                 raise_after=1))
        if judged:
            self.slow_n += 1
            alpha = 1.0 / min(self.slow_n, cfg.soiling_samples)
            self.slow_pi = pi if self.slow_pi is None else (1 - alpha) * self.slow_pi + alpha * pi
        soiled = self.slow_pi is not None and self.slow_n >= cfg.soiling_samples and self.slow_pi < cfg.soiling_pi
        alerts.append(self._step("soiling", soiled, self.slow_pi is not None and self.slow_pi > cfg.soiling_pi + 0.02,
                                 f"{self.device}: performance index has drifted to {self.slow_pi or 0:.2f} "
                                 f"(soiling or degradation)", {**evidence, "slow_performance_index": self.slow_pi}))
        active = sorted(k for k, c in self.checks.items() if c.active)
        state = "offline" if offline else active[0] if active else "curtailed" if curtailed else \
            "clipping" if clipping else "night" if not sunny else "ok"
        self.last = {"state": state, **evidence, "active": active}
        return [a for a in alerts if a is not None]

    def stale(self, age: float) -> list[Alert]:
        faulty = age > self.config.stale_after
        alert = self._step("comms_lost", faulty, not faulty, f"{self.device}: no data for {age:.1f} s",
                           {"age_s": round(age, 1)}, raise_after=1)
        return [alert] if alert else []


class DiagnosisSolution(Solution[DiagnosisConfig]):
    """``type: solar.diagnosis``: see the module doc."""

    multipoint = True  # on_batch takes a connector's block reads whole

    def __init__(self, name: str, config: DiagnosisConfig, context: Context):
        super().__init__(name, config, context)
        self.model = PlantModel(config.plant)
        self.values: dict[str, dict[str, float]] = {dev: {} for dev in config.plant.inverters}
        self.weather: dict[str, deque] = {}
        self.seen: dict[str, float] = {}
        self.diagnosers = {
            dev: InverterDiagnoser(dev, inv.ac_kw * 1000, inv.strings, self._expected_fn(dev), config)
            for dev, inv in config.plant.inverters.items()}
        self.alerts: list[dict[str, Any]] = []
        self.legacy, self.der = legacy_points(config.plant), der_points(config.plant)
        self.families: dict[str, str | None] = {dev: None for dev in config.plant.inverters}  # "der": it published 701
        self.dc_w: dict[str, float] = {}  # each inverter's DC power at its last judged poll
        self._pending: dict[str, asyncio.Task[None]] = {}
        # the station's checks reuse the hysteresis of an InverterDiagnoser
        self._frozen_station = InverterDiagnoser("station", 1.0, 1, lambda *_: 1.0, config)
        self._implausible_station = InverterDiagnoser("station", 1.0, 1, lambda *_: 1.0, config)
        self.dropped = context.metrics.counter("edgeplane_solar_diagnosis_dropped_total",
                                               "readings the diagnosis could not use", ["reason"])

    def _expected_fn(self, device: str) -> Any:
        weather = self.config.plant.weather

        def expected(poa: float, module_temp: float | None) -> float:
            temp, kind = (module_temp, "module") if module_temp is not None else (25.0, "cell")
            if weather is not None and weather.poa is None:  # GHI only: transpose at the current time
                import pandas as pd

                times = pd.DatetimeIndex([pd.Timestamp(self.context.clock.now(), unit="s", tz="UTC")])
                poa = float(self.model.poa_from_ghi(device, times, np.array([poa]))[0])
            return float(self.model.ac_from_poa(device, np.array([poa]), temp, kind)[0])

        return expected

    def points_for(self, device: str) -> DiagnosisPoints:
        """The points an inverter is judged on: the family dispatch would drive it through."""
        return self.der if family_for(self.config.controls, self.families[device]) == "der" else self.legacy

    def subscriptions(self) -> list[str]:
        weather = self.config.plant.weather
        topics = [w for w in (weather.poa or weather.ghi, weather.module_temp) if w]
        families = [self.legacy] if self.config.controls == "legacy" else \
            [self.der] if self.config.controls == "der" else [self.legacy, self.der]
        for dev, inv in self.config.plant.inverters.items():
            names = dict.fromkeys(p for paths in families for p in paths.names(inv.strings))
            topics += [f"{dev}/{p}" for p in names]
        return topics

    async def stop(self) -> None:
        for task in self._pending.values():
            task.cancel()
        self._pending.clear()

    async def run(self) -> None:
        while True:
            await self.context.clock.sleep(1.0)
            now = self.context.clock.now()
            for dev, diag in self.diagnosers.items():
                if dev in self.seen:
                    await self._publish(diag.stale(now - self.seen[dev]))

    async def on_batch(self, batch: Batch) -> None:
        # subscribed multi-point (class attribute multipoint): one batch per block read, its points in turn
        for topic, newest in batch.newest_numbers():
            if newest is None:
                self.dropped.labels(reason="bad_quality").inc()
            else:
                await self._on_reading(topic, newest[1])

    async def _on_reading(self, topic: str, value: float) -> None:
        device, _, point = topic.partition("/")
        weather = self.config.plant.weather
        if topic in (weather.poa or weather.ghi, weather.module_temp):
            low, high = (-40.0, 95.0) if topic == weather.module_temp else (-20.0, 1500.0)
            plausible = low <= value <= high
            alert = self._implausible_station._step(
                f"implausible:{topic}", not plausible, plausible,
                f"{topic} reads {value:g}, outside the plausible {low:g}..{high:g}: inverters are not judged "
                f"against it until it recovers", {"topic": topic, "value": value, "range": [low, high]},
                raise_after=1)
            if alert is not None:
                alert.fault = "implausible_sensor"
                await self._publish([alert])
            if not plausible:
                self.weather.pop(topic, None)  # judging inverters against it would raise false alerts
                self.dropped.labels(reason="implausible_sensor").inc()
                return
            self.weather.setdefault(topic, deque(maxlen=2)).append(value)
            if topic == (weather.poa or weather.ghi):
                await self._check_station(value)
            return
        if device not in self.values:
            return
        if is_der_point(point):
            self.families[device] = "der"  # an IEEE 1547-2018 DER: judge it on 701
        self.values[device][point] = value
        self.seen[device] = self.context.clock.now()
        # a poll publishes all of a device's points at once: judge them together, once
        if device not in self._pending or self._pending[device].done():
            self._pending[device] = asyncio.get_running_loop().create_task(self._evaluate_soon(device))

    async def _evaluate_soon(self, device: str) -> None:
        await asyncio.sleep(0.02)
        weather = self.config.plant.weather
        irr = self.weather.get(weather.poa or weather.ghi)
        if not irr:
            return
        temps = self.weather.get(weather.module_temp) if weather.module_temp else None
        v = self.values[device]
        pts = self.points_for(device)
        inv = self.config.plant.inverters[device]
        if pts.power not in v:
            return
        strings = range(1, inv.strings + 1)
        missing = []
        dc_power = _first_published(v, pts.dc_power, strings, sum)
        if dc_power is None:
            missing.append(f"DC power: {device} publishes none of {', '.join(pts.dc_power)} (for a DER inverter: "
                           f"model 714); frozen AC power is judged against irradiance")
        else:
            self.dc_w[device] = dc_power
        currents = _first_published(v, pts.string_current, strings, list)
        if currents is None:
            currents = [math.nan] * inv.strings
            if inv.strings > 1:
                missing.append(f"string currents: {device} publishes none of {', '.join(pts.string_current)}")
        off = pts.operating is not None and v.get(pts.operating) == 0
        disconnected = pts.connection is not None and v.get(pts.connection) == 0
        snap = Snapshot(ts=self.context.clock.now(), power_w=v[pts.power], status=_int(v.get(pts.status)),
                        events=_int(v.get(pts.events)), limit_enabled=v.get(pts.limit_enable) == 1,
                        limit_pct=v.get(pts.limit_pct), string_currents=currents, poa=irr[-1],
                        module_temp=temps[-1] if temps else None, dc_power_w=dc_power, states=pts.states,
                        event_bits=pts.event_bits, disconnected=off or disconnected, family=pts.family,
                        missing=missing)
        await self._publish(self.diagnosers[device].observe(snap))

    async def _check_station(self, poa: float) -> None:
        """A station irradiance that stands still for 2 readings while every healthy inverter's DC power moves."""
        healthy = {dev: dc for dev, dc in self.dc_w.items() if self.diagnosers[dev].last.get("state") == "ok"}
        diag = self._frozen_station
        diag.history.append((poa, healthy))
        if len(diag.history) < 2:
            return
        (poa0, before), (poa1, after) = diag.history
        common = set(before) & set(after)  # an inverter that trips or recovers is not weather
        total0, total1 = sum(before[d] for d in common), sum(after[d] for d in common)
        # weather moves every array the same way; one inverter's fault moves only its own
        changes = [(after[d] - before[d]) / max(before[d], after[d], 1.0) for d in common]
        moved = bool(changes) and (all(c > 0.03 for c in changes) or all(c < -0.03 for c in changes))
        frozen = poa >= self.config.min_irradiance and poa0 == poa1 and moved
        alert = diag._step("frozen_irradiance", frozen, poa0 != poa1,
                           f"irradiance sensor stuck at {poa:.0f} W/m2 while the inverters' DC power moves "
                           f"({total0:.0f} -> {total1:.0f} W)", {"poa_wm2": [poa0, poa1], "dc_w": [total0, total1]},
                           raise_after=1)
        await self._publish([alert] if alert else [])

    @property
    def state(self) -> dict[str, Any]:
        return {dev: d.last for dev, d in self.diagnosers.items()}

    async def _publish(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            data = {"device": alert.device, "fault": alert.fault, "message": alert.message, "evidence": alert.evidence}
            self.alerts.append({"active": alert.active, **data})
            if alert.active:
                self.log.warning("alert: %s", alert.message)
            else:
                self.log.info("cleared: %s %s", alert.device, alert.fault)
            await self.context.emit(f"alerts/{self.name}", "alarm" if alert.active else "clear", data,
                                    severity=SEVERITY.get(alert.fault, "warning") if alert.active else "info")


def _first_published(values: dict[str, float], templates: tuple[str, ...], strings: range, combine: Any) -> Any:
    """``combine`` of the first template whose every point (every string's, for ``{n}``) is published, or None."""
    for template in templates:
        names = [template.format(n=n) for n in strings] if "{n}" in template else [template]
        if all(name in values for name in names):
            return combine(values[name] for name in names)
    return None


def _int(value: float | None) -> int | None:
    return None if value is None or math.isnan(value) else int(value)
