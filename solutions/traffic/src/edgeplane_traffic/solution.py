"""The ``traffic-signal`` solution: decides one intersection's phases on the host.

It reads detector and signal points from the bus (any connector that offers them: the ``sumo``
connector here, a real signal controller's connector in the field), runs an
:class:`~edgeplane_traffic.control.IntersectionController` (fixed-time, max-pressure or RL through
the shared inference service's realtime class, always behind the safety shield, falling back when
the policy is missing, late or wrong) and writes phase commands through the guarded command path,
so every command is in the audit log with its reason (controller, shield corrections, fallback).

Points it reads from ``device``: ``lane.<lane>.vehicles|halting|vehicle_length`` for the
intersection's lanes (max-pressure, and policies trained on lane observations),
``det.<lane>.stop_bar_occupancy|stop_bar_count|advance_occupancy|advance_count`` (policies trained on
detectors: what a field cabinet's loops give), ``<tls>.phase_time`` and ``<tls>.phase`` (the tick:
it comes last in a step).
Points it publishes under its own name: ``wish``, ``command``, ``fallback`` (0/1),
``interventions``, ``decision_ms``, ``ack`` (the sim time it finished, for the connector's lockstep).
Events: ``<name>/fallback`` (kind ``fallback`` or ``recovered``).
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edgeplane import Batch, Context, Duration, HealthState, Overflow, Solution, SolutionConfig
from edgeplane.bus import PointTable
from edgeplane.inference.registry import version_key
from edgeplane_traffic.control import IntersectionController, LaneReading
from edgeplane_traffic.detectors import DETECTOR_METRICS, DetectorWindow, detector_layout
from edgeplane_traffic.layout import IntersectionLayout, layout_from_net, point_name
from edgeplane_traffic.models import DEFAULT_DECISION_PERIOD, MODELS_DIR, model_name_for, policy_cadence, shipped_policy
from edgeplane_traffic.nets import NAMED, resolve
from edgeplane_traffic.shield import ShieldConfig

__all__ = ["TrafficSignalConfig", "TrafficSignalSolution"]

# per inference service: held while a solution looks at what a model serves and loads its version
_SERVING: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()

# what a point read from a multi-point batch updates (see TrafficSignalSolution._plan)
_LANE, _DETECTOR, _PHASE_TIME, _SIM_TIME, _PHASE = range(5)


class TrafficSignalConfig(SolutionConfig):
    device: str = Field(description="the device whose points describe the intersection (e.g. a sumo device)")
    net: str = Field(description="scenario name or .net.xml (relative to the site file): the intersection's layout")
    tls: str | None = Field(None, description="the signal id in the net (default: the first)")
    controller: Literal["fixed", "max-pressure", "rl"] = "rl"
    model: str | None = Field(None, description="policy name in the model registry (default: the signal's own "
                                                "traffic-<net>-<tls> where shipped, else traffic-<net>)")
    fallback: Literal["max-pressure", "fixed"] = "max-pressure"
    decision_period: Duration | None = Field(
        None, description="s between decisions; rl: the newest version of the model trained for this period runs "
                          "(default: the newest version, at its own period); others: default 5 s")
    deadline: Duration = Field(0.05, description="wall time the policy may take per decision; later = fallback")
    min_green: Duration = 5.0
    yellow: Duration = 3.0
    all_red: Duration = 2.0
    max_green: Duration = 50.0
    observation: Literal["auto", "lanes", "detectors"] = Field(
        "auto", description="what the policy observes; auto: what the shipped policy's metadata says (else lanes)")
    allowed_transitions: dict[int, list[int]] | None = Field(None, description="green -> greens it may change to (default: any)")
    command_timeout: Duration = 2.0


class TrafficSignalSolution(Solution[TrafficSignalConfig]):
    queue_size = 100_000
    overflow = Overflow.BLOCK  # every step matters to the shield's clock; the connector paces itself
    multipoint = True  # on_batch takes a connector's block reads whole

    def __init__(self, name: str, config: TrafficSignalConfig, context: Context):
        super().__init__(name, config, context)
        self.layout = self._layout()
        self.model_name = config.model or self._default_model()
        self._fault: str | None = None
        # the policy version this solution runs (None: not a registry model, or no metadata to choose by)
        self.model_version: str | None = None
        self._policy_meta: dict[str, Any] | None = None
        self._refused: str | None = None  # why the served version cannot be used (another solution's version)
        if config.controller == "rl":
            self.model_version, self._policy_meta = self._select_policy()
        period, window = self._cadence()
        self.controller = IntersectionController(
            self.layout, config.controller,
            shield=ShieldConfig(config.min_green, config.yellow, config.all_red, config.max_green,
                                {k: tuple(v) for k, v in config.allowed_transitions.items()} if config.allowed_transitions else None),
            decision_period=period, deadline=config.deadline, fallback=config.fallback,
            infer=self._infer if context.inference is not None else None,
            observation=self._observation_kind(),
        )
        self._detectors = DetectorWindow(detector_layout(self.layout), window)
        self._det_now = {metric: np.zeros(len(self.layout.lanes)) for metric in DETECTOR_METRICS}
        self._lanes = list(dict.fromkeys([*self.layout.lanes, *self.layout.out_lanes]))
        self._readings = {lane: LaneReading() for lane in self._lanes}
        self._topics: dict[str, tuple[str, str]] = {}
        self._det_topics: dict[str, tuple[int, str]] = {}
        for lane in self._lanes:
            for metric in ("vehicles", "halting", "vehicle_length"):
                self._topics[f"{config.device}/lane.{point_name(lane)}.{metric}"] = (lane, metric)
        for k, lane in enumerate(self.layout.lanes):
            for metric in DETECTOR_METRICS:
                self._det_topics[f"{config.device}/det.{point_name(lane)}.{metric}"] = (k, metric)
        self._key = point_name(self.layout.tls)
        self._phase_topic = f"{config.device}/{self._key}.phase"
        self._phase_time_topic = f"{config.device}/{self._key}.phase_time"
        self._sim_time_topic = f"{config.device}/sim.time"
        self._phase_time = 0.0
        self._sim_time = 0.0
        self._sim_time_seen = False
        # the read plan of the last point table seen: one per device, remade only when its connector
        # makes a new table (points added), so nothing piles up for tables no longer published
        self._plan_of: tuple[PointTable, dict[int, tuple[int, Any, Any]]] | None = None
        self.commands_failed = 0
        self.decision_latencies_s: list[float] = []  # observation in -> command confirmed, per decision
        self.commanded: list[int] = []  # phases commanded and confirmed, in order (also in the audit log)
        # (phase, when): the phase we commanded (or saw appear unbidden) and since when; a device's
        # phase_time may lag its phase (a real controller's two points arrive separately), so the
        # shield takes the smaller of the two: a stale count can only lengthen a phase
        self._held_since: tuple[int, float] | None = None
        # readings that come further apart than the policy decides (a connector that cannot poll that
        # often): counted in a row, said once with the fix
        self._last_tick: float | None = None
        self._slow_ticks = 0
        self._said_slow = False
        self.last_outcome: Any = None
        m = context.metrics
        self._m_decisions = m.counter("edgeplane_traffic_decisions", "signal decisions by controller", ["solution", "controller"])
        self._m_corrections = m.counter("edgeplane_traffic_shield_interventions", "wishes the shield corrected", ["solution", "rule"])
        self._m_fallbacks = m.counter("edgeplane_traffic_fallbacks", "switches to the fallback controller", ["solution", "reason"])
        self._m_latency = m.histogram("edgeplane_traffic_decision_seconds", "observation to command", ["solution"],
                                      buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5))
        # this solution's series, looked up once: a labels() call per decision is a locked dict lookup each time
        self._latency_of_this = self._m_latency.labels(solution=name)
        self._decisions_by_source: dict[str, Any] = {}
        self._m_failed = m.counter("edgeplane_traffic_command_failures", "phase commands not carried out", ["solution", "status"])

    # ---- setup
    def _net_name(self) -> str:
        net = self.config.net
        return net if net in NAMED else Path(net).name.replace(".net.xml", "")

    def _default_model(self) -> str:
        """The signal's own policy (``traffic-<net>-<tls>``, as ``train --per-signal`` ships it) where one
        is shipped, else the net's (shared by every signal, or the single signal's)."""
        net = self._net_name()
        own = f"{net}-{self.layout.tls}"
        return model_name_for(own) if shipped_policy(own) is not None else model_name_for(net)

    def _layout(self) -> IntersectionLayout:
        net: Any = self.config.net
        if net not in NAMED:
            net = Path(self.context.site_dir) / net
        try:
            spec = resolve(net)
        except ValueError as e:
            raise ValueError(f"solution {self.name!r}: {e}") from None
        return layout_from_net(spec.net, self.config.tls)

    def _cadence(self) -> tuple[float, int | None]:
        """Decision period and detector window: an RL policy's own, as trained (it has seen no other)."""
        configured = self.config.decision_period
        if self.config.controller != "rl":
            return (DEFAULT_DECISION_PERIOD if configured is None else float(configured)), None
        period, window = policy_cadence(self._policy_meta)
        return (period if configured is None else float(configured)), window

    def _observation_kind(self) -> Literal["lanes", "detectors"]:
        if self.config.observation != "auto":
            return self.config.observation
        meta = self._policy_meta if self.config.controller == "rl" else self._newest_metadata()
        return "detectors" if meta and meta.get("observation_kind") == "detectors" else "lanes"

    def _policy_versions(self) -> list[tuple[str, dict[str, Any]]]:
        """The versions of the model with their ``metadata.json``, oldest first: from the inference service's
        registry (what it will serve) when it knows the model, else from the plugin's shipped folder."""
        folders: list[tuple[str, Path]] = []
        if self.context.inference is not None:
            registry = self.context.inference.service.registry
            folders = [(v, registry.entry(self.model_name, v).folder) for v in registry.versions(self.model_name)]
        if not folders:
            home = MODELS_DIR / self.model_name
            found = [p for p in home.iterdir() if p.is_dir()] if home.is_dir() else []
            folders = sorted(((p.name, p) for p in found), key=lambda item: version_key(item[0]))
        return [(v, json.loads((f / "metadata.json").read_text())) for v, f in folders if (f / "metadata.json").is_file()]

    def _newest_metadata(self) -> dict[str, Any] | None:
        versions = self._policy_versions()
        return versions[-1][1] if versions else None

    def _pinned_version(self) -> str | None:
        inference = self.context.inference
        settings = inference.service.config.per_model.get(self.model_name) if inference is not None else None
        return settings.version if settings is not None else None

    def _select_policy(self) -> tuple[str | None, dict[str, Any] | None]:
        """The version to run: the newest (of those the site's inference section pins, if it pins one) whose
        decision period is the site's ``decision_period``; without one, the newest. A field site that cannot
        poll and command every second sets ``decision_period: 5s`` and gets the newest 5 s policy, logged."""
        versions = self._policy_versions()
        if not versions:
            return None, None
        pinned = self._pinned_version()
        candidates = [(v, m) for v, m in versions if v == pinned] if pinned is not None else versions
        if not candidates:
            return pinned, None  # the service refuses an unknown pinned version itself, naming the versions it has
        configured = self.config.decision_period
        newest_version, newest_meta = candidates[-1]
        newest_period = policy_cadence(newest_meta)[0]
        if configured is None:
            self.log.info("solution %s: model %s version %s, deciding every %g s as trained", self.name, self.model_name,
                          newest_version, newest_period)
            return newest_version, newest_meta
        fits = [(v, m) for v, m in candidates if abs(policy_cadence(m)[0] - float(configured)) < 1e-9]
        if not fits:
            trained = ", ".join(f"version {v} every {policy_cadence(m)[0]:g} s" for v, m in candidates)
            pin = (f" (inference.per_model.{self.model_name}.version pins {pinned}: remove the pin to choose among all "
                   f"versions)") if pinned is not None else ""
            raise ValueError(
                f"solution {self.name!r}: no version of model {self.model_name} decides every {float(configured):g} s "
                f"(decision_period); it has {trained}{pin}. Remove decision_period to run version {newest_version} every "
                f"{newest_period:g} s, or train one with 'edgeplane traffic train --net {self._net_name()} "
                f"--decision-period {float(configured):g}' and add it as a new version")
        version, meta = fits[-1]
        skipped = "" if version == newest_version else f"; the newest, version {newest_version}, decides every {newest_period:g} s"
        self.log.info("solution %s: model %s version %s, the newest that decides every %g s (decision_period)%s",
                      self.name, self.model_name, version, float(configured), skipped)
        return version, meta

    def subscriptions(self) -> list[str]:
        return [*self._topics, *self._det_topics, self._phase_time_topic, self._sim_time_topic, self._phase_topic]

    async def start(self) -> None:
        if self.config.controller != "rl":
            self.health.set(HealthState.OK, f"{self.config.controller} controller")
            return
        self._check_policy_layout()
        if self.context.inference is None:
            self.health.set(HealthState.DEGRADED, "no inference section in the site: running the fallback controller")
            return
        try:  # load and warm the model now, not inside the first decision's deadline
            await self._serve_selected_version()
            for _ in range(5):  # the first runs pay for thread pools and allocations
                await asyncio.wait_for(self._infer(np.zeros(self._obs_size(), dtype=np.float32)), timeout=30)
            self.health.set(HealthState.OK, f"rl controller, model {self.model_name}")
        except Exception as e:  # noqa: BLE001 - a missing model is a fallback, not a crash
            self.health.set(HealthState.DEGRADED, f"model {self.model_name} unusable ({type(e).__name__}: {e}): fallback {self.config.fallback}")
            self.log.warning("solution %s: model %s unusable (%s); deciding with %s until it answers",
                             self.name, self.model_name, e, self.config.fallback)

    async def _serve_selected_version(self) -> None:
        """Have the inference service serve the chosen version. One model name serves one version per host, so
        a version another part already runs is never swapped away under it: this solution's policy is refused."""
        inference = self.context.inference
        version = self.model_version
        if inference is None or version is None:
            return
        service = inference.service
        # signals start together: the look and the load are one step, or a second version would be swapped in
        async with _SERVING.setdefault(service, asyncio.Lock()):
            served = service.loaded().get(self.model_name)
            if served is None:
                served = await service.load(self.model_name, version)
        if served.version != version:
            self._refused = (f"model {self.model_name} version {served.version} is already served on this host (to another "
                             f"solution, or pinned), not version {version} that decides every "
                             f"{self.controller.decision_period:g} s: give this solution its own copy under another model: name")
            raise ValueError(self._refused)

    def _obs_size(self) -> int:
        detectors = self.controller.observation_kind == "detectors"
        return self.layout.observation_size_detectors if detectors else self.layout.observation_size

    def _check_policy_layout(self) -> None:
        """Refuse a shipped policy trained for another layout (its observation would mean something else)."""
        meta = self._policy_meta
        if meta:
            # a shared policy (train --shared) lists every signal layout it was trained to serve
            serves = {meta.get("layout_fingerprint"), *(meta.get("layout_fingerprints") or {}).values()}
            if self.layout.fingerprint() not in serves:
                raise ValueError(f"solution {self.name!r}: model {self.model_name} was trained on another layout than "
                                 f"signal {self.layout.tls!r} of {self.config.net}: set model: to a policy trained for this net")

    def latency_percentiles_ms(self) -> tuple[float, float]:
        """p50 and p99 of observation-to-confirmed-command time (ms), guarded write included."""
        if not self.decision_latencies_s:
            return float("nan"), float("nan")
        values = np.asarray(self.decision_latencies_s) * 1000
        return float(np.percentile(values, 50)), float(np.percentile(values, 99))

    def inject_fault(self, fault: Literal["missing", "slow", "error"] | None) -> None:
        """Make the policy unusable on purpose (demos, drills); None restores it."""
        self._fault = fault

    async def _infer(self, obs: np.ndarray) -> np.ndarray:
        if self._refused is not None:
            raise RuntimeError(self._refused)
        if self._fault == "missing":
            from edgeplane.inference import ModelNotFoundError

            raise ModelNotFoundError(f"model {self.model_name!r} not found (fault injected)")
        if self._fault == "error":
            raise RuntimeError("policy failed (fault injected)")
        if self._fault == "slow":
            await asyncio.sleep(self.config.deadline * 4)
        out = await self.context.inference.infer(self.model_name, {"obs": obs.reshape(1, -1).astype(np.float32)}, priority="realtime")
        return out["scores"][0]

    # ---- the tick
    async def on_batch(self, batch: Batch) -> None:
        # subscribed multi-point (class attribute multipoint): a connector's step or block read comes
        # whole; its rows are read in place, in row order, without a batch per point
        table = batch.table
        if table is None:
            await self._on_point(batch)
            return
        if self._plan_of is None or self._plan_of[0] is not table:
            self._plan_of = (table, self._plan(table))
        plan = self._plan_of[1]
        assert batch.point_ids is not None  # a multi-point batch always has its point-id column
        tick: tuple[float, float] | None = None
        for row, (pid, value) in enumerate(zip(batch.point_ids.tolist(), batch.values.tolist(), strict=True)):
            target = plan.get(pid)
            if target is None:
                continue
            if tick is not None:  # a row after the phase belongs to the next reading: decide on this one first
                await self._tick(*tick)
                tick = None
            kind, where, what = target
            if kind == _PHASE:
                tick = (float(batch.ts[row]), float(value))
            elif kind == _LANE:
                setattr(where, what, 0.0 if value != value else float(value))
            elif kind == _DETECTOR:
                self._det_now[what][where] = 0.0 if value != value else value
            elif kind == _PHASE_TIME:
                self._phase_time = float(value)
            else:
                self._sim_time = float(value)
                self._sim_time_seen = True
        if tick is not None:
            await self._tick(*tick)

    def _plan(self, table: PointTable) -> dict[int, tuple[int, Any, Any]]:
        """Point id -> (kind, where, what) for the points of ``table`` this solution reads."""
        plan: dict[int, tuple[int, Any, Any]] = {}
        for pid, topic in enumerate(table.topics):
            if (lane_target := self._topics.get(topic)) is not None:
                plan[pid] = (_LANE, self._readings[lane_target[0]], lane_target[1])
            elif (det := self._det_topics.get(topic)) is not None:
                plan[pid] = (_DETECTOR, det[0], det[1])
            elif topic == self._phase_time_topic:
                plan[pid] = (_PHASE_TIME, None, None)
            elif topic == self._sim_time_topic:
                plan[pid] = (_SIM_TIME, None, None)
            elif topic == self._phase_topic:
                plan[pid] = (_PHASE, None, None)
        return plan

    async def _on_point(self, batch: Batch) -> None:
        if not len(batch):
            return
        value = float(batch.values[-1])
        topic = batch.topic
        target = self._topics.get(topic)
        if target is not None:
            lane, metric = target
            setattr(self._readings[lane], metric, 0.0 if np.isnan(value) else value)
            return
        det = self._det_topics.get(topic)
        if det is not None:
            self._det_now[det[1]][det[0]] = 0.0 if np.isnan(value) else value
            return
        if topic == self._phase_time_topic:
            self._phase_time = value
            return
        if topic == self._sim_time_topic:
            self._sim_time = value
            self._sim_time_seen = True
            return
        if topic == self._phase_topic:
            await self._tick(float(batch.ts[-1]), value)

    async def _tick(self, ts: float, phase_value: float) -> None:
        phase = int(phase_value) if not np.isnan(phase_value) else -1
        if phase < 0:  # the signal runs its own program: nothing to decide
            await self._ack(ts)
            return
        started = time.perf_counter()
        self._check_reading_period(ts)
        if self._held_since is not None and self._held_since[0] != phase:
            self._held_since = (phase, ts)  # the signal changed without our command: count from now
        elapsed = self._phase_time
        if self._held_since is not None:
            # rounded: two absolute times (about 1.8e9 s) differ by whole steps only up to float error
            elapsed = min(elapsed, round(ts - self._held_since[1], 6))
        now = self._det_now
        self._detectors.add(now["stop_bar_occupancy"], now["stop_bar_count"], now["advance_occupancy"], now["advance_count"])
        # the window's sums only when a decision reads them (not through clearances, nor between decisions)
        snapshot = self._detectors.snapshot() if self.controller.decision_due(ts, phase) else None
        outcome = await self.controller.tick(ts, phase, elapsed, self._readings, snapshot)
        if outcome.decided:
            self._detectors.reset()
        self.last_outcome = outcome
        for rule in outcome.corrections:
            self._m_corrections.labels(solution=self.name, rule=rule).inc()
        if outcome.fallback_reason:
            self._m_fallbacks.labels(solution=self.name, reason=outcome.fallback_reason.split(" ")[0]).inc()
            self.health.set(HealthState.DEGRADED, f"fallback {self.config.fallback}: model {outcome.fallback_reason}")
            self.log.warning("solution %s: policy %s: %s decides until it recovers", self.name, outcome.fallback_reason,
                             self.config.fallback)
            await self.context.emit(f"{self.name}/fallback", "fallback",
                                    {"reason": outcome.fallback_reason, "controller": self.config.fallback}, severity="warning")
        if outcome.recovered:
            self.health.set(HealthState.OK, f"rl controller, model {self.model_name} (recovered)")
            self.log.info("solution %s: policy answers again; rl decides", self.name)
            await self.context.emit(f"{self.name}/fallback", "recovered", {"controller": "rl"}, severity="info")
        if outcome.command is not None and outcome.command != phase:
            result = await self.context.command(self.config.device, f"{self._key}.phase", outcome.command,
                                                timeout=self.config.command_timeout, reason=outcome.reason)
            if result.ok:
                self.commanded.append(int(outcome.command))
                self._held_since = (int(outcome.command), ts)
            else:
                self.commands_failed += 1
                self._m_failed.labels(solution=self.name, status=result.status.value).inc()
        stamp = np.array([ts])
        out = [Batch(f"{self.name}/command", stamp, np.array([float(outcome.command if outcome.command is not None else np.nan)]))]
        if outcome.decided:
            latency = time.perf_counter() - started
            self.decision_latencies_s.append(latency)
            decisions = self._decisions_by_source.get(outcome.source or "")
            if decisions is None:
                decisions = self._decisions_by_source[outcome.source or ""] = \
                    self._m_decisions.labels(solution=self.name, controller=outcome.source or "")
            decisions.inc()
            self._latency_of_this.observe(latency)
            out += [
                Batch(f"{self.name}/wish", stamp, np.array([float(outcome.wish if outcome.wish is not None else np.nan)])),
                Batch(f"{self.name}/fallback", stamp, np.array([1.0 if self.controller.in_fallback else 0.0])),
                Batch(f"{self.name}/interventions", stamp, np.array([float(self.controller.interventions)])),
                Batch(f"{self.name}/decision_ms", stamp, np.array([latency * 1000])),
            ]
        await self.context.bus.publish_many(out)
        await self._ack(ts)

    def _check_reading_period(self, ts: float) -> None:
        """Warn once when readings keep arriving further apart than the policy was trained to decide: it
        then decides late on counts it never saw; a 5 s version fits such a site (``decision_period: 5s``)."""
        last, self._last_tick = self._last_tick, ts
        period = self.controller.decision_period
        if last is None or self.config.controller != "rl" or self._said_slow:
            return
        self._slow_ticks = self._slow_ticks + 1 if ts - last > 1.5 * period + 1e-6 else 0
        if self._slow_ticks >= 5:
            self._said_slow = True
            self.log.warning("solution %s: readings of %s arrive every %.3g s, but model %s version %s decides every %g s: "
                             "set decision_period to the period this connector can poll at (e.g. 5s) to run a version "
                             "trained for it", self.name, self.config.device, ts - last, self.model_name,
                             self.model_version or "?", period)

    async def _ack(self, ts: float) -> None:
        # the sim time when a simulator reports one (its lockstep compares sim times), else the clock
        value = self._sim_time if self._sim_time_seen else ts
        await self.context.bus.publish(Batch(f"{self.name}/ack", np.array([ts]), np.array([value])))
