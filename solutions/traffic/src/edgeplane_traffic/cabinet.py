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

SUMO runs over TraCI (its own process), so a ``sumo`` device with libsumo can share the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeplane_ntcip.simulator import ControllerAgent, DetectorReading, PhaseTiming, SignalControllerModel, UsmUser
from edgeplane_traffic.detectors import detector_layout, write_detectors
from edgeplane_traffic.layout import IntersectionLayout, layout_from_net, point_name
from edgeplane_traffic.nets import NetSpec, resolve
from edgeplane_traffic.sumo_runtime import sumo_binary, traci_module

__all__ = ["SumoCabinet"]


class SumoCabinet:
    """One SUMO signal behind an NTCIP controller simulator, served on a loopback UDP port."""

    def __init__(self, net: str | Path, *, route: str | Path | None = None, tls: str | None = None, seconds: float = 3600,
                 speed: float = 1.0, seed: int = 0, timing: PhaseTiming = PhaseTiming(), community: str = "public",
                 users: list[UsmUser] | None = None, start_time: float = 1_700_000_000.0, control_timeout: float = 10.0):
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
        self.agent = ControllerAgent(self.model, community=community, users=list(users or []))
        self.shown: list[tuple[float, str]] = []  # (controller time, SUMO state) at every change
        self.arrived = 0
        self.finished = asyncio.Event()
        self._conn: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._task: asyncio.Task[None] | None = None

    # ---- what a host needs
    def device_config(self, **overrides: Any) -> dict[str, Any]:
        """The ``ntcip`` device entry for this cabinet (host, port, signal, detector points)."""
        points: dict[str, Any] = {}
        for k, lane in enumerate(self.layout.lanes):
            name = point_name(lane)
            for loop, number in (("stop_bar", 2 * k + 1), ("advance", 2 * k + 2)):
                points[f"det.{name}.{loop}_occupancy"] = {"object": "detectorOccupancy", "index": number, "scale": 0.5, "unit": "%"}
                points[f"det.{name}.{loop}_count"] = {"object": "detectorVolume", "index": number}
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
        traci = traci_module(prefer_libsumo=False)
        self._tmp = tempfile.TemporaryDirectory(prefix="edgeplane-cabinet-")
        det_file = Path(self._tmp.name) / "loops.add.xml"
        write_detectors(det_file, [self.detectors])
        label = f"edgeplane-cabinet-{os.getpid()}-{id(self)}"
        # TraCI prints "Retrying in 1 seconds" while SUMO starts: keep stdout for the device entry
        with contextlib.redirect_stdout(sys.stderr):
            self._start_sumo(traci, det_file, label)
        self._conn = traci.getConnection(label)

    def _start_sumo(self, traci: Any, det_file: Path, label: str) -> None:
        traci.start([sumo_binary(), "-n", str(self.spec.net), "-r", str(self.spec.route), "-b", str(self.spec.begin),
                     "-a", str(det_file), "--seed", str(self.seed), "--no-step-log", "--no-warnings",
                     "--time-to-teleport", "-1"], label=label)

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
        self.arrived += conn.simulation.getArrivedNumber()
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
