"""``edgeplane traffic demo``: a reference deployment, narrated.

Starts the host for ``configs/intersection.yaml`` in this process (SUMO, the controller, the
fixed-time twin, Mosquitto and the cloud end from its ``simulators:`` section), prints every
decision with queues and the running delay against fixed-time, injects a model fault when asked,
and ends with a summary checked against the audit log (no unsafe transition).

``--site configs/intersection-ntcip.yaml`` runs the same loop through NTCIP 1202: the host reaches
the intersection only over SNMP, through a controller simulator (``edgeplane traffic cabinet``, a
companion process) that runs SUMO in its own scaled real time with its own timing and conflict
monitor. Time comes from the points (the controller's globalTime and the simulation measures it
serves beside the NTCIP objects); the transitions judged are the ones the controller showed, read
period by period, and its conflict monitor's flash status.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path
from typing import Any

import click
import yaml

__all__ = ["default_site", "run_demo"]


def default_site() -> Path:
    """The intersection reference site this package ships (also ``configs/intersection.yaml`` in the repository)."""
    return Path(__file__).parent / "reference_sites" / "intersection.yaml"


def _latest(host: Any, topic: str) -> float:
    value = host.bus.latest(topic)
    return float(value[1]) if value is not None else math.nan


def _shown_problems(layout: Any, shown: list[tuple[float, int]], period: float, *, all_red: bool) -> tuple[list[str], int]:
    """Unsafe changes in the display read from a controller, and how many changes fell between two reads.

    ``shown`` is (controller time, phase-table index) per period read. A change whose previous read
    is more than one ``period`` older was not seen whole (a missed period may hide an all-red): it is
    counted as unobserved, not judged; the controller's own conflict monitor judges every change."""
    from edgeplane_traffic.shield import unsafe_transitions

    problems: list[str] = []
    unobserved = 0
    for (t0, a), (t1, b) in itertools.pairwise(shown):
        if a == b:
            continue
        if t1 - t0 > period + 1e-6:
            unobserved += 1
            continue
        problems += [f"t={t1:.0f}: {p}" for p in unsafe_transitions(layout, [a, b], all_red=all_red)]
    return problems, unobserved


async def run_demo(site_path: Path, *, seconds: float | None, speed: float | None, kill_at: float | None,
                   restore_at: float | None, fault: str, every: int, echo=click.echo) -> dict[str, Any]:
    """Run the site whose ``traffic-signal`` solution drives a ``sumo`` device (lockstep) or an ``ntcip``
    controller (a cabinet that keeps its own time); narrate, and return the summary."""
    from edgeplane import Batch, Host, Plugins
    from edgeplane.config import parse_site
    from edgeplane_traffic.layout import point_name
    from edgeplane_traffic.shield import unsafe_transitions

    raw = yaml.safe_load(site_path.read_text())
    solutions = [n for n, s in raw.get("solutions", {}).items() if s.get("type") == "traffic-signal"]
    if not solutions:
        raise click.ClickException(f"{site_path} has no traffic-signal solution to narrate")
    sol_name = solutions[0]
    device = raw["solutions"][sol_name]["device"]
    source = raw.get("devices", {}).get(device, {}).get("connector")
    if source not in ("sumo", "ntcip"):
        raise click.UsageError(f"{site_path}: solution {sol_name!r} drives device {device!r} with connector {source!r}; "
                               f"the demo narrates a sumo device or an ntcip controller")
    if source == "ntcip" and speed is not None:
        raise click.UsageError(f"{site_path}: the NTCIP cabinet keeps its own pace, as a field controller does: set "
                               f"--speed in its simulators: command (and the device's poll to a quarter of a period)")
    for name, dev in raw.get("devices", {}).items():
        if dev.get("connector") == "sumo":  # the controlled simulation and the fixed-time twin alike
            if seconds is not None:
                dev["seconds"] = seconds
            if speed is not None:
                dev["speed"] = speed
    plugins = Plugins.load_for_site(raw)
    site = parse_site(raw, plugins.registry, source=str(site_path), base_dir=site_path.parent.resolve())
    twin = next((n for n, d in raw["devices"].items() if d.get("connector") == "sumo" and d.get("control") == "native"), None)
    host = Host(site, plugins, http_port=-1)
    await host.start()
    summary: dict[str, Any] = {}
    try:
        solution = host.solution(sol_name)
        sim = host.device(device)
        layout = solution.layout
        key = point_name(layout.tls)
        period = 1.0  # a SUMO step; the controller's volume/occupancy period
        if source == "sumo":
            echo(f"site {site.id}: {device} via {sim.binding} (lockstep)")
        else:
            echo(f"site {site.id}: {device} is an NTCIP 1202 controller at udp://{sim.config.host}:{sim.config.port}; "
                 f"its cabinet keeps its own time, the host polls every {float(sim.config.poll or 1.0) * 1000:.0f} ms")
        version = f" version {solution.model_version}, every {solution.controller.decision_period:g} s" \
            if solution.model_version else ""
        echo(f"controller {solution.config.controller} (model {solution.model_name}{version}, fallback {solution.config.fallback}, "
             f"deadline {solution.config.deadline * 1000:.0f} ms), behind the shield")
        sub = host.bus.subscribe([f"{sol_name}/wish"], name="demo", maxsize=100_000)
        events = host.bus.subscribe([f"{sol_name}/fallback"], name="demo-events", maxsize=1000)
        display = host.bus.subscribe([f"{device}/{key}.phase", f"{device}/controller.flash"], name="demo-display",
                                     maxsize=1_000_000) if source == "ntcip" else None
        shown: list[tuple[float, int]] = []
        flashed = False

        def drain_display() -> None:
            nonlocal flashed
            while display is not None and (message := display.get_nowait()) is not None:
                if not isinstance(message, Batch):  # a lifecycle event, not readings
                    continue
                for ts, value in zip(message.ts, message.values, strict=True):
                    if message.topic.endswith(".flash"):
                        flashed = flashed or (value == value and int(value) != 2)  # 2: notFlash
                    elif value == value:
                        shown.append((float(ts), int(value)))

        def begin() -> float:
            return float(sim._begin) if source == "sumo" else _latest(host, f"{device}/sim.begin")

        def finished(t: float) -> bool:
            if source == "sumo":
                return sim.health.state.value in ("finished", "failed", "stopped")
            return _latest(host, f"{device}/sim.state") == 2 or (seconds is not None and t >= seconds)

        faulted = restored = False
        decisions = 0
        loop = asyncio.get_running_loop()
        last_decision = loop.time()
        t = 0.0
        while not finished(t):
            drain_display()
            try:
                message = await asyncio.wait_for(sub.get(), timeout=0.5)
            except asyncio.TimeoutError:
                if loop.time() - last_decision > 60:
                    raise click.ClickException(f"no decision for 60 s: device {device!r} is {sim.health.state.value} "
                                               f"({sim.health.message}); is its controller running?") from None
                continue
            last_decision = loop.time()
            t = _latest(host, f"{device}/sim.time") - begin()
            if kill_at is not None and not faulted and t >= kill_at:
                solution.inject_fault(fault)  # type: ignore[arg-type]
                faulted = True
                echo(f"t={t:6.0f}s  >>> model fault injected: {fault}")
            if restore_at is not None and faulted and not restored and t >= restore_at:
                solution.inject_fault(None)
                restored = True
                echo(f"t={t:6.0f}s  >>> model restored")
            while (event := events.get_nowait()) is not None:
                if hasattr(event, "kind"):
                    echo(f"t={t:6.0f}s  *** {event.kind}: {event.data}")
            decisions += 1
            if decisions % every:
                continue
            outcome = solution.last_outcome  # a cabinet keeps its own time: a later tick may be here already
            ctl_now = solution.controller
            by = (outcome.source if outcome is not None and outcome.decided else None) or \
                (ctl_now.fallback if ctl_now.in_fallback else ctl_now.kind)
            delay = _latest(host, f"{device}/sim.avg_delay")
            if source == "sumo":
                queue = sum(_latest(host, f"{device}/lane.{point_name(lane)}.halting") for lane in layout.lanes)
                seen = f"queue {queue:4.0f} veh"
            else:
                occupancy = [_latest(host, f"{device}/det.{point_name(lane)}.stop_bar_occupancy") for lane in layout.lanes]
                seen = f"stop-bar occupancy {sum(occupancy) / len(occupancy):5.1f} %"
            line = (f"t={t:6.0f}s  green {int(message.values[-1])} by {by:<12} "
                    f"{seen}  delay {delay:6.1f} s")
            if twin:
                fixed_delay = _latest(host, f"{twin}/sim.avg_delay")
                change = (delay / fixed_delay - 1) * 100 if fixed_delay else math.nan
                line += f"  fixed-time {fixed_delay:6.1f} s ({change:+.0f}%)"
            if solution.controller.in_fallback:
                line += f"  [FALLBACK: {solution.controller.fallback_reason}]"
            if outcome and outcome.corrections:
                line += f"  shield: {','.join(outcome.corrections)}"
            echo(line)
        drain_display()
        phases = list(solution.commanded)
        all_red = solution.config.all_red > 0
        ctl = solution.controller
        p50, p99 = solution.latency_percentiles_ms()
        decide50, decide99 = ctl.latency_percentiles_ms()
        if source == "sumo":
            problems = unsafe_transitions(layout, [0, *phases], all_red=all_red)
        else:
            # the controller times every clearance; what it showed is judged, read period by period
            problems, unobserved = _shown_problems(layout, shown, period, all_red=all_red)
        summary = {
            "source": source,
            "avg_delay_s": round(_latest(host, f"{device}/sim.avg_delay"), 2),
            "fixed_time_delay_s": round(_latest(host, f"{twin}/sim.avg_delay"), 2) if twin else None,
            "simulated_s": round(t, 1),
            "decisions": sum(ctl.decisions.values()),
            "shield_interventions": ctl.interventions,
            "shield_rules": dict(ctl.shield.interventions),
            "fallbacks": sum(ctl.fallbacks.values()),
            "recoveries": ctl.recoveries,
            "commands": len(phases),
            "commands_failed": solution.commands_failed,
            "unsafe_transitions": len(problems),
            "decide_p50_ms": round(decide50, 3),
            "decide_p99_ms": round(decide99, 3),
            "decision_p50_ms": round(p50, 3),
            "decision_p99_ms": round(p99, 3),
        }
        if source == "ntcip":
            greens = [p for _, p in shown if layout.phase_kind(p) == "green"]
            summary |= {
                "greens_shown": sum(1 for a, b in itertools.pairwise(greens) if a != b) + (1 if greens else 0),
                "phase_reads": len(shown),
                "changes_unobserved": unobserved,
                "conflict_monitor_flash": flashed or _latest(host, f"{device}/controller.flash") != 2,
            }
        echo("")
        for name, value in summary.items():
            echo(f"{name:<24}{value}")
        for problem in problems[:5]:
            echo(f"UNSAFE: {problem}")
    finally:
        await _stop(host)
    return summary


async def _stop(host: Any) -> None:
    """``host.stop()``, re-cancelling the sync tasks if their stop hangs.

    Python 3.11's ``asyncio.wait_for`` can swallow a cancellation that coincides with its timeout;
    the sync drain loop then waits for a link that the stopped broker will never bring back.
    """
    stopping = asyncio.ensure_future(host.stop())
    while True:
        done, _ = await asyncio.wait([stopping], timeout=5.0)
        if done:
            stopping.result()
            return
        sync = getattr(host, "sync", None)
        for task in [*getattr(sync, "_tasks", []), *getattr(sync, "_senders", [])]:
            if not task.done():
                task.cancel()
