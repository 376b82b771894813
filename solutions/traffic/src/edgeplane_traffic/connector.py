"""The ``sumo`` connector: a SUMO simulation as a device.

One device entry = one simulation. Points (``<device>/<point>``), published every
``publish_every`` steps as one multi-point batch (a subscriber made with ``multipoint=True`` gets
the step's rows it matches in one batch, others one batch per point, signal points last); SUMO ids are made topic-safe with :func:`~edgeplane_traffic.layout.point_name`:

* ``lane.<lane>.vehicles``, ``.halting`` (queue, vehicles below 0.1 m/s), ``.vehicle_length``
  (mean, m), ``.occupancy`` (%), ``.speed`` (mean, m/s), ``.waiting`` (s, summed) for every lane
  a controlled signal touches (incoming and outgoing);
* ``<tls>.phase`` (phase-table index shown, -1 while the network's own program runs),
  ``<tls>.phase_time`` (s shown), ``<tls>.native_phase`` (SUMO's program phase); ``<tls>.phase``
  is writable: the phase-table index to show from the next step on (see
  :mod:`edgeplane_traffic.layout`), through the host's guarded command path;
* ``det.<lane>.stop_bar_occupancy``, ``.stop_bar_count``, ``.advance_occupancy``, ``.advance_count``
  for every incoming lane of a signal: the last step's readings of its stop-bar and advance loops
  (occupancy in %, vehicles that crossed), as a field controller's detectors report them
  (layout: :mod:`edgeplane_traffic.detectors`);
* ``sim.time`` (simulation seconds), ``sim.running``, ``sim.arrived`` (cumulative),
  ``sim.avg_delay`` (running average of timeLoss + departDelay over arrived and running vehicles).

Time: with ``clock: {mode: simulated}`` in the site, this connector moves the host's clock to
``start + (sim time - begin)`` after every step, so solutions sleep and stamp in simulated time;
with a wall clock it paces the simulation at ``speed`` simulated seconds per second.
``lockstep`` names topics (a solution's ``ack`` point) the connector waits for after each step,
so a controller's command lands at the next step however fast SUMO runs.

SUMO steps run in a worker thread (``run_blocking``): the event loop is never blocked by SUMO.
libsumo is used when installed (one simulation per process; later devices use TraCI).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edgeplane import Batch, Connector, Context, DeviceConfig, Duration, HealthState, PointLimits, PointSpec
from edgeplane.bus import PointTable
from edgeplane_traffic.detectors import DETECTOR_METRICS, DetectorLayout, detector_layout, write_detectors
from edgeplane_traffic.layout import IntersectionLayout, layout_from_net, point_name, tls_ids
from edgeplane_traffic.nets import NAMED, resolve
from edgeplane_traffic.sumo_runtime import binding_name, sumo_binary, traci_module

__all__ = ["LANE_METRICS", "SUMO_MEASURE_ARGS", "RunningDelay", "SumoConfig", "SumoConnector", "SumoPoint"]

LANE_METRICS = ("vehicles", "halting", "vehicle_length", "occupancy", "speed", "waiting")

# SUMO options every simulation whose delay is compared must share: waiting time remembered over
# the whole run, no vehicle dropped for waiting too long to enter
SUMO_MEASURE_ARGS = ["--time-to-teleport", "-1", "--waiting-time-memory", "1000", "--max-depart-delay", "-1"]

_libsumo_lock = threading.Lock()


class RunningDelay:
    """``sim.avg_delay``: the running average of timeLoss + departDelay over arrived and running vehicles.

    :meth:`update` after every SUMO step, with the connection (libsumo module or TraCI connection);
    an arrived vehicle keeps the delay it had at its last step."""

    def __init__(self) -> None:
        self._running: dict[str, float] = {}
        self._done_sum = 0.0
        self.arrived = 0

    def update(self, conn: Any) -> None:
        for vid in conn.simulation.getArrivedIDList():
            self._done_sum += self._running.pop(vid, 0.0)
            self.arrived += 1
        for vid in conn.vehicle.getIDList():
            self._running[vid] = conn.vehicle.getTimeLoss(vid) + max(0.0, conn.vehicle.getDepartDelay(vid))

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def average(self) -> float:
        total = self.arrived + len(self._running)
        return (self._done_sum + sum(self._running.values())) / total if total else 0.0

_libsumo_owner: str | None = None


class SumoPoint(PointSpec):
    """Points are addressed by their names (``lane.<lane>.<metric>``, ``<tls>.phase``)."""


class SumoConfig(DeviceConfig):
    net: str = Field(description="scenario name (single-intersection, cologne1, ingolstadt1) or a .net.xml path (relative to the site file)")
    route: str | None = Field(None, description="SUMO route file (default: the scenario's)")
    begin: int | None = Field(None, description="simulation start (s); default: the scenario's")
    seconds: float | None = Field(None, gt=0, description="simulated seconds to run, then the device finishes; default: run until no vehicles remain")
    seed: int = 0
    tls: list[str] | None = Field(None, description="signals to expose (default: all in the net)")
    control: Literal["external", "native"] = Field(
        "external", description="external: the phase table starts at green 0 and only commands change it; native: the net's own program runs until a phase is commanded"
    )
    binding: Literal["auto", "libsumo", "traci"] = "auto"
    speed: float = Field(0.0, ge=0, description="simulated seconds per wall second; 0: as fast as possible (simulated clock only)")
    publish_every: int = Field(1, ge=1, description="publish points every N steps")
    lockstep: list[str] = Field(default_factory=list, description="topics whose value must reach the step's sim time before the next step")
    lockstep_timeout: Duration = Field(2.0, description="wall time to wait for a lockstep topic before stepping anyway (counted)")
    tripinfo: str | None = Field(None, description="write SUMO's tripinfo here (relative to the site file)")
    sumo_args: list[str] = Field(default_factory=list, description="extra SUMO command-line arguments")


class SumoConnector(Connector[SumoConfig, SumoPoint]):
    def __init__(self, name: str, config: SumoConfig, context: Context):
        super().__init__(name, config, context)
        self._conn: Any = None
        self._binding = "none"
        self._layouts: dict[str, IntersectionLayout] = {}
        self._detectors: list[DetectorLayout] = []
        self._det_tmp: tempfile.TemporaryDirectory[str] | None = None
        self._lanes: list[str] = []
        self._phase: dict[str, int] = {}
        self._phase_since: dict[str, float] = {}
        self._pending: dict[str, int] = {}
        self._delay = RunningDelay()
        self._t0 = 0.0
        self._begin = 0
        self._end: float | None = None
        self._ack_sub: Any = None
        self._table: PointTable | None = None
        self.steps = 0
        m = context.metrics
        self._steps_metric = m.counter("edgeplane_sumo_steps", "SUMO simulation steps run", ["device"])
        self._lockstep_timeouts = m.counter(
            "edgeplane_sumo_lockstep_timeouts", "steps taken without the lockstep acknowledgement", ["device"]
        )

    # ---- lifecycle
    def _spec(self):  # type: ignore[no-untyped-def]
        site_dir = Path(self.context.site_dir)
        net: str | Path = self.config.net
        if str(net) not in NAMED:
            net = site_dir / net
        route = site_dir / self.config.route if self.config.route else None
        try:
            return resolve(net, route)
        except ValueError as e:
            raise ValueError(f"device {self.name!r}: {e}") from None

    def _choose_binding(self) -> ModuleType:
        """libsumo if wanted and free in this process, else TraCI. Imports happen here, on the
        loop thread during start: importing traci in a worker thread holds the GIL for a tenth of a
        second while other parts are already deciding, and two threads importing it at once break."""
        global _libsumo_owner
        want_libsumo = self.config.binding in ("auto", "libsumo")
        module = traci_module(prefer_libsumo=want_libsumo)
        if binding_name(module) == "libsumo":
            with _libsumo_lock:
                if _libsumo_owner is None:
                    _libsumo_owner = self.name
                elif self.config.binding == "libsumo":
                    raise RuntimeError(f"device {self.name!r}: libsumo already runs device {_libsumo_owner!r} in this "
                                       f"process (one simulation per process): set binding: traci or auto")
                else:
                    module = traci_module(prefer_libsumo=False)
        self._binding = binding_name(module)
        return module

    def _open(self, module: ModuleType) -> None:
        spec = self._spec()
        self._begin = int(self.config.begin if self.config.begin is not None else spec.begin)
        self._end = self._begin + self.config.seconds if self.config.seconds else None
        ids = self.config.tls or tls_ids(spec.net)
        self._layouts = {tls: layout_from_net(spec.net, tls) for tls in ids}
        # the loops every signal has in the field; named as evaluation names them (ep<k> by signal order)
        self._detectors = [detector_layout(layout, f"ep{k}") for k, layout in enumerate(self._layouts.values())]
        self._det_tmp = tempfile.TemporaryDirectory(prefix=f"edgeplane-{self.name}-")
        det_file = Path(self._det_tmp.name) / "detectors.add.xml"
        write_detectors(det_file, self._detectors)
        cmd = [sumo_binary(), "-n", str(spec.net), "-r", str(spec.route), "-b", str(self._begin), "-a", str(det_file),
               "--seed", str(self.config.seed), "--no-step-log", "--no-warnings", *SUMO_MEASURE_ARGS]
        if self.config.tripinfo:
            cmd += ["--tripinfo-output", str(Path(self.context.site_dir) / self.config.tripinfo),
                    "--tripinfo-output.write-unfinished"]
        cmd += list(self.config.sumo_args)
        if binding_name(module) == "libsumo":
            module.start(cmd)
            self._conn = module
        else:
            label = f"edgeplane-{self.name}-{os.getpid()}-{id(self)}"
            module.start(cmd, label=label)
            self._conn = module.getConnection(label)
        lanes: list[str] = []
        for layout in self._layouts.values():
            lanes += [*layout.lanes, *layout.out_lanes]
        self._lanes = list(dict.fromkeys(lanes))
        now = float(self._conn.simulation.getTime())
        for tls, layout in self._layouts.items():
            if self.config.control == "external":
                self._conn.trafficlight.setRedYellowGreenState(tls, layout.phase_states[0])
                self._phase[tls] = 0
            else:
                self._phase[tls] = -1
            self._phase_since[tls] = now

    def _close(self) -> None:
        global _libsumo_owner
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a dead simulation must not mask why it died
                self.log.debug("closing SUMO for %s failed", self.name, exc_info=True)
        if self._det_tmp is not None:
            self._det_tmp.cleanup()
            self._det_tmp = None
        if self._binding == "libsumo":
            with _libsumo_lock:
                if _libsumo_owner == self.name:
                    _libsumo_owner = None

    def _declare_points(self) -> None:
        """Add every point this simulation offers to the device's points, keeping site overrides."""
        points = self.config.points
        for lane in self._lanes:
            for metric in LANE_METRICS:
                points.setdefault(f"lane.{point_name(lane)}.{metric}", SumoPoint(type="float64"))
        for tls, layout in self._layouts.items():
            key = point_name(tls)
            phase = points.get(f"{key}.phase")
            limits = PointLimits(min=0, max=layout.all_red_phase)
            if phase is None:
                points[f"{key}.phase"] = SumoPoint(type="int32", access="rw", limits=limits,
                                                   description=f"phase-table index of signal {tls}")
            elif phase.limits is None:
                phase.limits = limits
            points.setdefault(f"{key}.phase_time", SumoPoint(type="float64", unit="s"))
            points.setdefault(f"{key}.native_phase", SumoPoint(type="int32"))
        det_lanes = [lane for d in self._detectors for lane in d.lanes]
        for lane in det_lanes:
            for metric in DETECTOR_METRICS:
                points.setdefault(f"det.{point_name(lane)}.{metric}", SumoPoint(type="float64", unit="%" if "occupancy" in metric else None))
        for name in ("sim.time", "sim.running", "sim.arrived", "sim.avg_delay"):
            points.setdefault(name, SumoPoint(type="float64"))
        offered = {f"lane.{point_name(lane)}.{metric}" for lane in self._lanes for metric in LANE_METRICS}
        offered |= {f"det.{point_name(lane)}.{metric}" for lane in det_lanes for metric in DETECTOR_METRICS}
        offered |= {f"{point_name(t)}.{p}" for t in self._layouts for p in ("phase", "phase_time", "native_phase")}
        offered |= {"sim.time", "sim.running", "sim.arrived", "sim.avg_delay"}
        unknown = sorted(set(points) - offered)
        if unknown:
            raise ValueError(f"device {self.name!r}: points {unknown} are not offered by the sumo connector; "
                             f"names are lane.<lane>.<{'|'.join(LANE_METRICS)}>, det.<lane>.<{'|'.join(DETECTOR_METRICS)}>, <tls>.phase|phase_time|native_phase, "
                             f"sim.time|running|arrived|avg_delay (ids with #+/.: replaced by _)")

    def _point_table(self) -> PointTable:
        """Every point a step publishes, in publishing order: lanes and detectors metric by metric,
        ``sim.*``, then per signal ``native_phase``, ``phase_time``, ``phase`` (the signal points last:
        a controller may treat ``<tls>.phase`` as "this step is complete")."""
        names = [f"lane.{point_name(lane)}.{metric}" for metric in LANE_METRICS for lane in self._lanes]
        det_lanes = [lane for d in self._detectors for lane in d.lanes]
        names += [f"det.{point_name(lane)}.{metric}" for metric in DETECTOR_METRICS for lane in det_lanes]
        names += ["sim.time", "sim.running", "sim.arrived", "sim.avg_delay"]
        for tls in self._layouts:
            key = point_name(tls)
            names += [f"{key}.native_phase", f"{key}.phase_time", f"{key}.phase"]
        points = self.config.points
        return PointTable([f"{self.name}/{n}" for n in names], [points[n].unit for n in names])

    async def start(self) -> None:
        self.health.set(HealthState.STARTING, "starting SUMO")
        try:
            module = self._choose_binding()
            await self.context.run_blocking(self._open, module)
            self._declare_points()
            self._table = self._point_table()
        except Exception:
            await self.context.run_blocking(self._close)
            raise
        self._t0 = self.context.clock.now()
        if self.config.lockstep:
            self._ack_sub = self.context.bus.subscribe(self.config.lockstep, name=f"{self.name}.lockstep", maxsize=100_000)
        self.health.set(HealthState.OK, f"SUMO via {self._binding}, signals {', '.join(self._layouts)}")
        self.log.info("device %s: SUMO %s started (%s), signals %s", self.name, self._spec().name, self._binding,
                      ", ".join(self._layouts))

    async def stop(self) -> None:
        if self._ack_sub is not None:
            self._ack_sub.close()
            self._ack_sub = None
        await self.context.run_blocking(self._close)

    @property
    def binding(self) -> str:
        return self._binding

    def layout(self, tls: str) -> IntersectionLayout:
        return self._layouts[tls]

    # ---- stepping (runs in a worker thread)
    def _step(self, pending: dict[str, int], read: bool) -> dict[str, Any] | None:
        conn = self._conn
        now = float(conn.simulation.getTime())
        for tls, phase in pending.items():
            if phase != self._phase.get(tls):
                conn.trafficlight.setRedYellowGreenState(tls, self._layouts[tls].phase_states[phase])
                self._phase[tls] = phase
                self._phase_since[tls] = now
        conn.simulationStep()
        now = float(conn.simulation.getTime())
        self._delay.update(conn)
        if not read:
            return {"time": now}
        lane = conn.lane
        values = {
            "vehicles": [lane.getLastStepVehicleNumber(x) for x in self._lanes],
            "halting": [lane.getLastStepHaltingNumber(x) for x in self._lanes],
            "vehicle_length": [lane.getLastStepLength(x) for x in self._lanes],
            "occupancy": [lane.getLastStepOccupancy(x) * 100.0 for x in self._lanes],
            "speed": [lane.getLastStepMeanSpeed(x) for x in self._lanes],
            "waiting": [lane.getWaitingTime(x) for x in self._lanes],
        }
        loop = conn.inductionloop
        detectors = {
            "stop_bar_occupancy": [loop.getLastStepOccupancy(i) for d in self._detectors for i in d.stop_bar_ids],
            "stop_bar_count": [loop.getLastStepVehicleNumber(i) for d in self._detectors for i in d.stop_bar_ids],
            "advance_occupancy": [loop.getLastStepOccupancy(i) for d in self._detectors for i in d.advance_ids],
            "advance_count": [loop.getLastStepVehicleNumber(i) for d in self._detectors for i in d.advance_ids],
        }
        signals = {tls: (self._phase[tls], now - self._phase_since[tls], int(conn.trafficlight.getPhase(tls)))
                   for tls in self._layouts}
        remaining = conn.simulation.getMinExpectedNumber()
        return {"time": now, "lanes": values, "detectors": detectors, "signals": signals, "running": self._delay.running,
                "arrived": self._delay.arrived, "avg_delay": self._delay.average, "remaining": remaining}

    async def run(self) -> None:
        clock = self.context.clock
        simulated = bool(getattr(clock, "simulated", False)) and hasattr(clock, "set_time")
        speed = self.config.speed if (self.config.speed or simulated) else 1.0
        wall0 = time.monotonic()
        sim0: float | None = None
        while True:
            pending, self._pending = self._pending, {}
            read = (self.steps + 1) % self.config.publish_every == 0
            state = await self.context.run_blocking(self._step, pending, read)
            self.steps += 1
            self._steps_metric.labels(device=self.name).inc()
            sim_time = state["time"]
            ts = self._t0 + (sim_time - self._begin)
            if sim0 is None:
                sim0 = sim_time
            if simulated and ts > clock.now():
                clock.set_time(ts)
            finished = (self._end is not None and sim_time >= self._end) or (
                self._end is None and read and state["remaining"] <= 0)
            if read:
                await self._publish_state(ts, state)
                if self._ack_sub is not None and not finished:
                    await self._wait_lockstep(sim_time)
            if speed > 0:
                ahead = (sim_time - sim0) / speed - (time.monotonic() - wall0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            else:
                await asyncio.sleep(0)
            if finished:
                self.health.set(HealthState.OK, f"simulation finished at {sim_time:.0f} s")
                return

    async def _publish_state(self, ts: float, state: dict[str, Any]) -> None:
        # one multi-point batch per step (rows in the point table's order): one routing pass on the
        # bus instead of one per point; single-point subscribers still get one batch per point
        table = self._table
        assert table is not None  # made in start()
        values: list[float] = []
        for metric_values in state["lanes"].values():
            values += metric_values
        for metric_values in state["detectors"].values():
            values += metric_values
        values += [state["time"], state["running"], state["arrived"], state["avg_delay"]]
        for phase, held, native in state["signals"].values():
            values += [native, held, phase]
        await self.context.bus.publish(Batch.rows(table, table.all_ids, float(ts), np.asarray(values, dtype=np.float64)))

    async def _wait_lockstep(self, sim_time: float) -> None:
        """Wait until every lockstep topic has published a value >= ``sim_time`` (or time out)."""
        # a topic already there (a simulation that runs ahead on its own, such as a field cabinet's
        # clock) releases the step at once: its queued older values must not pace this one
        waiting = {t for t in self.config.lockstep if not self._reached(t, sim_time)}
        if not waiting:
            return
        # one timer for the whole wait: wait_for per acknowledgement made a task and a timer for each of
        # them, loop work that lands while the other signals are still deciding
        try:
            async with asyncio.timeout(self.config.lockstep_timeout):
                while waiting:
                    message = await self._ack_sub.get()
                    if isinstance(message, Batch) and len(message) and float(message.values[-1]) + 1e-6 >= sim_time:
                        waiting.discard(message.topic)
        except TimeoutError:
            self._lockstep_timeouts.labels(device=self.name).inc()

    def _reached(self, topic: str, sim_time: float) -> bool:
        latest = self.context.bus.latest(topic)
        return latest is not None and float(latest[1]) + 1e-6 >= sim_time

    # ---- commands
    async def write(self, point: str, value: Any) -> Any:
        for tls, layout in self._layouts.items():
            if point == f"{point_name(tls)}.phase":
                phase = int(value)
                if float(value) != phase:
                    raise ValueError(f"{self.name}/{point}: a phase is a whole number, got {value!r}")
                layout.phase_kind(phase)  # raises for an index outside the table
                self._pending[tls] = phase
                return phase
        raise ValueError(f"{self.name}/{point} is not writable: only <tls>.phase accepts commands")
