"""A field cabinet in simulation: a SUMO intersection run by an NTCIP 1202 signal controller.

:class:`SumoCabinet` couples edgeplane-ntcip's controller simulator (phase sequencer with its own
timing, conflict monitor, SNMP agent) to one signal of a SUMO net, in real time or faster
(``speed`` simulated seconds per wall second). Each simulated second it shows the controller's
display on the SUMO signal, steps SUMO, and hands the controller what its loops counted. A host
sees only SNMP: :meth:`SumoCabinet.device_config` is the ``ntcip`` device entry (points named as
the ``traffic-signal`` solution expects), so the solution runs unchanged against it.

The mapping, one NTCIP phase per green of the layout (a one-ring, stage-based controller):

* green k of the phase table = NTCIP phase k + 1; the yellow between two greens is the controller's
  yellow change of the first, all-red its red clearance;
* lane k's stop-bar loop is vehicle detector 2k + 1, its advance loop 2k + 2 (positions:
  :mod:`edgeplane_traffic.detectors`); each detector calls the phases of the greens serving its lane.

The simulation's own measures, which no field controller has, are served read-only beside the NTCIP
objects under the simulator's private arc :data:`SIM_ARC` (``nemaPrivate.65535``: no vendor's),
so a reference deployment reports the run's delay through the same SNMP link
(:data:`SIM_OBJECTS`; :meth:`SumoCabinet.device_config` names them ``sim.time``, ``sim.avg_delay``...,
as the ``sumo`` connector does).

SUMO runs over TraCI (its own process) by default, so a ``sumo`` device with libsumo can share the
process; a cabinet in a process of its own (``edgeplane traffic cabinet``) takes libsumo.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

from edgeplane_ntcip.simulator import NEMA_PRIVATE, ControllerAgent, DetectorReading, PhaseTiming, SignalControllerModel, UsmUser
from edgeplane_traffic.connector import SUMO_MEASURE_ARGS, RunningDelay
from edgeplane_traffic.detectors import detector_layout, write_detectors
from edgeplane_traffic.layout import IntersectionLayout, layout_from_net, point_name
from edgeplane_traffic.nets import NetSpec, resolve
from edgeplane_traffic.sumo_runtime import binding_name, sumo_binary, traci_module

__all__ = ["SIM_ARC", "SIM_OBJECTS", "SIM_RUNNING", "SIM_FINISHED", "SumoCabinet", "serve_cabinet"]

SIM_ARC = f"{NEMA_PRIVATE}.65535.1"
# point name -> (scalar under SIM_ARC, scale to engineering units, unit, meaning)
SIM_OBJECTS: dict[str, tuple[int, float, str | None, str]] = {
    "sim.time": (1, 1.0, "s", "SUMO's simulation time"),
    "sim.begin": (2, 1.0, "s", "SUMO's begin time (sim.time at the start)"),
    "sim.avg_delay": (3, 0.01, "s", "running average delay per vehicle (timeLoss + departDelay), hundredths of s"),
    "sim.arrived": (4, 1.0, None, "vehicles arrived so far"),
    "sim.running": (5, 1.0, None, "vehicles in the network"),
    "sim.state": (6, 1.0, None, "1 running, 2 finished (SUMO has stopped; the controller runs on)"),
}
SIM_RUNNING, SIM_FINISHED = 1, 2


class SumoCabinet:
    """One SUMO signal behind an NTCIP controller simulator, served on a loopback UDP port."""

    def __init__(self, net: str | Path, *, route: str | Path | None = None, tls: str | None = None, seconds: float = 3600,
                 speed: float = 1.0, seed: int = 0, timing: PhaseTiming = PhaseTiming(), community: str = "public",
                 users: list[UsmUser] | None = None, start_time: float = 1_700_000_000.0, control_timeout: float = 10.0,
                 binding: str = "traci"):
        self.spec: NetSpec = resolve(net, route)
        self.layout: IntersectionLayout = layout_from_net(self.spec.net, tls)
        self.detectors = detector_layout(self.layout, "cab")
        self.seconds, self.speed, self.seed = seconds, speed, seed
        stages = [[k + 1] for k in range(self.layout.num_greens)]
        calls: dict[int, set[int]] = {}
        for k, lane in enumerate(self.layout.lanes):
            phases = {g + 1 for g in range(self.layout.num_greens)
                      if any(m.in_lane == lane for m in self.layout.green_movements(g))}
            calls[2 * k + 1] = calls[2 * k + 2] = phases
        self.model = SignalControllerModel(stages, timing, calls, start_time=start_time, control_timeout=control_timeout)
        if binding not in ("traci", "libsumo", "auto"):
            raise ValueError(f"binding {binding!r}: use traci (SUMO in a process of its own), libsumo (in this process) or auto")
        self.binding = binding
        self.delay = RunningDelay()
        self.sim_time = float(self.spec.begin)
        self.finished = asyncio.Event()  # set when SUMO's run ends; the controller runs on
        measures = {"sim.time": lambda: round(self.sim_time), "sim.begin": lambda: int(self.spec.begin),
                    "sim.avg_delay": lambda: round(self.delay.average * 100), "sim.arrived": lambda: self.delay.arrived,
                    "sim.running": lambda: self.delay.running,
                    "sim.state": lambda: SIM_FINISHED if self.finished.is_set() else SIM_RUNNING}
        self.agent = ControllerAgent(self.model, community=community, users=list(users or []),
                                     private={f"{SIM_ARC}.{SIM_OBJECTS[name][0]}.0": read for name, read in measures.items()})
        self.shown: list[tuple[float, str]] = []  # (controller time, SUMO state) at every change
        self._conn: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def arrived(self) -> int:
        return self.delay.arrived

    # ---- what a host needs
    def device_config(self, **overrides: Any) -> dict[str, Any]:
        """The ``ntcip`` device entry for this cabinet (host, port, signal, detector points)."""
        points: dict[str, Any] = {}
        for k, lane in enumerate(self.layout.lanes):
            name = point_name(lane)
            for loop, number in (("stop_bar", 2 * k + 1), ("advance", 2 * k + 2)):
                points[f"det.{name}.{loop}_occupancy"] = {"object": "detectorOccupancy", "index": number, "scale": 0.5, "unit": "%"}
                points[f"det.{name}.{loop}_count"] = {"object": "detectorVolume", "index": number}
        points["controller.flash"] = {"object": "unitFlashStatus", "description": "2 notFlash, 6 mmu (conflict monitor)"}
        for point, (arc, scale, unit, meaning) in SIM_OBJECTS.items():
            points[point] = {"oid": f"{SIM_ARC}.{arc}.0", **({"scale": scale} if scale != 1 else {}),
                             **({"unit": unit} if unit else {}), "description": meaning}
        entry = {"connector": "ntcip", "host": self.agent.host, "port": self.agent.port, "community": self.agent.community,
                 "time_source": "controller", "poll": 0.05,
                 "signal": {"name": point_name(self.layout.tls), "stages": [sorted(s) for s in self.model.stages]},
                 "points": points}
        entry.update(overrides)
        return entry

    def sumo_state(self) -> str:
        interval, stage, nxt = self.model.display()
        if interval == "G":
            return self.layout.green_states[stage]
        if interval == "Y":
            target = nxt if nxt is not None and nxt != stage else (stage + 1) % self.layout.num_greens
            return self.layout.phase_states[self.layout.yellow_phase(stage, target)]
        return self.layout.all_red_state

    # ---- lifecycle
    async def start(self) -> None:
        await self.agent.start()
        await asyncio.get_running_loop().run_in_executor(None, self._open)
        self._task = asyncio.create_task(self._run(), name="sumo-cabinet")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.agent.stop()
        await asyncio.get_running_loop().run_in_executor(None, self._close)

    def _open(self) -> None:
        module = traci_module(prefer_libsumo=self.binding != "traci")
        if self.binding == "libsumo" and binding_name(module) != "libsumo":
            raise RuntimeError("binding libsumo: libsumo is not installed here; use binding traci")
        self._tmp = tempfile.TemporaryDirectory(prefix="edgeplane-cabinet-")
        det_file = Path(self._tmp.name) / "loops.add.xml"
        write_detectors(det_file, [self.detectors])
        # the same options as the sumo connector's, so a twin under the net's program measures alike
        cmd = [sumo_binary(), "-n", str(self.spec.net), "-r", str(self.spec.route), "-b", str(self.spec.begin),
               "-a", str(det_file), "--seed", str(self.seed), "--no-step-log", "--no-warnings", *SUMO_MEASURE_ARGS]
        if binding_name(module) == "libsumo":
            module.start(cmd)
            self._conn = module
            return
        label = f"edgeplane-cabinet-{os.getpid()}-{id(self)}"
        # TraCI prints "Retrying in 1 seconds" while SUMO starts: keep stdout for the device entry
        with contextlib.redirect_stdout(sys.stderr):
            module.start(cmd, label=label)
        self._conn = module.getConnection(label)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _step(self) -> dict[int, DetectorReading]:
        conn = self._conn
        state = self.sumo_state()
        if not self.shown or self.shown[-1][1] != state:
            self.shown.append((self.model.now, state))
        conn.trafficlight.setRedYellowGreenState(self.layout.tls, state)
        conn.simulationStep()
        self.delay.update(conn)
        self.sim_time = float(conn.simulation.getTime())
        loop = conn.inductionloop
        readings = {}
        for k, (sb, adv) in enumerate(zip(self.detectors.stop_bar_ids, self.detectors.advance_ids)):
            for number, det in ((2 * k + 1, sb), (2 * k + 2, adv)):
                occupancy = loop.getLastStepOccupancy(det) / 100.0
                readings[number] = DetectorReading(int(loop.getLastStepVehicleNumber(det)),
                                                   max(occupancy, 0.0025) if occupancy > 0 else 0.0, occupancy > 0)
        return readings

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wall0 = time.monotonic()
        for k in range(int(self.seconds)):
            readings = await loop.run_in_executor(None, self._step)
            self.model.step(readings)  # on the loop: the agent reads the model between steps, never during one
            ahead = (k + 1) / self.speed - (time.monotonic() - wall0) if self.speed > 0 else 0.0
            await asyncio.sleep(max(0.0, ahead))
        self.finished.set()


async def serve_cabinet(cabinet: SumoCabinet, *, ready_port: int | None = None, linger: bool = False,
                        poll: float | None = None, entry: bool = True, echo: Callable[[str], None] = print) -> None:
    """Run ``cabinet`` as a process of its own (``edgeplane traffic cabinet``) until its run ends or SIGTERM.

    Prints the device entry once the agent answers (unless ``entry`` is false); ``ready_port`` then opens a TCP listener on the
    agent's address (SNMP is UDP, which a host's ``simulators: ready:`` probe cannot see);
    ``linger`` keeps the agent answering after the run until stopped, so a host that supervises it
    does not restart a finished run: the controller runs on at the same pace on an empty
    intersection (no detector calls), reporting ``sim.state`` finished every period."""
    import yaml

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await cabinet.start()
    ready: asyncio.Server | None = None
    try:
        agent = cabinet.agent
        echo(f"# NTCIP 1202 controller for signal {cabinet.layout.tls} of {cabinet.spec.name} on udp://{agent.host}:{agent.port}")
        if entry:
            device = cabinet.device_config(**({"poll": poll} if poll is not None else {}))
            echo(yaml.safe_dump({"devices": {"ctl": device}}, sort_keys=False).rstrip("\n"))
        if ready_port is not None:
            def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writer.close()

            ready = await asyncio.start_server(close, agent.host, ready_port)
        finished = asyncio.ensure_future(cabinet.finished.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([finished, stopped], return_when=asyncio.FIRST_COMPLETED)
        if cabinet.finished.is_set():
            echo(f"# finished: {cabinet.seconds:g} s simulated, {cabinet.arrived} vehicles arrived, average delay "
                 f"{cabinet.delay.average:.1f} s, conflict monitor faults: {len(cabinet.model.monitor.faults)}, "
                 f"SNMP SETs {agent.sets}")
            if linger:  # the controller runs on, on an empty intersection, reporting its periods
                while not stop.is_set():
                    cabinet.model.step({})
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0 / cabinet.speed)
        finished.cancel()
        stopped.cancel()
    finally:
        if ready is not None:
            ready.close()
            await ready.wait_closed()
        await cabinet.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
