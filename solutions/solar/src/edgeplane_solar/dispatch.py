"""Grid dispatch (``type: solar.dispatch``): a plant active-power limit shared across inverters.

The operator's limit arrives as a write to a virtual plant-controller device (the ``memory``
connector: ``plant/limit_kw`` or ``plant/limit_pct``, optional ``plant/limit_expiry`` in seconds),
so a cloud command (sync downlink), a local controller and the CLI all pass the guarded command
path and the audit log. Every ``interval`` the solution:

1. drops the limit when it has expired, writing the safe default (``WMaxLimPct`` 100 %,
   ``WMaxLim_Ena`` 0) to every inverter;
2. estimates each inverter's available power: expected AC from measured irradiance (pvlib),
   capped at its rating, or its measured output when it makes less than it was allowed; an
   inverter that is tripped (SunSpec state FAULT) or silent for ``stale_after`` has none;
3. shares the limit in proportion to available power, and writes ``WMaxLimPct`` (then
   ``WMaxLim_Ena`` = 1) through ``context.command``, which confirms each write by read-back.

So a tripped inverter's share moves to the others on the next interval.

Fail safe: every limit and power-factor write is preceded by the inverter-side revert timer
(``revert_after``: ``123.WMaxLimPct_RvrtTms`` / ``123.OutPFSet_RvrtTms``, or 704's
``WMaxLimPctRvrtTms`` with ``WMaxLimPctRvrt`` 100 % and ``WMaxLimPctEnaRvrt`` 0, and
``PFWInjRvrtTms``) and the ramp time (``ramp_time``: ``123.WMaxLimPct_RmpTms``, or ``704.WRmp`` as
100 % / ramp time per second); the solution renews its writes every third of ``revert_after``. If
the host dies, each inverter returns to its default by itself when its timer runs out.

Two control paths, chosen per inverter from what its SunSpec scan published (``controls: auto``):
an inverter with the IEEE 1547-2018 DER models (701 measurements) is driven through 704 and read
through 701 (``701.W``, ``701.InvSt``); others through 123 and 103. ``controls: legacy`` or ``der``
forces one.

With ``ramp_pct_per_min`` the plant's output may rise by at most that share of capacity per
minute: the limit actually shared is ``min(operator limit, measured output + ramp step)``, so a
released curtailment or a clearing sky ramps up instead of jumping. A power-factor setpoint
written to ``plant/pf_setpoint`` (1 or 0 releases it) goes to every inverter's ``OutPFSet`` and
``OutPFSet_Ena``, with the same expiry rules.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edgeplane import Batch, Context, Solution, SolutionConfig
from edgeplane.config import Duration

from edgeplane_solar.controls import (CONTROLS_DESCRIPTION, DER, ST_FAULT, ControlPoints, ControlsChoice, family_for,
                                      is_der_point, legacy_controls)
from edgeplane_solar.plant import PlantConfig, PlantModel

class DispatchConfig(SolutionConfig):
    plant: PlantConfig
    command_device: str = Field("plant", description="virtual device whose points carry the operator's limit")
    limit_kw_point: str = "limit_kw"
    limit_pct_point: str = "limit_pct"
    expiry_point: str = Field("limit_expiry", description="seconds the next limit holds; 0 or absent: default_expiry")
    default_expiry: Duration = Field(900.0, description="a limit without an expiry lapses after this")
    interval: Duration = Field(1.0, description="how often the limit is re-shared (about the inverters' poll)")
    stale_after: Duration = Field(5.0, description="an inverter silent this long counts as offline")
    deadband_pct: float = Field(0.2, ge=0, description="skip rewrites that change a setpoint by less than this")
    ramp_pct_per_min: float | None = Field(
        None, gt=0, description="largest rise of plant output per minute, % of AC capacity (a grid-code ramp limit); "
                                "decreases are never held back")
    pf_point: str = Field("pf_setpoint", description="point of the command device carrying a power-factor setpoint")
    pf_setpoint: str = Field("123.OutPFSet", description="inverter point the power factor is written to")
    pf_enable: str = Field("123.OutPFSet_Ena", description="inverter point that enables it")
    revert_after: Duration = Field(
        60.0, gt=0, description="inverter-side revert timer written with every command: the inverter drops a limit or "
                                "power factor by itself when the host has not renewed it for this long")
    ramp_time: Duration = Field(0.0, ge=0, description="ramp time written with every limit, so the inverter moves to a "
                                                        "new limit (or back to full power) over it; 0: at once")
    controls: ControlsChoice = Field("auto", description=CONTROLS_DESCRIPTION)


def share(limit_w: float, available_w: dict[str, float], rating_w: dict[str, float]) -> dict[str, float]:
    """WMaxLimPct for each inverter: the limit shared in proportion to available power.

    Inverters with no available power get 0 %; when the plant cannot reach the limit anyway,
    every inverter gets 100 %.
    """
    total = sum(max(a, 0.0) for a in available_w.values())
    if total <= limit_w:
        return {name: 100.0 for name in available_w}
    out = {}
    for name, avail in available_w.items():
        watts = limit_w * max(avail, 0.0) / total if total > 0 else 0.0
        out[name] = min(100.0, math.floor(1000.0 * watts / rating_w[name]) / 10.0)  # SunSpec 0.1 % steps, never above
    return out


@dataclass
class Limit:
    watts: float
    expires_at: float
    source: str


@dataclass
class InverterView:
    power_w: float = math.nan
    status: int | None = None
    pct: float | None = None  # the read-back setpoint
    enabled: bool = False
    seen: float = -math.inf
    written_at: float = -math.inf
    failures: int = 0
    family: str | None = None  # "der" once the device published a 701 point


class DispatchSolution(Solution[DispatchConfig]):
    """See the module doc."""

    multipoint = True  # on_batch takes a connector's block reads whole

    def __init__(self, name: str, config: DispatchConfig, context: Context):
        super().__init__(name, config, context)
        self.model = PlantModel(config.plant)
        self.capacity_w = config.plant.ac_capacity_w
        self.rating = {dev: inv.ac_kw * 1000.0 for dev, inv in config.plant.inverters.items()}
        self.views = {dev: InverterView() for dev in config.plant.inverters}
        self.limit: Limit | None = None
        self.next_expiry: float | None = None
        self.poa: float | None = None
        self.module_temp: float | None = None
        self.last_allocation: dict[str, float] = {}
        self.released = True  # inverters hold the safe default
        self.effective_w: float | None = None  # the limit shared last (operator limit and ramp together)
        self._ramp_ts: float | None = None
        self.power_factor: tuple[float, float] | None = None  # (setpoint, expires at)
        self._lock = asyncio.Lock()
        self.legacy = legacy_controls(config.plant, config.pf_setpoint, config.pf_enable)
        self._pf_written_at = -math.inf
        self.command_failures = context.metrics.counter("edgeplane_solar_dispatch_command_failures_total",
                                                        "inverter setpoint writes that were not confirmed", ["device"])

    # -- inputs -------------------------------------------------------------------------------

    def subscriptions(self) -> list[str]:
        pts = self.config.plant.points
        dev = self.config.command_device
        topics = [f"{dev}/{p}" for p in (self.config.limit_kw_point, self.config.limit_pct_point, self.config.expiry_point,
                                         self.config.pf_point)]
        weather = self.config.plant.weather
        if weather is not None:
            topics += [t for t in (weather.poa or weather.ghi, weather.module_temp) if t]
        for inv in self.config.plant.inverters:
            topics += [f"{inv}/{p}" for p in (pts.power, pts.status, pts.limit_pct, pts.limit_enable)]
            if self.config.controls != "legacy":
                topics += [f"{inv}/{p}" for p in (DER.power, DER.status, DER.limit_pct, DER.limit_enable)]
        return topics

    def controls_for(self, device: str) -> ControlPoints:
        """The control path of an inverter: forced by ``controls``, else what its scan published."""
        return DER if family_for(self.config.controls, self.views[device].family) == "der" else self.legacy

    async def on_batch(self, batch: Batch) -> None:
        # subscribed multi-point (class attribute multipoint): one batch per block read, its points in turn
        for topic, newest in batch.newest_numbers():
            if newest is not None:
                await self._on_reading(topic, newest[1])

    async def _on_reading(self, topic: str, value: float) -> None:
        device, _, point = topic.partition("/")
        cfg = self.config
        weather = cfg.plant.weather
        if device == cfg.command_device:
            if point == cfg.expiry_point:
                self.next_expiry = value if value > 0 else None
            elif point == cfg.limit_kw_point:
                await self.set_limit(watts=value * 1000.0, source=f"{device}/{point}")
            elif point == cfg.limit_pct_point:
                await self.set_limit(watts=value / 100.0 * self.capacity_w, source=f"{device}/{point}")
            elif point == cfg.pf_point:
                await self.set_power_factor(value, source=f"{device}/{point}")
            return
        if weather is not None and topic == (weather.poa or weather.ghi):
            self.poa = value
            return
        if weather is not None and topic == weather.module_temp:
            self.module_temp = value
            return
        view = self.views.get(device)
        if view is None:
            return
        if is_der_point(point):
            view.family = "der"  # an IEEE 1547-2018 DER: drive it through 704
        paths = self.controls_for(device)
        if point not in (paths.power, paths.status, paths.limit_pct, paths.limit_enable):
            return
        view.seen = self.context.clock.now()
        if point == paths.power:
            view.power_w = value
        elif point == paths.status:
            view.status = ST_FAULT if int(value) == paths.fault else int(value)
        elif point == paths.limit_pct:
            view.pct = value
        elif point == paths.limit_enable:
            view.enabled = value == 1

    async def set_limit(self, *, watts: float | None, expires_in: float | None = None, source: str = "api") -> None:
        """Set (or, with None, a negative value or the plant's capacity and above, release) the plant limit."""
        now = self.context.clock.now()
        if watts is None or not math.isfinite(watts) or watts < 0 or watts >= self.capacity_w:
            if self.limit is not None:
                self.log.info("dispatch: limit released by %s", source)
            self.limit = None
            await self._apply(now, reason=f"limit released by {source}")
            return
        expiry = expires_in or self.next_expiry or self.config.default_expiry
        self.next_expiry = None
        self.limit = Limit(watts, now + expiry, source)
        self.log.info("dispatch: plant limit %.1f kW from %s for %.0f s", watts / 1000, source, expiry)
        await self._apply(now, reason=f"plant limit {watts / 1000:.1f} kW from {source}")

    async def set_power_factor(self, pf: float | None, *, expires_in: float | None = None, source: str = "api") -> None:
        """Write a power-factor setpoint to every inverter (None, 0 or 1: release to unity, disabled)."""
        now = self.context.clock.now()
        setpoint = None if pf is None or not math.isfinite(pf) or pf == 0 or abs(pf) >= 1 else float(pf)
        if setpoint is None:  # released
            self.power_factor = None
        else:
            expiry = expires_in or self.next_expiry or self.config.default_expiry
            self.next_expiry = None
            self.power_factor = (setpoint, now + expiry)
        await self._write_power_factor(setpoint, f"power factor {pf} from {source}")

    async def _write_power_factor(self, pf: float | None, reason: str) -> None:
        self._pf_written_at = self.context.clock.now()

        async def one(dev: str) -> None:
            paths = self.controls_for(dev)
            result = await self._fail_safe(dev, paths, reason, pf=True) if pf is not None else None
            if result is None or result.ok:
                result = await self.context.command(dev, paths.pf, 1.0 if pf is None else pf, reason=reason)
            if result.ok:
                result = await self.context.command(dev, paths.pf_enable, 0 if pf is None else 1, reason=reason)
            if not result.ok:
                self.command_failures.labels(device=dev).inc()
                self.log.warning("dispatch: %s", result)

        await asyncio.gather(*(one(dev) for dev in self.views))

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self.context.clock.sleep(self.config.interval)
            now = self.context.clock.now()
            if self.limit is not None and now >= self.limit.expires_at:
                self.log.warning("dispatch: limit from %s expired; reverting to the safe default", self.limit.source)
                self.limit = None
                await self._apply(now, reason="limit expired")
            else:
                await self._apply(now, reason="re-share")
            if self.power_factor is not None and now >= self.power_factor[1]:
                self.log.warning("dispatch: power-factor setpoint expired; back to unity")
                self.power_factor = None
                await self._write_power_factor(None, "power factor expired")
            elif self.power_factor is not None and now - self._pf_written_at >= self.config.revert_after / 3:
                await self._write_power_factor(self.power_factor[0], "power factor renewed (revert timer)")

    def available(self, now: float) -> dict[str, float]:
        """Available power per inverter (W); 0 for tripped or silent ones."""
        out = {}
        for dev, view in self.views.items():
            if view.status == ST_FAULT or now - view.seen > self.config.stale_after:
                out[dev] = 0.0
                continue
            if self.poa is not None:
                kind: Literal["module", "cell"]
                temp, kind = (self.module_temp, "module") if self.module_temp is not None else (25.0, "cell")
                expected = float(self.model.ac_from_poa(dev, np.array([self.poa]), temp, kind)[0])
            else:
                expected = view.power_w if math.isfinite(view.power_w) else 0.0
            allowed = self.last_allocation.get(dev, 100.0) / 100.0 * self.rating[dev]
            settled = now - view.written_at >= 2 * self.config.interval
            if settled and math.isfinite(view.power_w) and view.power_w < 0.95 * min(allowed, expected):
                expected = view.power_w  # it cannot make what it was allowed: a lost string, a derating
            out[dev] = min(expected, self.rating[dev])
        return out

    def _ramp_cap(self, now: float) -> float | None:
        """Measured plant output plus what the ramp limit allows it to rise until the next interval."""
        if self.config.ramp_pct_per_min is None:
            return None
        dt = max(self.config.interval, now - self._ramp_ts) if self._ramp_ts is not None else self.config.interval
        self._ramp_ts = now
        fresh = [v.power_w for v in self.views.values()
                 if math.isfinite(v.power_w) and now - v.seen <= self.config.stale_after]
        output = sum(fresh)
        # ramp from the last limit shared (steps below the write deadband still add up), but never
        # from far above what the plant makes: under clouds the ramp re-anchors to the output
        base = output if self.effective_w is None else min(self.effective_w, output + 0.02 * self.capacity_w)
        return base + self.config.ramp_pct_per_min / 100.0 * self.capacity_w * dt / 60.0

    async def _apply(self, now: float, reason: str) -> None:
        async with self._lock:
            avail = self.available(now)
            target = self.limit.watts if self.limit is not None else None
            ramp = self._ramp_cap(now)
            candidates = [w for w in (target, ramp) if w is not None]
            effective = min(candidates) if candidates else None
            if effective is None or (target is None and effective >= sum(avail.values())):
                # no operator limit and the ramp does not bind: inverters at the safe default
                self.effective_w = None
                if not self.released:
                    await self._write_all({dev: 100.0 for dev in self.views}, now, reason, enable=False)
                    self.released = True
                return
            if ramp is not None and target is not None and ramp < target:
                reason = f"{reason}; ramp limit {self.config.ramp_pct_per_min:g} %/min"
            elif ramp is not None and target is None:
                reason = f"ramp limit {self.config.ramp_pct_per_min:g} %/min"
            self.effective_w = effective
            allocation = share(effective, avail, self.rating)
            renew = self.config.revert_after / 3  # well before the inverters' revert timers run out
            changed = {dev: pct for dev, pct in allocation.items()
                       if self.released or abs(pct - self.last_allocation.get(dev, -1.0)) > self.config.deadband_pct
                       or not self.views[dev].enabled or now - self.views[dev].written_at >= renew}
            changed = {dev: pct for dev, pct in changed.items() if now - self.views[dev].seen <= self.config.stale_after}
            if changed:
                await self._write_all(changed, now, reason, enable=True)
                self.released = False
                await self.context.emit(f"dispatch/{self.name}", "allocation",
                                        {"limit_w": target, "effective_w": effective, "ts": now,
                                         "expires_at": self.limit.expires_at if self.limit else None,
                                         "available_w": {k: round(v) for k, v in avail.items()},
                                         "allocation_pct": allocation, "reason": reason})

    async def _fail_safe(self, dev: str, paths: ControlPoints, reason: str, pf: bool = False) -> Any:
        """Write the revert timer (and, for a limit, the ramp and 704's revert values) before the command."""
        cfg = self.config
        seconds = max(1, int(math.ceil(cfg.revert_after)))
        writes: list[tuple[str, float]] = [(paths.pf_revert_s if pf else paths.limit_revert_s, seconds)]
        if pf and paths.family == "der":
            writes.append(("704.PFWInjEnaRvrt", 0))
        if not pf:
            if paths.family == "der":
                writes += [("704.WMaxLimPctRvrt", 100.0), ("704.WMaxLimPctEnaRvrt", 0),
                           (paths.ramp, round(100.0 / cfg.ramp_time) if cfg.ramp_time else 0)]
            else:
                writes.append((paths.ramp, int(round(cfg.ramp_time))))
        result = None
        for point, value in writes:
            result = await self.context.command(dev, point, value, reason=f"{reason} (fail-safe)")
            if not result.ok:
                return result
        return result

    async def _write_all(self, allocation: dict[str, float], now: float, reason: str, enable: bool) -> None:
        async def one(dev: str, pct: float) -> None:
            view = self.views[dev]
            paths = self.controls_for(dev)
            result = await self._fail_safe(dev, paths, reason) if enable else None
            if result is None or result.ok:
                result = await self.context.command(dev, paths.limit_pct, pct, reason=reason)
            if result.ok and (view.enabled != enable or not enable):
                result = await self.context.command(dev, paths.limit_enable, 1 if enable else 0, reason=reason)
                if result.ok:
                    view.enabled = enable
            if result.ok:
                self.last_allocation[dev] = pct
                view.pct = pct
                view.written_at = now
                view.failures = 0
            else:
                view.failures += 1
                self.command_failures.labels(device=dev).inc()
                self.log.warning("dispatch: %s", result)

        await asyncio.gather(*(one(dev, pct) for dev, pct in allocation.items()))

    @property
    def state(self) -> dict[str, Any]:
        now = self.context.clock.now()
        return {"limit_w": self.limit.watts if self.limit else None,
                "effective_w": self.effective_w,
                "expires_in_s": round(self.limit.expires_at - now, 1) if self.limit else None,
                "allocation_pct": dict(self.last_allocation) if not self.released else {},
                "power_factor": self.power_factor[0] if self.power_factor else None,
                "plant_w": round(sum(v.power_w for v in self.views.values() if math.isfinite(v.power_w)))}
