"""``edgeplane solar demo``: run the reference site and print live forecast, diagnosis and dispatch.

Faults are injected into the running simulators over Modbus (the weather station's injection
registers, see :mod:`edgeplane_solar.simulator`), so they work against the site's simulator
subprocess; curtailment goes through the host's guarded command path to ``plant/limit_*``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from edgeplane_solar.simulator import ACTIONS


def default_site() -> Path:
    """The solar reference site this package ships (also ``configs/solar-plant.yaml`` in the repository)."""
    return Path(__file__).parent / "reference_sites" / "solar-plant.yaml"


@dataclass
class Scheduled:
    at: float  # seconds after start
    kind: str  # "fault" or "limit"
    args: tuple[Any, ...]


def parse_fault(text: str) -> Scheduled:
    """``30s:trip:inv2`` / ``40s:lose-string:inv1:2`` / ``50s:clip:inv3:6000`` / ``60s:restore:inv2``."""
    parts = text.split(":")
    if len(parts) < 3 or parts[1] not in ACTIONS:
        raise ValueError(f"--inject {text!r}: write WHEN:ACTION:INVERTER[:ARG], ACTION one of {', '.join(ACTIONS)}")
    return Scheduled(_seconds(parts[0], "--inject"), "fault", (parts[1], parts[2], parts[3] if len(parts) > 3 else None))


def parse_limit(text: str) -> Scheduled:
    """``20s:50%`` / ``20s:9kW`` / ``20s:50%:2min`` (an expiry) / ``90s:off``."""
    parts = text.split(":")
    if len(parts) < 2 or not re.fullmatch(r"(\d+(\.\d+)?)(%|kW|kw)|off", parts[1]):
        raise ValueError(f"--curtail {text!r}: write WHEN:LIMIT[:EXPIRY], LIMIT like 50% or 9kW or off")
    expiry = _seconds(parts[2], "--curtail") if len(parts) > 2 else None
    return Scheduled(_seconds(parts[0], "--curtail"), "limit", (parts[1], expiry))


def _seconds(text: str, option: str) -> float:
    from edgeplane.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise ValueError(f"{option}: {e}") from None


def station_address(site: Any) -> tuple[str, int]:
    url = site.devices["met"].url if "met" in site.devices else "tcp://127.0.0.1:15020"
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 502


async def send_fault(host: str, port: int, inverter: int, action: str, argument: int = 0) -> None:
    """Write a fault into the plant simulator through its weather station's injection registers."""
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient(host, port=port, timeout=2)
    try:
        if not await client.connect():
            raise ConnectionError(f"no plant simulator answers on {host}:{port}; is the site running?")
        response = await client.write_registers(100, [inverter, ACTIONS[action], argument, 0], device_id=1)
        if response.isError():
            raise ValueError(f"the simulator refused {action} on inverter {inverter}: {response}")
    finally:
        client.close()


async def apply(host: Any, item: Scheduled, echo: Callable[[str], None]) -> None:
    if item.kind == "fault":
        action, inverter, argument = item.args
        number = int(re.sub(r"\D", "", inverter) or 0)
        if action == "clip" and argument:
            argument = int(float(argument) / 10)  # the register holds watts / 10
        address = station_address(host.site)
        await send_fault(address[0], address[1], number, action, int(argument or 0))
        echo(f">>> injected {action} on {inverter}")
        return
    limit, expiry = item.args
    if expiry:
        await host.commands.execute("plant", "limit_expiry", float(expiry), source="demo", reason="demo curtailment")
    if limit == "off":
        result = await host.commands.execute("plant", "limit_pct", 100.0, source="demo", reason="demo: release")
    elif limit.endswith("%"):
        result = await host.commands.execute("plant", "limit_pct", float(limit[:-1]), source="demo", reason="demo curtailment")
    else:
        result = await host.commands.execute("plant", "limit_kw", float(limit[:-2]), source="demo", reason="demo curtailment")
    echo(f">>> plant limit {limit}: {result.status.value} {result.message}")


def _kw(watts: Any) -> str:
    return "   -   " if watts is None or (isinstance(watts, float) and math.isnan(watts)) else f"{watts / 1000:6.1f}"


def render(host: Any, tz: str) -> str:
    """The live state of the plant, as text."""
    lines = []
    diag = _solution(host, "solar.diagnosis")
    forecast = _solution(host, "solar.forecast")
    dispatch = _solution(host, "solar.dispatch")
    plant_time = forecast.plant_now if forecast is not None else None
    when = dt.datetime.fromtimestamp(plant_time, tz=dt.timezone.utc).astimezone(_zone(tz)).strftime("%Y-%m-%d %H:%M") \
        if plant_time else "?"
    poa = dispatch.poa if dispatch is not None else None
    total = dispatch.state["plant_w"] if dispatch is not None else 0
    lines.append(f"plant time {when}  POA {poa or 0:5.0f} W/m2  plant output {_kw(total)} kW")
    if diag is not None:
        for dev, s in diag.state.items():
            if not s:
                continue
            pi = s.get("performance_index")
            active = ", ".join(s.get("active", [])) or "-"
            lines.append(f"  {dev:<5} {_kw(s.get('power_w'))} kW  expected {_kw(s.get('expected_w'))} kW  "
                         f"PI {pi if pi is not None else '  - '}  {s.get('state', '?'):<9} alerts: {active}")
    if forecast is not None:
        st = forecast.state
        if st.get("issued"):
            parts = []
            for label in forecast.config.report:
                h = st.get(label, {})
                if "p50_w" in h:
                    parts.append(f"{label} P50 {_kw(h['p50_w']).strip()} [{_kw(h['p10_w']).strip()}-{_kw(h['p90_w']).strip()}]"
                                 f" smart {_kw(h['smart_persistence_w']).strip()}")
                else:
                    parts.append(f"{label} smart persistence {_kw(h.get('smart_persistence_w')).strip()}")
            model = st.get("model") or "baselines only (model needs 5 steps of history)"
            lines.append(f"  forecast kW ({model}): " + "  ".join(parts))
        else:
            lines.append("  forecast: waiting for the first 15-minute step of plant time")
    if dispatch is not None:
        st = dispatch.state
        pf = f", power factor {st['power_factor']}" if st.get("power_factor") else ""
        alloc = "  ".join(f"{k} {v:.1f}%" for k, v in st["allocation_pct"].items())
        if st["limit_w"] is not None:
            lines.append(f"  dispatch: limit {st['limit_w'] / 1000:.1f} kW, expires in {st['expires_in_s']:.0f} s{pf}: {alloc}")
        elif st.get("effective_w") is not None:
            lines.append(f"  dispatch: ramp limit at {st['effective_w'] / 1000:.1f} kW{pf}: {alloc}")
        else:
            lines.append(f"  dispatch: no limit (inverters at the safe default, 100 %){pf}")
    return "\n".join(lines)


def _solution(host: Any, kind: str) -> Any:
    for name, config in host.site.solutions.items():
        if config.type == kind:
            try:
                return host.solution(name)
            except KeyError:
                return None
    return None


def _zone(tz: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(tz)


async def run_demo(site_path: Path, *, duration: float | None, every: float, schedule: list[Scheduled],
                   echo: Callable[[str], None]) -> dict[str, Any]:
    """Start the site, print its state every ``every`` s, apply ``schedule``; stop after ``duration``."""
    import yaml

    from edgeplane.config import load_site
    from edgeplane.host import Host
    from edgeplane.plugins import Plugins

    plugins = Plugins.load_for_site(yaml.safe_load(site_path.read_text()))
    site = load_site(site_path, plugins.registry)
    host = Host(site, plugins)
    loop = asyncio.get_running_loop()
    started = loop.time()
    echo(f"starting {site_path} (simulators, broker, cloud end, host) ...")
    await host.start()
    echo(f"running in {loop.time() - started:.1f} s; Ctrl-C stops it")
    diag = _solution(host, "solar.diagnosis")
    shown_alerts = 0
    pending = sorted(schedule, key=lambda s: s.at)
    t0 = loop.time()
    next_print = t0
    try:
        while duration is None or loop.time() - t0 < duration:
            now = loop.time()
            while pending and now - t0 >= pending[0].at:
                item = pending.pop(0)
                try:
                    await apply(host, item, echo)
                except (ConnectionError, ValueError, OSError) as e:
                    echo(f">>> could not apply {item.kind} {item.args}: {e}")
            if diag is not None and len(diag.alerts) > shown_alerts:
                for alert in diag.alerts[shown_alerts:]:
                    echo(f"!!! {'ALERT' if alert['active'] else 'clear'} {alert['device']} {alert['fault']}: "
                         f"{alert['message']}")
                shown_alerts = len(diag.alerts)
            if now >= next_print:
                echo(render(host, site.core.site.timezone))
                next_print = now + every
            await asyncio.sleep(0.2)
    finally:
        state = {"alerts": list(diag.alerts) if diag else [],
                 "dispatch": _solution(host, "solar.dispatch").state if _solution(host, "solar.dispatch") else None,
                 "forecast": _solution(host, "solar.forecast").state if _solution(host, "solar.forecast") else None}
        await host.stop()
    return state
