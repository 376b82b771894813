"""A factory line on a real OPC UA server (asyncua): one object per machine with a vibration
waveform, a temperature and a shaft speed, the last machine degrading over minutes.

Nodes (namespace ``urn:edgeplane:pdm:line``, string NodeIds)::

    ns=2;s=Line.M<i>.Vibration    Double[window], acceleration in g at 12 kHz, one snapshot per period
    ns=2;s=Line.M<i>.Temperature  Double, bearing housing temperature in degC
    ns=2;s=Line.M<i>.Speed        Double, shaft speed in rpm
    ns=2;s=Line.M<i>.Degradation  Double, 0..1, the simulator's ground truth (for tests and the demo)

The vibration replays the shipped CWRU sample (:mod:`edgeplane_pdm.sample`): healthy machines play
the normal baseline from random offsets with their own gain; the degrading machine adds the outer
race fault signal with a weight that grows from 0 (``degrade_after`` seconds after start) to 1
(``degrade_over`` seconds later), first the 0.007 in defect, then the 0.021 in one, and its
temperature rises by up to 12 degC. ``python -m edgeplane_pdm.linesim --port 4850`` or
``edgeplane pdm simulate``; prints ``READY <port>`` when it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass

import numpy as np
from asyncua import Server, ua

from edgeplane_pdm.sample import load

NAMESPACE = "urn:edgeplane:pdm:line"
WINDOW = 4096


@dataclass
class Machine:
    name: str
    gain: float
    base_temp: float
    degrading: bool
    nodes: dict[str, ua.NodeId]


def degradation(elapsed: float, degrade_after: float, degrade_over: float) -> float:
    """0 before onset, rising to 1 over ``degrade_over`` seconds (quadratic: slow at first, as wear is)."""
    if elapsed <= degrade_after:
        return 0.0
    return float(min(1.0, (elapsed - degrade_after) / max(degrade_over, 1e-6)) ** 1.5)


class LineSignals:
    """Makes each machine's next waveform window and temperature."""

    def __init__(self, window: int = WINDOW, seed: int = 0):
        sample = load()
        self.fs = float(sample["fs"])
        self.rpm = float(sample["rpm"])
        self.normal = sample["normal"]
        self.fault_small = sample["outer_race_007"]
        self.fault_large = sample["outer_race_021"]
        self.window = window
        self.rng = np.random.default_rng(seed)

    def _slice(self, x: np.ndarray) -> np.ndarray:
        start = int(self.rng.integers(0, len(x) - self.window))
        return x[start:start + self.window]

    def vibration(self, machine: Machine, level: float) -> np.ndarray:
        x = machine.gain * self._slice(self.normal)
        if level > 0:
            # the small defect first; past mid-life the spall has grown into the large one
            fault = self._slice(self.fault_small) if level < 0.5 else self._slice(self.fault_large)
            x = (1 - 0.5 * level) * x + level * fault
        return x + 0.002 * self.rng.standard_normal(self.window)

    def temperature(self, machine: Machine, level: float, elapsed: float) -> float:
        return machine.base_temp + 0.3 * np.sin(elapsed / 60.0) + 12.0 * level + 0.05 * self.rng.standard_normal()


async def build(port: int, machines: int = 3, window: int = WINDOW) -> tuple[Server, list[Machine]]:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/edgeplane/line/")
    server.set_server_name("edgeplane factory line")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace(NAMESPACE)
    line = await server.nodes.objects.add_object(ua.NodeId("Line", idx), ua.QualifiedName("Line", idx))
    out = []
    for i in range(1, machines + 1):
        name = f"M{i}"
        obj = await line.add_object(ua.NodeId(f"Line.{name}", idx), ua.QualifiedName(name, idx))
        nodes = {}
        for var, value in (("Vibration", [0.0] * window), ("Temperature", 40.0), ("Speed", 1797.0), ("Degradation", 0.0)):
            node = await obj.add_variable(ua.NodeId(f"Line.{name}.{var}", idx), ua.QualifiedName(var, idx),
                                          ua.Variant(value, ua.VariantType.Double))
            if var == "Vibration":
                await node.write_value_rank(1)
            nodes[var] = node.nodeid
        out.append(Machine(name, gain=1.0 + 0.1 * (i - 1), base_temp=40.0 + 2 * i, degrading=(i == machines), nodes=nodes))
    return server, out


async def animate(server: Server, machines: list[Machine], *, period: float = 1.0, degrade_after: float = 60.0,
                  degrade_over: float = 240.0, window: int = WINDOW) -> None:
    signals = LineSignals(window)
    started = time.monotonic()

    def value(v: object, now: dt.datetime) -> ua.DataValue:
        return ua.DataValue(ua.Variant(v, ua.VariantType.Double), SourceTimestamp=now, ServerTimestamp=now)

    while True:
        elapsed = time.monotonic() - started
        now = dt.datetime.now(dt.timezone.utc)
        for m in machines:
            level = degradation(elapsed, degrade_after, degrade_over) if m.degrading else 0.0
            await server.write_attribute_value(m.nodes["Vibration"], value(signals.vibration(m, level).tolist(), now))
            await server.write_attribute_value(m.nodes["Temperature"], value(float(signals.temperature(m, level, elapsed)), now))
            await server.write_attribute_value(m.nodes["Degradation"], value(level, now))
        await asyncio.sleep(period)


async def serve(port: int, *, machines: int = 3, degrade_after: float = 60.0, degrade_over: float = 240.0,
                period: float = 1.0, window: int = WINDOW) -> None:
    server, line = await build(port, machines, window)
    async with server:
        print(f"READY {port}", flush=True)
        await animate(server, line, period=period, degrade_after=degrade_after, degrade_over=degrade_over, window=window)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4850)
    parser.add_argument("--machines", type=int, default=3)
    parser.add_argument("--degrade-after", type=float, default=60.0)
    parser.add_argument("--degrade-over", type=float, default=240.0)
    parser.add_argument("--period", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(serve(args.port, machines=args.machines, degrade_after=args.degrade_after,
                          degrade_over=args.degrade_over, period=args.period))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
