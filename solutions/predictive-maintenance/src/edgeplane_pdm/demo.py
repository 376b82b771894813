"""``edgeplane pdm demo``: run the reference factory site, show health per machine and the alerts.

Starts a host on ``configs/factory.yaml`` (its ``simulators:`` start the OPC UA line, Mosquitto
and the cloud end), prints a health table every few seconds and every alert as it comes, and at
the end the bytes the sync layer sent to the cloud over the bytes of raw readings the solution read.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import click

from edgeplane import Event


def default_site() -> Path:
    """The factory reference site this package ships (also ``configs/factory.yaml`` in the repository)."""
    return Path(__file__).parent / "reference_sites" / "factory.yaml"


def _format_alert(event: Event) -> str:
    d = event.data
    ev = d.get("evidence", {})
    ff = ev.get("fault_frequency") or {}
    top = ", ".join(f"{f['feature']} z={f['z']}" for f in ev.get("features", []))
    cls = (ev.get("classifier") or {}).get("class")
    temp = ev.get("temperature") or {}
    return (f"[{event.kind.upper()} {event.severity}] machine {d.get('machine')}: score {d.get('score')}, health {d.get('health')}; "
            f"{ff.get('name')} {ff.get('hz')} Hz envelope {ff.get('envelope_db')} dB (baseline {ff.get('baseline_db')} dB); "
            f"{top}; classifier {cls}; temperature {temp.get('degC')} degC, {temp.get('slope_degC_per_h')} degC/h")


async def run_demo(site_path: Path | None, duration: float, *, echo: Callable[[str], None] = click.echo,
                   every: float = 10.0, until_alert: bool = False) -> dict[str, Any]:
    """Run the site for ``duration`` seconds (or, with ``until_alert``, until the first alert) and
    return the byte counts, the alerts and the final health per machine."""
    import yaml

    from edgeplane.config import load_site
    from edgeplane.errors import SiteError
    from edgeplane.host import Host
    from edgeplane.plugins import Plugins
    from edgeplane_pdm.solution import PdmSolution

    site_path = site_path or default_site()
    plugins = Plugins.load_for_site(yaml.safe_load(site_path.read_text()))
    try:
        site = load_site(site_path, plugins.registry)
    except SiteError as e:
        raise click.ClickException(str(e)) from None
    alerts: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgeplane-pdm-demo-") as store:
        # a fresh outbox: the ratio must count this run's bytes only, not a previous run's backlog
        site.core.store.path = store
        host = Host(site, plugins, http_port=-1)
        await host.start()
        try:
            names = [n for n, entry in site.core.solutions.items() if entry.get("type") == "pdm"]
            if not names:
                raise click.ClickException(f"{site_path} has no solution of type 'pdm'")
            solution = host.solution(names[0])
            assert isinstance(solution, PdmSolution)  # the type 'pdm' is this plugin's
            subscription = host.bus.subscribe("alerts/#", name="pdm-demo")
            began = time.monotonic()
            next_table = began
            while time.monotonic() - began < duration and not (until_alert and alerts):
                try:
                    message = await asyncio.wait_for(subscription.get(), 0.5)
                    if isinstance(message, Event):
                        echo(_format_alert(message))
                        alerts.append({"machine": message.data.get("machine"), "kind": message.kind,
                                       "severity": message.severity, "after_s": round(time.monotonic() - began, 1)})
                except asyncio.TimeoutError:
                    pass
                if time.monotonic() >= next_table:
                    next_table += every
                    _health_table(solution.status(), time.monotonic() - began, echo)
        finally:
            await _stop(host, echo)
        sent = host.sync.bytes_sent if host.sync is not None else 0
        read = solution.bytes_read
        ratio = sent / read if read else 0.0
        echo(f"bytes read (raw readings) {read:,}; bytes sent to the cloud {sent:,}; ratio {100 * ratio:.4f}% (target <= 2%)")
        return {"bytes_read": read, "bytes_sent": sent, "sent_over_read": ratio, "alerts": alerts,
                "health": {m: s["health"] for m, s in solution.status().items()}}


async def _stop(host: Any, echo: Callable[[str], None]) -> None:
    """Stop the host. The core stops the sync layer (flushing the outbox) before the simulators
    (the site's broker among them), bounds every step whatever the link does, and reaps every
    process it started, so no workaround is needed here."""
    await host.stop()


def _health_table(status: dict[str, dict[str, Any]], elapsed: float, echo: Callable[[str], None]) -> None:
    echo(f"t={elapsed:5.0f} s   machine  health  score  alert     classifier  windows")
    for m, s in status.items():
        health = f"{s['health']:6.1f}" if s["commissioned"] else "  (baseline)"
        echo(f"            {m:7}  {health}  {s['score']:5.1f}  {str(s['alert'] or '-'):8}  {str(s['fault_class']):10}  {s['windows']}")
