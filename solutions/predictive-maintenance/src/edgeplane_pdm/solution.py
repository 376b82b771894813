"""The ``pdm`` solution: vibration and temperature in, health per asset and explained alerts out.

Per machine it buffers the waveform point's samples; each full window is turned into features
(off the event loop), the fault classifier (``pdm-faults``) names the likeliest condition, and
after commissioning (the first ``commissioning`` windows are the machine's healthy baseline) the
anomaly model (``pdm-anomaly``) scores the window against that baseline. Both run on the shared
inference service. Out of it come:

* ``pdm/<machine>/health`` (0..100), ``pdm/<machine>/anomaly_score``, ``pdm/<machine>/rms``,
  ``pdm/<machine>/kurtosis``, ``pdm/<machine>/env_<fault>_db``, ``pdm/<machine>/temperature_slope``
  (degC per hour): one reading per window, small enough to aggregate hourly for the cloud;
* events on ``alerts/<solution>/<machine>``: ``alert`` (severity warning or critical) when the
  score stays above ``alert.high`` for ``alert.persist`` windows, ``escalate`` when it passes
  ``alert.critical``, ``clear`` when it stays below ``alert.clear``; one open alert per machine
  (hysteresis and de-duplication), each carrying its evidence: the features furthest from the
  baseline, the bearing fault frequency with the strongest envelope peak, the classifier's call,
  the temperature trend.

With a ``rul:`` section it also tracks assets that report multivariate sensor histories (the
C-MAPSS sensors): on each reading of an asset's ``cycle`` topic the latest sensor values form that
cycle's row, ``pdm-rul`` predicts the remaining useful life from the last 60 rows, the prediction
goes out on ``pdm/<asset>/rul``, and ``rul_alert`` / ``rul_escalate`` / ``rul_clear`` events (same
hysteresis) fire when it falls below ``rul.warning`` / ``rul.critical`` cycles.

Example (site file)::

    solutions:
      pdm:
        type: pdm
        window: 4096
        commissioning: 20
        machines:
          m1:
            vibration: line/m1_vibration
            temperature: line/m1_temperature
            sample_rate: 12000
            shaft_rpm: 1797
            bearing: {n_balls: 9, ball_diameter: 0.3126, pitch_diameter: 1.537, contact_angle: 0}
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeplane import Batch, Context, Quality, Solution, SolutionConfig
from edgeplane.errors import SiteError, SiteProblem
from edgeplane_pdm.anomaly import AlertState, Baseline
from edgeplane_pdm.features import FEATURE_NAMES, BearingGeometry, WindowFeatures, window_and_fault_features
from edgeplane_pdm.quality import window_fault
from edgeplane_pdm.rul import HISTORY as RUL_HISTORY
from edgeplane_pdm.rul import WINDOWS as RUL_WINDOWS

__all__ = ["PdmConfig", "PdmSolution", "MachineConfig", "AlertConfig"]

# how far a feature may wander in a healthy machine before it counts, in its own units: log10
# amplitudes 0.05 (12%), crest and skewness 0.1, kurtosis 0.2, band shares 0.05 (log10), envelope 1 dB
_SCALE_FLOOR = np.array([0.05, 0.05, 0.1, 0.2, 0.1, *([0.05] * 8), 1.0, 1.0, 1.0, 1.0, 1.0], dtype=np.float32)
_FEATURE_LABELS = {"log_rms": "RMS", "log_peak": "peak", "crest": "crest factor", "kurtosis": "kurtosis", "skewness": "skewness"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MachineConfig(_Model):
    vibration: str = Field(description="bus topic of the waveform point, e.g. line/m1_vibration")
    temperature: str | None = Field(None, description="bus topic of the bearing temperature point")
    sample_rate: float = Field(gt=0, description="vibration samples per second (Hz)")
    shaft_rpm: float = Field(gt=0, description="shaft speed in rpm (sets the bearing fault frequencies)")
    bearing: BearingGeometry
    envelope_band: tuple[float, float] | None = Field(None, description="Hz; default sample_rate/6 .. sample_rate/2.4")

    @model_validator(mode="after")
    def _band_below_nyquist(self) -> MachineConfig:
        if self.envelope_band and not (0 < self.envelope_band[0] < self.envelope_band[1] < self.sample_rate / 2):
            raise ValueError(f"envelope_band {list(self.envelope_band)} must be increasing and below Nyquist ({self.sample_rate / 2:g} Hz)")
        return self


class AlertConfig(_Model):
    high: float = Field(6.0, gt=0, description="raise when the anomaly score (rms of z-scores) stays above this")
    clear: float = Field(3.0, gt=0, description="clear when it stays below this (hysteresis)")
    critical: float = Field(12.0, gt=0, description="severity critical above this")
    persist: int = Field(3, ge=1, description="consecutive windows needed to raise or clear")

    @model_validator(mode="after")
    def _ordered(self) -> AlertConfig:
        if not self.clear < self.high <= self.critical:
            raise ValueError(f"need clear < high <= critical, got clear={self.clear}, high={self.high}, critical={self.critical}")
        return self


class RulAsset(_Model):
    cycle: str = Field(description="topic with one reading per operating cycle (its value: the cycle number); each one "
                                   "takes the latest value of every sensor as that cycle's row")
    sensors: dict[str, str] = Field(description="C-MAPSS sensor name (s2, s3, ...) -> topic")

    @model_validator(mode="after")
    def _all_sensors(self) -> RulAsset:
        from edgeplane_pdm.rul import SENSORS

        need = {f"s{i}" for i in SENSORS}
        if set(self.sensors) != need:
            missing, extra = sorted(need - set(self.sensors)), sorted(set(self.sensors) - need)
            raise ValueError(f"the RUL model reads sensors {sorted(need, key=lambda n: int(n[1:]))}: missing {missing}, unknown {extra}")
        return self


class RulConfig(_Model):
    model: str = "pdm-rul"
    windows: list[int] | None = Field(None, min_length=1,
                                      description="feature windows (cycles) of a model whose manifest does not name them "
                                                  "(provenance.windows); default: the served model's own")
    warning: float = Field(50.0, gt=0, description="alert (warning) when the predicted RUL stays below this many cycles")
    critical: float = Field(20.0, gt=0, description="severity critical below this many cycles")
    clear_margin: float = Field(10.0, ge=0, description="clear when the prediction climbs back above warning + this")
    persist: int = Field(2, ge=1)
    assets: dict[str, RulAsset] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> RulConfig:
        if self.critical > self.warning:
            raise ValueError(f"critical ({self.critical}) must not be above warning ({self.warning})")
        return self


class PdmConfig(SolutionConfig):
    machines: dict[str, MachineConfig] = Field(default_factory=dict, description="vibration-monitored machines")
    rul: RulConfig | None = Field(None, description="remaining useful life of assets with multivariate sensor histories")
    window: int = Field(4096, ge=256, le=1 << 20, description="samples per feature window")
    commissioning: int = Field(20, ge=3, description="windows that form each machine's healthy baseline")
    break_in: int = Field(0, ge=0, description="windows skipped before commissioning starts: a new or re-greased bearing "
                                              "runs in, and a baseline taken then would hide a later rise")
    alert: AlertConfig = Field(default_factory=AlertConfig)
    fault_model: str | None = Field("pdm-faults", description="classifier model name; null: off")
    anomaly_model: str = "pdm-anomaly"
    temperature_window: float = Field(600.0, gt=0, description="seconds of temperature history for the trend")

    @model_validator(mode="after")
    def _something_to_watch(self) -> PdmConfig:
        if not self.machines and self.rul is None:
            raise ValueError("nothing to watch: list 'machines' (vibration) or 'rul.assets' (sensor histories)")
        return self


@dataclass
class _MachineState:
    config: MachineConfig
    buffer: list[np.ndarray] = field(default_factory=list)
    buffered: int = 0
    baseline_rows: list[np.ndarray] = field(default_factory=list)
    baseline: Baseline | None = None
    alert: AlertState = field(default_factory=AlertState)
    temps: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100_000))
    windows: int = 0
    health: float = 100.0
    score: float = 0.0
    fault_class: str | None = None
    busy: bool = False
    # data quality: the open fault (None: none) and the run of windows agreeing with a change
    quality_fault: str | None = None
    quality_run: int = 0


@dataclass
class _RulState:
    config: RulAsset
    alert: AlertState
    latest: dict[str, float] = field(default_factory=dict)
    history: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RUL_HISTORY))
    rul: float | None = None
    cycles: int = 0


def health_index(score: float, high: float) -> float:
    """100 for a machine like its baseline, falling as the anomaly score rises (about 59 at ``high``)."""
    excess = max(0.0, score - 1.0) / high
    return 100.0 / (1.0 + excess**2)


class PdmSolution(Solution[PdmConfig]):
    multipoint = True  # on_batch takes a connector's block reads whole
    def __init__(self, name: str, config: PdmConfig, context: Context):
        super().__init__(name, config, context)
        self.machines = {m: _MachineState(c) for m, c in config.machines.items()}
        for state in self.machines.values():
            a = config.alert
            state.alert = AlertState(high=a.high, clear=a.clear, critical=a.critical, persist=a.persist)
        self._by_topic: dict[str, tuple[str, str]] = {}
        for m, c in config.machines.items():
            self._by_topic[c.vibration] = (m, "vibration")
            if c.temperature:
                self._by_topic[c.temperature] = (m, "temperature")
        self.rul_assets: dict[str, _RulState] = {}
        # the served model's windows, read from its manifest before each prediction (a rollout may
        # swap in a model trained with another history); until then the shipped model's
        self._rul_windows: tuple[int, ...] = RUL_WINDOWS
        if config.rul is not None:
            r = config.rul
            for asset, c in config.rul.assets.items():
                # scores are negated RUL so that "higher is worse", as AlertState expects
                self.rul_assets[asset] = _RulState(c, AlertState(high=-r.warning, clear=-(r.warning + r.clear_margin),
                                                                 critical=-r.critical, persist=r.persist),
                                                   history=collections.deque(maxlen=RUL_HISTORY))
                self._by_topic[c.cycle] = (asset, "rul_cycle")
                for sensor, topic in c.sensors.items():
                    self._by_topic[topic] = (asset, f"rul_sensor:{sensor}")
        metrics = context.metrics
        self.bytes_read = 0
        self._m_read = metrics.counter("edgeplane_pdm_bytes_read", "Bytes of raw readings the pdm solution consumed", ["solution"]).labels(solution=name)
        self._m_windows = metrics.counter("edgeplane_pdm_windows", "Feature windows processed, by machine", ["solution", "machine"])
        self._m_alerts = metrics.counter("edgeplane_pdm_alerts", "Alert notices emitted, by machine and kind", ["solution", "machine", "kind"])
        self._dropped = metrics.dropped

    def subscriptions(self) -> list[str]:
        return list(self._by_topic)

    @property
    def rul_windows(self) -> tuple[int, ...]:
        """The RUL feature windows (cycles) in use now: the served model's, read from its manifest at
        start and before each prediction; the shipped model's until then."""
        return self._rul_windows

    def _baseline_key(self, machine: str) -> str:
        return f"pdm/{self.name}/{machine}/baseline"

    async def start(self) -> None:
        """Check the RUL model's feature windows; restore each machine's commissioning baseline
        from the site's store, if it has one."""
        if self.config.rul is not None:
            await self._follow_rul_model()
        if self.context.store is None:
            return
        for machine, state in self.machines.items():
            saved = await self.context.store.get_state(self._baseline_key(machine))
            if saved is not None and state.baseline is None:
                state.baseline = Baseline.from_dict(saved)
                self.log.info("machine %s: commissioning baseline restored from the store", machine)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per machine: health, score, alert severity, classifier call, windows seen (for demos and tests)."""
        return {m: {"health": round(s.health, 1), "score": round(s.score, 2), "alert": s.alert.severity,
                    "fault_class": s.fault_class, "windows": s.windows, "commissioned": s.baseline is not None}
                for m, s in self.machines.items()}

    async def on_batch(self, batch: Batch) -> None:
        # subscribed multi-point (class attribute multipoint): one batch per block read, its points in turn
        for piece in batch.split():
            await self._on_point(piece)

    async def _on_point(self, batch: Batch) -> None:
        target = self._by_topic.get(batch.topic)
        if target is None:
            return
        machine, kind = target
        if kind.startswith("rul_"):
            await self._on_rul(machine, kind, batch)
            return
        state = self.machines[machine]
        self.bytes_read += batch.values.nbytes
        self._m_read.inc(batch.values.nbytes)
        good = (batch.quality == Quality.GOOD) & np.isfinite(batch.values.astype(np.float64))
        if kind == "temperature":
            for t, v in zip(batch.ts[good], batch.values[good]):
                state.temps.append((float(t), float(v)))
            return
        if not good.all():
            # a Bad sample breaks the window's continuity: start the window again after it
            self._dropped.labels(part=self.name, reason="bad_vibration_sample").inc(int(len(good)))
            state.buffer, state.buffered = [], 0
            return
        state.buffer.append(np.asarray(batch.values, dtype=np.float64))
        state.buffered += len(batch.values)
        if state.buffered < self.config.window:
            return
        samples = np.concatenate(state.buffer)
        state.buffer, state.buffered = [], 0
        if state.busy:
            # the previous window of this machine is still being analysed: skip, never queue up
            self._dropped.labels(part=self.name, reason="window_busy").inc()
            return
        state.busy = True
        try:
            await self._analyse(machine, state, samples[-self.config.window:], float(batch.ts[-1]))
        finally:
            state.busy = False

    def _temperature_trend(self, state: _MachineState, now: float) -> tuple[float | None, float | None]:
        """(latest degC, slope in degC per hour over the last temperature_window seconds)."""
        recent = [(t, v) for t, v in state.temps if t >= now - self.config.temperature_window]
        if not recent:
            return None, None
        if len(recent) < 3:
            return recent[-1][1], None
        t = np.array([r[0] for r in recent])
        v = np.array([r[1] for r in recent])
        if t[-1] - t[0] < 1e-3:
            return float(v[-1]), None
        slope = np.polyfit(t - t[0], v, 1)[0] * 3600.0
        return float(v[-1]), float(slope)

    async def _quality(self, machine: str, state: _MachineState, window: np.ndarray, ts: float) -> bool:
        """Judge the window's data quality; emit ``data_quality`` / ``data_quality_clear`` events
        (after ``alert.persist`` windows, as degradation alerts); True when the window is usable."""
        healthy_rms = float(10 ** state.baseline.center[0]) if state.baseline is not None else None
        fault = window_fault(window, healthy_rms=healthy_rms)
        if fault is not None:
            self._dropped.labels(part=self.name, reason=f"data_quality_{fault}").inc()
        changed = fault != state.quality_fault
        state.quality_run = state.quality_run + 1 if changed else 0
        if changed and state.quality_run >= self.config.alert.persist:
            state.quality_run = 0
            previous, state.quality_fault = state.quality_fault, fault
            topic = f"alerts/{self.name}/{machine}"
            data = {"machine": machine, "at": ts, "reason": fault or previous, "sensor": state.config.vibration}
            kind = "data_quality" if fault is not None else "data_quality_clear"
            self._m_alerts.labels(solution=self.name, machine=machine, kind=kind).inc()
            if fault is not None:
                self.log.warning("machine %s: vibration sensor %s: %s (a sensor fault, not a machine fault)",
                                 machine, state.config.vibration, fault)
                await self.context.emit(topic, kind, data, severity="warning")
            else:
                await self.context.emit(topic, kind, data, severity="info")
        return fault is None

    async def _analyse(self, machine: str, state: _MachineState, window: np.ndarray, ts: float) -> None:
        c = state.config
        if not await self._quality(machine, state, window, ts):
            return  # a sensor fault never feeds the baseline, the classifier or the degradation score
        try:
            feats, fault_vector = await self.context.run_blocking(
                window_and_fault_features, window, c.sample_rate, c.shaft_rpm / 60.0, c.bearing, c.envelope_band)
        except ValueError as e:
            self._dropped.labels(part=self.name, reason="bad_window").inc()
            self.log.warning("machine %s: window skipped: %s", machine, e)
            return
        state.windows += 1
        self._m_windows.labels(solution=self.name, machine=machine).inc()
        vector = feats.vector()
        inference = self.context.inference
        if inference is None:
            raise RuntimeError(f"solution {self.name!r} needs the inference service: add an 'inference:' section to the site file")
        fault_call: dict[str, Any] | None = None
        if self.config.fault_model:
            out = await inference.infer(self.config.fault_model, {"features": fault_vector[None]})
            label = out.get("label")
            probs = out.get("probabilities")
            if label is not None:
                state.fault_class = str(np.asarray(label).ravel()[0])
                fault_call = {"class": state.fault_class,
                              "probability": round(float(np.max(probs)), 3) if probs is not None else None}
        temp, slope = self._temperature_trend(state, ts)
        if state.baseline is None:
            if state.windows <= self.config.break_in:
                await self._publish(machine, ts, feats, None, slope)
                return
            state.baseline_rows.append(vector)
            if len(state.baseline_rows) >= self.config.commissioning:
                state.baseline = Baseline.fit(np.array(state.baseline_rows), floor=_SCALE_FLOOR)
                self.log.info("machine %s commissioned: baseline of %d windows", machine, len(state.baseline_rows))
                if self.context.store is not None:
                    # a restart must not re-commission a machine that may have degraded since
                    await self.context.store.put_state(self._baseline_key(machine), state.baseline.as_dict())
            await self._publish(machine, ts, feats, None, slope)
            return
        base = state.baseline
        out = await inference.infer(self.config.anomaly_model, {"features": vector[None], "center": base.center[None], "scale": base.scale[None]})
        z = np.asarray(out["z"]).ravel()
        score = float(np.asarray(out["score"]).ravel()[0])
        state.score = score
        state.health = health_index(score, self.config.alert.high)
        await self._publish(machine, ts, feats, score, slope)
        change = state.alert.update(score, ts)
        if change is not None:
            await self._notify(machine, state, change, ts, feats, z, fault_call, temp, slope)

    async def _on_rul(self, asset: str, kind: str, batch: Batch) -> None:
        from edgeplane_pdm.rul import RAW_MEAN, RAW_STD, SENSORS, features_at

        state = self.rul_assets[asset]
        good = (batch.quality == Quality.GOOD) & np.isfinite(batch.values.astype(np.float64))
        if kind.startswith("rul_sensor:"):
            if good.any():
                state.latest[kind.split(":", 1)[1]] = float(batch.values[good][-1])
            return
        assert self.config.rul is not None
        for ts, cycle in zip(batch.ts[good], batch.values[good]):
            missing = [f"s{i}" for i in SENSORS if f"s{i}" not in state.latest]
            if missing:
                self._dropped.labels(part=self.name, reason="rul_sensor_missing").inc()
                self.log.warning("asset %s: cycle %s skipped: no reading yet of %s", asset, cycle, ", ".join(missing))
                continue
            state.history.append([state.latest[f"s{i}"] for i in SENSORS])
            state.cycles += 1
            await self._follow_rul_model()
            x = features_at(np.array(state.history), float(cycle), RAW_MEAN, RAW_STD, self._rul_windows)
            out = await self.context.inference.infer(self.config.rul.model, {"features": x[None]})
            rul = float(np.clip(np.asarray(next(iter(out.values()))).ravel()[0], 0, None))
            state.rul = rul
            await self.context.publish(Batch.of(f"pdm/{asset}/rul", float(ts), rul))
            change = state.alert.update(-rul, float(ts))
            if change is None:
                continue
            data = {"asset": asset, "rul_cycles": round(rul, 1), "cycle": float(cycle), "at": float(ts),
                    "evidence": {"model": self.config.rul.model, "history_cycles": len(state.history),
                                 "warning_below": self.config.rul.warning, "critical_below": self.config.rul.critical}}
            self._m_alerts.labels(solution=self.name, machine=asset, kind=f"rul_{change}").inc()
            topic = f"alerts/{self.name}/{asset}"
            if change == "clear":
                await self.context.emit(topic, "rul_clear", data, severity="info")
            else:
                self.log.warning("asset %s: predicted RUL %.0f cycles (%s)", asset, rul, state.alert.severity)
                await self.context.emit(topic, "rul_alert" if change == "raise" else "rul_escalate", data,
                                        severity=state.alert.severity)

    async def _follow_rul_model(self) -> None:
        """Use the feature windows of the RUL model served now (its manifest's provenance.windows)."""
        from edgeplane_pdm.rul import model_windows

        assert self.config.rul is not None
        manifest = await self.context.inference.manifest(self.config.rul.model)
        named = (manifest.provenance.model_extra or {}).get("windows")
        configured = self.config.rul.windows
        if named and configured and tuple(configured) != tuple(int(w) for w in named):
            raise SiteError([SiteProblem(
                f"solutions.{self.name}.rul.windows",
                f"{configured}, but model {manifest.name!r} version {manifest.version!r} was trained with windows "
                f"{list(named)}", fix="remove rul.windows: the served model's own windows are used")])
        windows = tuple(configured) if configured else model_windows(manifest.provenance.model_extra or {})
        if windows != self._rul_windows:
            self.log.info("RUL feature windows %s (model %s version %s)", list(windows), manifest.name, manifest.version)
            self._rul_windows = windows
        for state in self.rul_assets.values():
            if state.history.maxlen is None or state.history.maxlen < max(windows):
                state.history = collections.deque(state.history, maxlen=max(windows))

    async def _publish(self, machine: str, ts: float, feats: WindowFeatures, score: float | None, slope: float | None) -> None:
        state = self.machines[machine]
        values: dict[str, float] = {"rms": feats.rms, "kurtosis": feats.kurtosis, "crest": feats.crest}
        values.update({f"env_{k}_db": v for k, v in feats.envelope_db.items() if k != "1x"})
        if score is not None:
            values["anomaly_score"] = score
            values["health"] = state.health
        if slope is not None:
            values["temperature_slope"] = slope
        batches = [Batch.of(f"pdm/{machine}/{k}", ts, float(v)) for k, v in values.items()]
        await self.context.bus.publish_many(batches)

    async def _notify(self, machine: str, state: _MachineState, change: str, ts: float, feats: WindowFeatures,
                      z: np.ndarray, fault_call: dict[str, Any] | None, temp: float | None, slope: float | None) -> None:
        self._m_alerts.labels(solution=self.name, machine=machine, kind=change).inc()
        base = state.baseline
        assert base is not None
        top = np.argsort(-np.abs(z))[:3]
        evidence_features = [
            {"feature": FEATURE_NAMES[i], "z": round(float(z[i]), 1), "value": round(float(feats.vector()[i]), 3),
             "baseline": round(float(base.center[i]), 3)}
            for i in top
        ]
        fault, db = feats.strongest_fault()
        fault_index = FEATURE_NAMES.index(f"env_{fault}_db")
        evidence = {
            "features": evidence_features,
            "fault_frequency": {"name": fault.upper(), "hz": round(feats.frequencies[fault], 2), "envelope_db": round(db, 1),
                                "baseline_db": round(float(base.center[fault_index]), 1)},
            "classifier": fault_call,
            "temperature": None if temp is None else {"degC": round(temp, 2), "slope_degC_per_h": None if slope is None else round(slope, 2)},
            "time_domain": feats.summary(),
        }
        data = {"machine": machine, "score": round(state.score, 2), "health": round(state.health, 1), "at": ts, "evidence": evidence}
        topic = f"alerts/{self.name}/{machine}"
        if change == "clear":
            self.log.info("machine %s: alert cleared (score %.1f)", machine, state.score)
            await self.context.emit(topic, "clear", data, severity="info")
            return
        severity = state.alert.severity or "warning"
        self.log.warning("machine %s: %s %s: score %.1f, health %.0f, %s at %.1f Hz %+.1f dB over floor, classifier %s",
                         machine, severity, "alert" if change == "raise" else "escalation", state.score, state.health,
                         fault.upper(), feats.frequencies[fault], db, (fault_call or {}).get("class"))
        await self.context.emit(topic, "alert" if change == "raise" else "escalate", data, severity=severity)

