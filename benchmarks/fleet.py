"""Benchmark of the scale-out cloud end: a fleet's uplink through a 3-node NATS JetStream cluster
into PostgreSQL, with faults, against raw COPY of the same rows; and a model rollout to every site.

    python benchmarks/fleet.py [--json] [--sites 1000] [--points 100] [--rounds 6] [--workers 2]

What runs (all on this machine, loopback): three ``nats-server`` nodes (JetStream, MQTT listener;
the workers read NATS's own ``$MQTT_msgs`` stream, 3 replicas), PostgreSQL 15, ``--workers`` ingest worker processes on one
durable pull consumer, and the fleet simulator (the real sync codec: each site sends, per round,
one envelope holding one record of ``--record-readings`` 1 Hz readings per point, over MQTT QoS 1).

* ``ingest_readings_per_s``: the simulated sites' readings stored / seconds from the first publish to
  their last commit, with the producer unpaced (as fast as the broker acknowledges, bounded in
  flight), faults included. The envelopes are encoded before the clock starts (sites compress on
  their own CPUs; ``--encode-live`` charges it to this machine as before).
* ``ratio_vs_raw_copy``: that rate over the rate of psycopg binary COPY of the very same rows
  (read back from the store, Python objects ready) into an indexed table, in the same run.
* ``lost`` = readings acknowledged by the broker - readings stored; ``duplicates`` = rows - distinct
  (site, stream, seq). ``faults_survived``: faults injected mid-run (the NATS node leading the
  uplink stream SIGKILLed then restarted, an ingest worker SIGKILLed, PostgreSQL crash-restarted)
  when lost and duplicates are 0.
* ``edge_hosts``: real edge hosts among the simulated sites, each its own process running the
  edge host's own sync layer (:class:`edgeplane.sync.SyncService`: bus, durable outbox, codec,
  MQTT transport; not the simulator's publisher), one per NATS node in turn, publishing
  ``--edge-rounds`` rounds one second apart so they live through the faults. Counted apart:
  ``edge_readings_acknowledged`` (the outboxes' own count of readings the broker acknowledged
  and they deleted), ``edge_readings_stored``, ``edge_lost``.
* ``rollout_seconds``: from starting a model rollout to every site serving the new version
  (5 % canary, then batches of 250; the twins' reports come back through the stream and ingest).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psycopg

from edgeplane.sync.signing import generate_keypair, key_id, load_public_key

from edgeplane_cloud.broker import UPLINK_STREAM, MqttPublisher
from edgeplane_cloud.fleet import Fleet
from edgeplane_cloud.simulator import FleetSimulator
from edgeplane_cloud.health import wait_ready
from edgeplane_cloud.testing import NatsCluster, Postgres, free_port


def q(dsn: str, sql: str, params: tuple | None = None) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def start_worker(nats: NatsCluster, dsn: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """An ingest worker process and its /readyz URL."""
    port = free_port()
    args = [sys.executable, "-m", "edgeplane_cloud.ingest", "--dsn", dsn, "--batch", "128", "--ack-wait", "5",
            "--max-ack-pending", "1024", "--health-port", str(port)]
    for url in nats.nats_urls:
        args += ["--nats", url]
    return subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT), f"http://127.0.0.1:{port}/readyz"


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes ``pids`` used so far (0 for one that is gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def postgres_pids(pg: Postgres) -> list[int]:
    """The postmaster and its children (backends, checkpointer, WAL writer ...)."""
    try:
        master = int((pg.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [master]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


class CpuMeter:
    """CPU seconds per part of the run (simulator, ingest workers, NATS nodes, PostgreSQL), sampled
    every 0.5 s so that processes that die or restart mid-run are counted up to their end."""

    def __init__(self, nats: NatsCluster, pg: Postgres, workers: list[subprocess.Popen[bytes]]):
        self.nats, self.pg, self.workers = nats, pg, workers
        self.seen: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        groups = {"simulator (this process)": [os.getpid()], "ingest workers": [w.pid for w in self.workers],
                  "nats-server x3": [p.pid for p in self.nats.procs if p is not None], "postgresql": postgres_pids(self.pg)}
        for group, pids in groups.items():
            for pid in pids:
                used = cpu_seconds([pid])
                if used:
                    self.seen[(group, pid)] = used

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def start(self) -> None:
        self._sample()
        self.base = dict(self.seen)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        out: dict[str, float] = {}
        for (group, pid), used in self.seen.items():
            out[group] = out.get(group, 0.0) + used - self.base.get((group, pid), 0.0)
        return {k: round(v, 1) for k, v in sorted(out.items())}


def raw_copy_rate(dsn: str) -> tuple[float, int]:
    """Readings/s of psycopg binary COPY of the stored rows into an indexed table (rows ready in memory)."""
    from edgeplane_cloud.pgstore import _COPY_COLUMNS, _COPY_TYPES
    from psycopg.types.json import Jsonb

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT {', '.join(_COPY_COLUMNS)} FROM records").fetchall()
        rows = [(*r[:11], None if r[11] is None else Jsonb(r[11])) for r in rows]
        conn.execute("DROP TABLE IF EXISTS raw_copy")
        conn.execute("CREATE TABLE raw_copy (LIKE records INCLUDING DEFAULTS, PRIMARY KEY (site, stream, seq, created))")
        conn.commit()
        readings = sum(r[6] for r in rows)
        started = time.perf_counter()
        with conn.transaction():
            with conn.cursor().copy(f"COPY raw_copy ({', '.join(_COPY_COLUMNS)}) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(_COPY_TYPES)
                for r in rows:
                    copy.write_row(r)
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE raw_copy")
    return readings / seconds, readings


def edge_host(site: str, url: str, points: int, record_readings: int, rounds: int, folder: Path) -> None:
    """One real edge host's sync layer (the child process of ``--edge-host``): publish ``rounds`` rounds of
    ``record_readings`` 1 Hz readings per point on its bus, one second apart, then wait until its outbox
    has had every reading acknowledged; print one JSON line with what it produced and had acknowledged."""
    import asyncio

    from edgeplane import Batch, Bus, WallClock
    from edgeplane.metrics import Metrics
    from edgeplane.sync import SyncConfig, SyncService

    async def go() -> dict[str, object]:
        bus = Bus()
        config = SyncConfig.model_validate({"uplink": {"url": url}, "policy": [{"topics": "dev/#", "mode": "raw"}],
                                            "durability": "process", "report_interval": 5})
        service = SyncService(config, site_id=site, bus=bus, clock=WallClock(), metrics=Metrics(), store_dir=folder)
        await service.start()
        while not service.transport.connected:
            await asyncio.sleep(0.05)
        # started and connected: the benchmark's clock starts when every host said so and answered "go"
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        start = float(int(time.time()) - 3600)
        produced = 0
        for r in range(rounds):
            ts = start + r * record_readings + np.arange(record_readings, dtype=float)
            for p in range(points):
                await bus.publish(Batch.of(f"dev/p{p:03d}", ts, np.round(20 + 5 * np.sin(ts / 60 + p), 3)))
                produced += record_readings
            await asyncio.sleep(1.0)
        deadline = time.monotonic() + 600
        while service.outbox.counters.get("sent_readings", 0) < produced and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        acknowledged = service.outbox.counters.get("sent_readings", 0)
        await service.stop()
        return {"site": site, "produced": produced, "acknowledged": acknowledged}

    print(json.dumps(asyncio.run(go())), flush=True)


def start_edge_hosts(nats: NatsCluster, n: int, points: int, record_readings: int, rounds: int,
                     folder: Path) -> list[subprocess.Popen[str]]:
    """``n`` real edge hosts, each its own process (one sync layer per process, as in the field), started and
    connected (their interpreter start-up is not the cloud end's work); :func:`go` lets them publish."""
    hosts = [subprocess.Popen([sys.executable, __file__, "--edge-host", f"edge-{i:03d}",
                               nats.mqtt_urls[i % len(nats.mqtt_urls)], str(points), str(record_readings), str(rounds),
                               str(folder / f"edge-{i:03d}")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=open(folder / f"edge-{i:03d}.log", "w"), text=True)
             for i in range(n)]
    for host in hosts:
        assert host.stdout is not None
        if host.stdout.readline().strip() != "ready":
            raise SystemExit(f"fleet benchmark FAILED: an edge host did not start; see {folder}/edge-*.log")
    return hosts


def go(hosts: list[subprocess.Popen[str]]) -> None:
    for host in hosts:
        assert host.stdin is not None
        host.stdin.write("go\n")
        host.stdin.close()


def main() -> None:
    if len(sys.argv) == 8 and sys.argv[1] == "--edge-host":
        site, url, points, record_readings, rounds, folder = sys.argv[2:]
        edge_host(site, url, int(points), int(record_readings), int(rounds), Path(folder))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--record-readings", type=int, default=10, help="1 Hz readings per record (a 10 s flush)")
    parser.add_argument("--rounds", type=int, default=6, help="envelopes per site")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=6)
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--deadline", type=float, default=600, help="seconds before a stuck run is reported as failed")
    parser.add_argument("--edge-hosts", type=int, default=5, help="real edge hosts (sync layer processes) among the sites")
    parser.add_argument("--edge-rounds", type=int, default=10, help="rounds each edge host publishes, one second apart")
    parser.add_argument("--encode-live", action="store_true",
                        help="encode envelopes while publishing, on the cloud end's CPUs (default: before the clock "
                             "starts, as sites encode on their own hardware)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="record each ingest worker with py-spy into this folder (collapsed stacks, no faults)")
    args = parser.parse_args()
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    folder = Path(tempfile.mkdtemp(prefix="edgeplane-fleet-bench-"))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {}
    with NatsCluster(folder / "nats") as nats, Postgres() as pg:
        started_workers = [start_worker(nats, pg.dsn, folder / f"worker{i}.log") for i in range(args.workers)]
        workers = [w for w, _ in started_workers]
        key, pub = folder / "cloud.key", folder / "cloud.pub"
        generate_keypair(key, pub)
        public = load_public_key(pub)
        sim = FleetSimulator(nats.mqtt_urls, sites=args.sites, points=args.points, record_readings=args.record_readings,
                             connections=args.connections, trusted_keys={key_id(public): public})
        faults: list[str] = []
        try:
            sim.wait_connected()
            for _, ready_url in started_workers:  # bound to the consumer: what sites publish from now on is kept
                wait_ready(ready_url, 60)
            sim.start_twins(nats.mqtt_urls[1])
            expected = args.sites * args.points * args.record_readings * args.rounds
            log(f"fleet: {args.sites} sites x {args.points} points, {args.rounds} rounds of {args.record_readings} "
                f"readings per record = {expected:,} readings; {args.workers} ingest workers")
            if not args.encode_live:
                log(f"envelopes encoded beforehand: {sim.prepare(args.rounds) / 1e6:.1f} MB")
            py_spy = str(Path(sys.executable).parent / "py-spy")
            spies = [subprocess.Popen([py_spy, "record", "--pid", str(w.pid), "--format", "raw", "--rate", "50",
                                       "--output", str(args.profile / f"worker{i}.txt")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for i, w in enumerate(workers)] if args.profile else []
            meter = CpuMeter(nats, pg, workers)
            meter.start()
            timeline: list[tuple[float, int, int]] = []  # (s, readings acknowledged by the broker, stored)

            def sample() -> None:
                while (not timeline or timeline[-1][2] < expected) and time.monotonic() - started < args.deadline:
                    time.sleep(1.0)
                    try:
                        stored_now = q(pg.dsn, "SELECT coalesce(sum(readings), 0) FROM sites")[0][0]
                    except psycopg.Error:  # PostgreSQL is restarting (a fault)
                        stored_now = timeline[-1][2] if timeline else 0
                    timeline.append((round(time.monotonic() - started, 1), sim.stats.readings_produced, stored_now))

            sampler = threading.Thread(target=sample, daemon=True)
            edges = start_edge_hosts(nats, args.edge_hosts, args.points, args.record_readings, args.edge_rounds, folder)
            started = time.monotonic()
            go(edges)
            sim.run(args.rounds)
            sampler.start()

            def inject() -> None:
                if args.no_faults or args.profile:
                    return
                # a share of the readings published, then the fault; the killed node comes back after 3 s
                # (the sites on it wait for it meanwhile, their messages in flight or queued)
                killed: list[int] = []

                def kill_leader() -> None:
                    killed.append(nats.stream_leader(UPLINK_STREAM))  # the worst node to lose
                    nats.kill(killed[0])
                    faults.append(f"nats node SIGKILL (n{killed[0]}, leader of {UPLINK_STREAM})")

                steps = [(0.2, kill_leader),
                         (0.0, lambda: (time.sleep(3), nats.start_node(killed[0]), faults.append("nats node restart"))),
                         (0.45, lambda: (os.kill(workers[0].pid, signal.SIGKILL), workers[0].wait(),
                                         faults.append("ingest worker SIGKILL"))),
                         (0.5, lambda: workers.__setitem__(0, start_worker(nats, pg.dsn, folder / "worker0b.log")[0])),
                         (0.6, lambda: (pg.restart(), faults.append("postgres crash restart")))]
                for share, action in steps:
                    while sim.stats.readings_published < share * expected:
                        time.sleep(0.05)
                    action()

            injector = threading.Thread(target=inject, daemon=True)
            injector.start()
            sim.join(args.deadline)
            if sim.producing:
                # the broker stopped taking messages (seen once: NATS 2.9.10's MQTT session streams
                # timing out after a node restart); report it rather than hang
                raise SystemExit(f"fleet benchmark FAILED: the producer was still blocked after {args.deadline} s "
                                 f"({sim.stats.readings_produced:,} of {expected:,} readings acknowledged, faults "
                                 f"{faults}); see the nats logs in {folder}")
            sim.wait_acked(args.deadline)
            injector.join()
            sim_produced = sim.stats.readings_produced

            def stored_by(pattern: str) -> int:
                try:  # the per-site counters move in the same transaction as the rows, and cost less to read
                    return int(q(pg.dsn, "SELECT coalesce(sum(readings), 0) FROM sites WHERE site LIKE %s",
                                 (pattern,))[0][0])
                except psycopg.Error:  # restarting
                    return -1

            deadline = time.monotonic() + 600
            while stored_by("sim-%") < sim_produced and time.monotonic() < deadline:
                time.sleep(0.1)
            # the rate is the simulated fleet's (the edge hosts publish at 1 Hz, paced, and are counted apart)
            ingest_seconds = time.monotonic() - started
            cpu = meter.stop()
            edge_reports = []
            for edge in edges:
                out = edge.stdout.read() if edge.stdout is not None else ""
                edge.wait(args.deadline)
                lines = out.strip().splitlines()
                if edge.returncode or not lines:
                    raise SystemExit(f"fleet benchmark FAILED: edge host exited {edge.returncode}; see {folder}/edge-*.log")
                edge_reports.append(json.loads(lines[-1]))
            edge_acked = sum(int(r["acknowledged"]) for r in edge_reports)
            edge_produced = sum(int(r["produced"]) for r in edge_reports)
            produced = sim_produced + edge_acked
            while stored_by("edge-%") < edge_acked and time.monotonic() < deadline:
                time.sleep(0.1)
            stored = q(pg.dsn, "SELECT coalesce(sum(count), 0) FROM records")[0][0]
            sim_stored = q(pg.dsn, "SELECT coalesce(sum(count), 0) FROM records WHERE site LIKE 'sim-%'")[0][0]
            log("timeline (s, acknowledged, stored): " + " ".join(f"{t}:{a // 1000}k/{st // 1000}k"
                                                                  for t, a, st in timeline))
            for spy in spies:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            rows, distinct = q(pg.dsn, "SELECT count(*), count(DISTINCT (site, stream, seq)) FROM records")[0]
            edge_stored = q(pg.dsn, "SELECT coalesce(sum(count), 0) FROM records WHERE site LIKE 'edge-%'")[0][0]
            dead = q(pg.dsn, "SELECT count(*) FROM dead_letters")[0][0]
            rate = sim_stored / ingest_seconds
            raw_rate, raw_readings = raw_copy_rate(pg.dsn)
            log(f"edge hosts: {len(edge_reports)} real sync layers, {edge_acked:,} of {edge_produced:,} readings "
                f"acknowledged, {edge_stored:,} stored")
            log(f"ingest: {sim_stored:,} simulated sites' readings in {ingest_seconds:.1f} s; raw COPY {raw_rate:,.0f}/s; "
                f"CPU seconds meanwhile: {cpu}")

            # rollout: one model version to every site
            fleet = Fleet(pg.dsn, signing_key=key)
            publisher = MqttPublisher(nats.mqtt_urls[0], "bench-fleet", inflight=500)
            fleet.publish = publisher.publish_many
            try:
                import onnx
                from onnx import TensorProto, helper

                x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
                y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
                graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
                model = folder / "identity.onnx"
                onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
                fleet.add_model(model, "bench", "1")
                for site in sim.sites:  # the real edge hosts have exited: the rollout goes to the simulated sites
                    fleet.set_labels(site, {"fleet": "simulated"})
                t0 = time.monotonic()
                rid = fleet.start_rollout("model", {"name": "bench", "version": "1"}, "fleet=simulated", canary=0.05,
                                          batch_size=250, gate_timeout=120)
                outcome = fleet.run_rollout(rid)
                while any(v != "1" for v in sim.serving("bench").values()) and time.monotonic() - t0 < 300:
                    time.sleep(0.05)
                rollout_seconds = time.monotonic() - t0
                serving = sum(v == "1" for v in sim.serving("bench").values())
            finally:
                publisher.close()
                fleet.close()
            log(f"rollout {outcome}: {serving}/{args.sites} sites serving the new version in {rollout_seconds:.1f} s")
            ok = stored == produced and rows == distinct and dead == 0 and edge_stored == edge_acked == edge_produced
            results = {
                "sites": args.sites, "points_per_site": args.points, "readings_per_record": args.record_readings,
                "readings_produced": produced, "readings_stored": stored,
                "ingest_readings_per_s": round(rate), "ingest_seconds": round(ingest_seconds, 2),
                "raw_copy_readings_per_s": round(raw_rate), "ratio_vs_raw_copy": round(rate / raw_rate, 3),
                "lost": produced - stored, "duplicates": rows - distinct, "dead_letters": dead,
                "edge_hosts": args.edge_hosts, "edge_readings_produced": edge_produced,
                "edge_readings_acknowledged": edge_acked, "edge_readings_stored": edge_stored,
                "edge_lost": edge_acked - edge_stored,
                "faults_injected": len(faults), "faults_survived": len(faults) if ok else 0, "faults": faults,
                "rollout_seconds": round(rollout_seconds, 2), "rollout_outcome": outcome,
                "rollout_sites_serving": serving, "broker_nodes": 3, "ingest_workers": args.workers,
                "cpu_seconds_during_ingest": cpu, "encoding": "live" if args.encode_live else "beforehand", "load_average_1min": round(os.getloadavg()[0], 1),
                "store": "postgresql-15 (daily partitions, binary COPY via staging, PK site/stream/seq/created)",
            }
        finally:
            sim.close()
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signal.SIGTERM)
            for w in workers:
                try:
                    w.wait(20)
                except subprocess.TimeoutExpired:
                    w.kill()
    print(f"{'figure':<32} {'value':>14}")
    for k in ("sites", "ingest_readings_per_s", "raw_copy_readings_per_s", "ratio_vs_raw_copy", "lost", "duplicates",
              "edge_hosts", "edge_readings_acknowledged", "edge_readings_stored", "edge_lost", "faults_survived",
              "rollout_seconds", "broker_nodes"):
        print(f"{k:<32} {results[k]!s:>14}")
    print(f"{'store':<32} {results['store']}")
    if args.json:
        print(json.dumps(results))
    if results["lost"] == 0 and results["duplicates"] == 0 and results["edge_lost"] == 0:
        shutil.rmtree(folder, ignore_errors=True)  # a failed run keeps its engines' logs to look at


if __name__ == "__main__":
    main()
