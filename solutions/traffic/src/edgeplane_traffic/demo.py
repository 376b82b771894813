"""``edgeplane traffic demo``: the reference deployment, narrated.

Starts the host for ``configs/intersection.yaml`` in this process (SUMO, the controller, the
fixed-time twin, Mosquitto and the cloud end from its ``simulators:`` section), prints every
decision with queues and the running delay against fixed-time, injects a model fault when asked,
and ends with a summary checked against the audit log (no unsafe transition).
"""

from __future__ import annotations

import asyncio
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


async def run_demo(site_path: Path, *, seconds: float | None, speed: float | None, kill_at: float | None,
                   restore_at: float | None, fault: str, every: int, echo=click.echo) -> dict[str, Any]:
    from edgeplane import Host, Plugins
    from edgeplane.config import parse_site
    from edgeplane_traffic.layout import point_name
    from edgeplane_traffic.shield import unsafe_transitions

    raw = yaml.safe_load(site_path.read_text())
    for name, device in raw.get("devices", {}).items():
        if device.get("connector") == "sumo":
            if seconds is not None:
                device["seconds"] = seconds
            if speed is not None:
                device["speed"] = speed
    plugins = Plugins.load_for_site(raw)
    site = parse_site(raw, plugins.registry, source=str(site_path), base_dir=site_path.parent.resolve())
    solutions = [n for n, s in raw.get("solutions", {}).items() if s.get("type") == "traffic-signal"]
    if not solutions:
        raise click.ClickException(f"{site_path} has no traffic-signal solution to narrate")
    sol_name = solutions[0]
    device = raw["solutions"][sol_name]["device"]
    twin = next((n for n, d in raw["devices"].items() if d.get("connector") == "sumo" and d.get("control") == "native"), None)
    host = Host(site, plugins, http_port=-1)
    await host.start()
    summary: dict[str, Any] = {}
    try:
        solution = host.solution(sol_name)
        sim = host.device(device)
        layout = solution.layout
        echo(f"site {site.id}: {device} via {sim.binding}, controller {solution.config.controller} "
             f"(model {solution.model_name}, fallback {solution.config.fallback}, deadline {solution.config.deadline * 1000:.0f} ms)")
        sub = host.bus.subscribe([f"{sol_name}/wish"], name="demo", maxsize=100_000)
        events = host.bus.subscribe([f"{sol_name}/fallback"], name="demo-events", maxsize=1000)
        begin = sim._begin
        faulted = restored = False
        decisions = 0
        while sim.health.state.value not in ("finished", "failed", "stopped"):
            try:
                message = await asyncio.wait_for(sub.get(), timeout=0.5)
            except asyncio.TimeoutError:
                continue
            t = _latest(host, f"{device}/sim.time") - begin
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
            outcome = solution.last_outcome
            queue = sum(_latest(host, f"{device}/lane.{point_name(lane)}.halting") for lane in layout.lanes)
            delay = _latest(host, f"{device}/sim.avg_delay")
            line = (f"t={t:6.0f}s  green {int(message.values[-1])} by {outcome.source if outcome else '?':<12} "
                    f"queue {queue:4.0f} veh  delay {delay:6.1f} s")
            if twin:
                fixed_delay = _latest(host, f"{twin}/sim.avg_delay")
                change = (delay / fixed_delay - 1) * 100 if fixed_delay else math.nan
                line += f"  fixed-time {fixed_delay:6.1f} s ({change:+.0f}%)"
            if solution.controller.in_fallback:
                line += f"  [FALLBACK: {solution.controller.fallback_reason}]"
            if outcome and outcome.corrections:
                line += f"  shield: {','.join(outcome.corrections)}"
            echo(line)
        phases = list(solution.commanded)
        problems = unsafe_transitions(layout, [0, *phases], all_red=solution.config.all_red > 0)
        ctl = solution.controller
        p50, p99 = solution.latency_percentiles_ms()
        summary = {
            "avg_delay_s": round(_latest(host, f"{device}/sim.avg_delay"), 2),
            "fixed_time_delay_s": round(_latest(host, f"{twin}/sim.avg_delay"), 2) if twin else None,
            "shield_interventions": ctl.interventions,
            "fallbacks": sum(ctl.fallbacks.values()),
            "recoveries": ctl.recoveries,
            "commands": len(phases),
            "unsafe_transitions": len(problems),
            "decision_p50_ms": round(p50, 3),
            "decision_p99_ms": round(p99, 3),
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
