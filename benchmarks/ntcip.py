"""NTCIP connector: poll cost and command round trip, against raw pysnmp in the same run.

The controller simulator (an SNMP agent over the phase sequencer) runs in its own process, as a
cabinet would, with ``--detectors`` loops. The host side polls a single-intersection-sized map
(volume and occupancy of every loop, the phase status groups, volumeOccupancySequence, globalTime):

1. raw: pysnmp's asyncio ``get_cmd`` for the same OIDs, back to back (no decoding, no bus);
2. connector: the ``ntcip`` device in a host, polling back to back (``poll: 0``), every value
   scaled, stamped and published (one publication per period, so most polls are "unchanged");
3. commands: a guarded write of ``phaseControlGroupHold`` (SET + GET read-back through the host's
   command path, audit included, polling at 1 s meanwhile) against a raw SET + GET.

4. with ``--cabinet S``: the whole loop for S simulated seconds at 8x (SUMO single-intersection behind
   the simulator, the shipped RL policy through the inference service): decision latency
   (observation in -> command confirmed by read-back; decisions that keep the green write nothing).

5. with ``--site S`` (instead of 1-4): the two intersection reference deployments for S simulated
   seconds each, in this process one after the other, same net (cologne1) and policy: decision latency
   through the host on the NTCIP path (``configs/intersection-ntcip.yaml``: the cabinet a companion
   process keeping its own time, SNMP polls, phase control) against the direct path
   (``configs/intersection.yaml``: the ``sumo`` connector in lockstep; its broker and cloud end left
   out). "decide" is observation in -> shielded command ready (the policy through the inference
   service included); "decision" adds the guarded write until the controller shows it. Beside them:
   how often the event loop woke and how long it then waited for a core (/proc schedstat), and the
   OS scheduling policy (``chrt -r 1 python benchmarks/ntcip.py --site 300`` shows the figures
   without that wait).

    python benchmarks/ntcip.py [--seconds 5] [--detectors 16] [--cabinet 300] [--json]
    python benchmarks/ntcip.py --site 600 [--cabinet-speed 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

AGENT = """
import asyncio, sys
from edgeplane_ntcip.simulator import ControllerAgent, SignalControllerModel
async def main():
    n = int(sys.argv[1])
    model = SignalControllerModel([[1], [2]], detector_phases={d: [1 + d % 2] for d in range(1, n + 1)})
    agent = ControllerAgent(model, community="bench")
    await agent.start()
    print(agent.port, flush=True)
    while True:
        await asyncio.sleep(1.0)
        model.step({})
asyncio.run(main())
"""


def oids(detectors: int) -> list[str]:
    from edgeplane_ntcip.mib import OBJECTS

    out = [OBJECTS[n].instance(d) for d in range(1, detectors + 1) for n in ("detectorVolume", "detectorOccupancy")]
    out += [OBJECTS[n].instance(1) for n in ("phaseStatusGroupGreens", "phaseStatusGroupYellows", "phaseStatusGroupPhaseNexts")]
    return out + [OBJECTS["volumeOccupancySequence"].instance(), OBJECTS["globalTime"].instance()]


async def raw_polls(port: int, names: list[str], seconds: float) -> tuple[int, float, float]:
    from pysnmp.hlapi.v3arch.asyncio import CommunityData, ContextData, ObjectIdentity, ObjectType, SnmpEngine, UdpTransportTarget, get_cmd

    engine = SnmpEngine()
    target = await UdpTransportTarget.create(("127.0.0.1", port), timeout=1, retries=0)
    binds = [ObjectType(ObjectIdentity(o)) for o in names]
    count, cpu0, wall0 = 0, time.process_time(), time.monotonic()
    while time.monotonic() - wall0 < seconds:
        error, status, _, _ = await get_cmd(engine, CommunityData("bench"), target, ContextData(), *binds, lookupMib=False)
        assert not error and not int(status), error
        count += 1
    engine.close_dispatcher()
    return count, time.monotonic() - wall0, time.process_time() - cpu0


async def raw_commands(port: int, rounds: int) -> list[float]:
    from edgeplane_ntcip.mib import OBJECTS
    from edgeplane_ntcip.session import SnmpCredentials, SnmpSession

    session = SnmpSession("raw", "127.0.0.1", port, SnmpCredentials(community="bench"), 1.0, 0)
    hold = OBJECTS["phaseControlGroupHold"].instance(1)
    out = []
    for k in range(rounds):
        began = time.perf_counter()
        await session.set({hold: k % 2})
        await session.get([hold])
        out.append(time.perf_counter() - began)
    session.close()
    return out


async def connector(port: int, detectors: int, seconds: float, rounds: int) -> tuple[int, float, float, list[float]]:
    import edgeplane_ntcip.plugin as plugin
    from edgeplane.testing import run_host

    points = {f"d{d}_{m}": {"object": obj, "index": d, **({"scale": 0.5} if m == "occ" else {})}
              for d in range(1, detectors + 1) for m, obj in (("count", "detectorVolume"), ("occ", "detectorOccupancy"))}
    points["hold"] = {"object": "phaseControlGroupHold", "index": 1, "access": "rw"}
    site = {"site": {"id": "bench"}, "devices": {"ctl": {
        "connector": "ntcip", "host": "127.0.0.1", "port": port, "community": "bench", "poll": 0, "max_varbinds": 60,
        "signal": {"name": "t", "stages": [[1], [2]]}, "points": points}}}
    async with run_host(site, plugins=[plugin]) as host:
        await asyncio.sleep(0.5)
        polls = lambda: sum(host.metrics.value("edgeplane_ntcip_polls_total", device="ctl", result=r)  # noqa: E731
                            for r in ("published", "unchanged"))
        before, cpu0, wall0 = polls(), time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        count, wall, cpu = polls() - before, time.monotonic() - wall0, time.process_time() - cpu0
    site["devices"]["ctl"]["poll"] = 1.0  # commands measured with the connector polling as in the field
    async with run_host(site, plugins=[plugin]) as host:
        await asyncio.sleep(0.5)
        latencies = []
        for k in range(rounds):
            began = time.perf_counter()
            result = await host.commands.execute("ctl", "hold", k % 2, source="bench", timeout=5)
            assert result.ok, result.message
            latencies.append(time.perf_counter() - began)
    return count, wall, cpu, latencies


async def cabinet_loop(seconds: int) -> dict:
    import tempfile

    import numpy as np

    import edgeplane_ntcip.plugin as ntcip_plugin
    import edgeplane_traffic.plugin as traffic_plugin
    from edgeplane import SimulatedClock
    from edgeplane.testing import run_host
    from edgeplane_traffic.cabinet import SumoCabinet

    cabinet = SumoCabinet("single-intersection", seconds=seconds, speed=8.0, seed=5)
    await cabinet.start()
    try:
        with tempfile.TemporaryDirectory() as models:
            site = {"site": {"id": "ntcip-bench"},
                    "inference": {"providers": ["cpu"], "models": models, "preload": ["traffic-single-intersection"]},
                    "devices": {"ctl": cabinet.device_config()},
                    "solutions": {"signal": {"type": "traffic-signal", "device": "ctl", "net": "single-intersection",
                                             "controller": "rl", "fallback": "fixed", "deadline": 1.0, "command_timeout": 3.0}}}
            async with run_host(site, plugins=[traffic_plugin, ntcip_plugin], clock=SimulatedClock(1_700_000_000.0)) as host:
                await cabinet.finished.wait()
                latencies = np.array(host.solution("signal").decision_latencies_s) * 1000
                audit = [a for a in await host.store.audit(10_000) if a["point"] == "t.phase"]
    finally:
        await cabinet.stop()
    return {"cabinet_decisions": len(latencies), "cabinet_decision_p50_ms": round(float(np.percentile(latencies, 50)), 3),
            "cabinet_decision_p99_ms": round(float(np.percentile(latencies, 99)), 3), "cabinet_commands": len(audit),
            "cabinet_commands_ok": sum(a["status"] == "ok" for a in audit), "cabinet_conflict_faults": len(cabinet.model.monitor.faults)}


async def reference_sites(seconds: int, folder: str, speed: float | None = None) -> dict[str, dict]:
    """Run both intersection reference sites for ``seconds`` simulated seconds; their demo summaries."""
    from pathlib import Path

    import yaml

    from edgeplane.testing import free_port
    from edgeplane_traffic.demo import default_site, run_demo

    shipped = default_site().parent
    out: dict[str, dict] = {}
    for path, name in ((shipped / "intersection-ntcip.yaml", "ntcip"), (shipped / "intersection.yaml", "direct")):
        text = path.read_text()
        for fixed in ("1161", "1162", "18833"):
            text = text.replace(f'"{fixed}"', f'"{free_port()}"').replace(f"port: {fixed}", f"port: {free_port()}")
        site = yaml.safe_load(text)
        if name == "ntcip":  # the device's port is the cabinet's
            command = site["simulators"]["cabinet"]["command"]
            site["devices"]["ctl"]["port"] = int(command[command.index("--port") + 1])
            ready = command[command.index("--ready-port") + 1]
            site["simulators"]["cabinet"]["ready"] = f"tcp://127.0.0.1:{ready}"
            if speed is not None:  # the cabinet's pace, and a poll at 40 % of its period
                command[command.index("--speed") + 1] = str(speed)
                site["devices"]["ctl"]["poll"] = 0.4 / speed
        else:  # the host's own path only: no broker, no cloud end
            site.pop("simulators", None)
            site.pop("sync", None)
        site["inference"]["models"] = f"{folder}/models-{name}"
        site["store"] = {"path": f"{folder}/store-{name}"}
        site["http"] = {"port": None}
        site_file = Path(folder) / f"{name}.yaml"
        site_file.write_text(yaml.safe_dump(site))
        before, began = loop_sched(), time.monotonic()
        out[name] = await run_demo(site_file, seconds=seconds, speed=None, kill_at=None, restore_at=None, fault="missing",
                                   every=1_000_000, echo=lambda *_: None)
        after, wall = loop_sched(), time.monotonic() - began
        if before and after:  # the event loop's wait for a core after waking, over the whole run (start-up included)
            wait_ns, wakeups = after[1] - before[1], after[2] - before[2]
            out[name] |= {"loop_cpu_share": round((after[0] - before[0]) / 1e9 / wall, 3),
                          "loop_wakeups_per_s": round(wakeups / wall, 1),
                          "loop_runq_wait_per_wakeup_us": round(wait_ns / 1e3 / max(wakeups, 1), 1)}
    return out


def loop_sched() -> tuple[int, int, int] | None:
    """This thread's (the event loop's) CPU ns, ns waiting for a core, and times scheduled (Linux), or None."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            cpu, wait, slices = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return None
    return cpu, wait, slices


def site_main(seconds: int, as_json: bool, speed: float | None) -> None:
    import tempfile

    from traffic import scheduling_policy  # benchmarks/traffic.py, beside this script

    with tempfile.TemporaryDirectory() as folder:
        runs = asyncio.run(reference_sites(seconds, folder, speed))
    rows = [("decisions", "decisions"), ("decide p50 ms", "decide_p50_ms"), ("decide p99 ms", "decide_p99_ms"),
            ("decision (confirmed) p50 ms", "decision_p50_ms"), ("decision (confirmed) p99 ms", "decision_p99_ms"),
            ("commands confirmed", "commands"), ("commands failed", "commands_failed"),
            ("shield interventions", "shield_interventions"), ("fallbacks", "fallbacks"),
            ("unsafe transitions", "unsafe_transitions"), ("avg delay s", "avg_delay_s"), ("fixed-time twin delay s", "fixed_time_delay_s")]
    pace = "the site's pace (10x)" if speed is None else f"{speed:g}x"
    print(f"reference sites, cologne1, {seconds} simulated s each; NTCIP cabinet at {pace}")
    print(f"{'figure':<30}{'NTCIP (SNMP)':>14}{'direct (sumo)':>15}")
    for label, key in rows:
        print(f"{label:<30}{runs['ntcip'][key]!s:>14}{runs['direct'][key]!s:>15}")
    ntcip = runs["ntcip"]
    for name in ("ntcip", "direct"):
        if "loop_runq_wait_per_wakeup_us" in runs[name]:
            print(f"{name}: event loop {runs[name]['loop_wakeups_per_s']} wake-ups/s, waiting "
                  f"{runs[name]['loop_runq_wait_per_wakeup_us']} us for a core after each (scheduling: {scheduling_policy()})")
    print(f"NTCIP: {ntcip['phase_reads']} periods read, {ntcip['changes_unobserved']} changes between two reads, "
          f"conflict monitor flash: {ntcip['conflict_monitor_flash']}")
    if as_json:
        result = {"site_seconds": seconds, "cabinet_speed": speed, "sched_policy": scheduling_policy()}
        for name, summary in runs.items():
            result |= {f"{name}_{key}": value for key, value in summary.items()
                       if isinstance(value, (int, float, bool)) and not isinstance(value, dict)}
        print(json.dumps(result))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--detectors", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--cabinet", type=int, default=0, help="also run the whole loop for this many simulated seconds")
    parser.add_argument("--site", type=int, default=0,
                        help="instead: both intersection reference sites for this many simulated seconds (decision latency)")
    parser.add_argument("--cabinet-speed", type=float, default=None,
                        help="with --site: the NTCIP cabinet's simulated seconds per second (default: the site's, 10)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.site:
        site_main(args.site, args.json, args.cabinet_speed)
        return
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(args.detectors)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(agent.stdout.readline())  # type: ignore[union-attr]
        names = oids(args.detectors)
        raw_n, raw_wall, raw_cpu = asyncio.run(raw_polls(port, names, args.seconds))
        raw_cmd = asyncio.run(raw_commands(port, args.rounds))
        con_n, con_wall, con_cpu, con_cmd = asyncio.run(connector(port, args.detectors, args.seconds, args.rounds))
    finally:
        agent.terminate()
        agent.wait()
    result = {
        "objects_per_poll": len(names),
        "raw_polls_per_s": round(raw_n / raw_wall, 1), "connector_polls_per_s": round(con_n / con_wall, 1),
        "raw_cpu_ms_per_poll": round(raw_cpu / raw_n * 1000, 3), "connector_cpu_ms_per_poll": round(con_cpu / max(1, con_n) * 1000, 3),
        "raw_set_get_p50_ms": round(pct(raw_cmd, 50), 3), "raw_set_get_p99_ms": round(pct(raw_cmd, 99), 3),
        "connector_command_p50_ms": round(pct(con_cmd, 50), 3), "connector_command_p99_ms": round(pct(con_cmd, 99), 3),
    }
    print(f"{'figure':<36}{'raw pysnmp':>12}{'connector':>12}")
    print(f"{'polls/s (' + str(len(names)) + ' objects each)':<36}{result['raw_polls_per_s']:>12}{result['connector_polls_per_s']:>12}")
    print(f"{'CPU ms per poll (host process)':<36}{result['raw_cpu_ms_per_poll']:>12}{result['connector_cpu_ms_per_poll']:>12}")
    print(f"{'command p50 ms (SET + read-back)':<36}{result['raw_set_get_p50_ms']:>12}{result['connector_command_p50_ms']:>12}")
    print(f"{'command p99 ms':<36}{result['raw_set_get_p99_ms']:>12}{result['connector_command_p99_ms']:>12}")
    if args.cabinet:
        loop = asyncio.run(cabinet_loop(args.cabinet))
        result.update(loop)
        print(f"whole loop, {args.cabinet} s at 8x: {loop['cabinet_decisions']} decisions, p50 {loop['cabinet_decision_p50_ms']} ms, "
              f"p99 {loop['cabinet_decision_p99_ms']} ms; {loop['cabinet_commands_ok']}/{loop['cabinet_commands']} commands "
              f"confirmed; conflict monitor faults {loop['cabinet_conflict_faults']}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
