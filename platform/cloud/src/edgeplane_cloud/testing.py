"""Real engines for tests and benchmarks: a three-node NATS JetStream cluster with MQTT, and PostgreSQL.

Both come from Debian packages (``nats-server``, ``postgresql``) and listen on free loopback ports::

    from edgeplane_cloud.testing import NatsCluster, Postgres

    with NatsCluster(tmp_path / "nats") as nats, Postgres() as pg:
        nats.mqtt_urls[0]      # mqtt://127.0.0.1:<port>, what a site's sync.uplink.url names
        nats.nats_urls         # nats://127.0.0.1:<port> of every node, for ingest workers
        pg.dsn                 # postgresql://postgres@127.0.0.1:<port>/postgres
        nats.kill(1); nats.start_node(1)   # a node dies (SIGKILL) and comes back with its store
        pg.restart()                       # an immediate (crash) stop, then a start

PostgreSQL refuses to run as root: as root the cluster runs as the ``postgres`` user (which the
Debian package creates) in its own folder under the system temp dir (pytest's ``tmp_path`` is
mode 0700, out of that user's reach), with its socket in that folder too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeplane.errors import EdgeplaneError
from edgeplane.testing import free_port  # below the ephemeral range: a restarted NATS node gets its port back
from edgeplane_cloud.broker import INGEST_CONSUMER, UPLINK_STREAM, stream_leader

__all__ = ["EngineError", "NatsCluster", "Postgres", "free_port", "port_open"]

NATS_SERVER = shutil.which("nats-server") or "/usr/bin/nats-server"
PG_BIN = Path(os.environ.get("EDGEPLANE_PG_BIN", "/usr/lib/postgresql/15/bin"))


class EngineError(EdgeplaneError, RuntimeError):
    """An engine did not start; the message carries the tail of its log."""


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None, log: Path, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if proc is not None and proc.poll() is not None:
            raise EngineError(f"{what} exited with {proc.returncode}: {_tail(log)}")
        if time.monotonic() > deadline:
            raise EngineError(f"{what} did not open port {port} within {timeout} s: {_tail(log)}")
        time.sleep(0.05)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class NatsCluster:
    """``nodes`` nats-server processes in one cluster, JetStream and the MQTT listener on each."""

    def __init__(self, folder: Path, nodes: int = 3, *, name: str = "edgeplane", max_payload: int = 4 << 20):
        if not Path(NATS_SERVER).exists():
            raise EngineError("nats-server is not installed: apt-get install nats-server (scripts/setup.sh does)")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.max_payload = max_payload
        ports: list[int] = []
        while len(ports) < 3 * nodes:
            port = free_port()
            if port not in ports:
                ports.append(port)
        self.client_ports, self.cluster_ports, self.mqtt_ports = ports[:nodes], ports[nodes:2 * nodes], ports[2 * nodes:]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * nodes

    @property
    def nats_urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.client_ports]

    @property
    def mqtt_urls(self) -> list[str]:
        return [f"mqtt://127.0.0.1:{p}" for p in self.mqtt_ports]

    def config(self, i: int) -> str:
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for j, p in enumerate(self.cluster_ports) if j != i)
        store = self.folder / f"n{i}" / "jetstream"
        return (
            f"server_name: n{i}\n"
            f"listen: 127.0.0.1:{self.client_ports[i]}\n"
            f"max_payload: {self.max_payload}\n"
            "jetstream {\n"
            f"  store_dir: \"{store}\"\n"
            "  max_memory_store: 256MB\n"
            "  max_file_store: 8GB\n"
            "}\n"
            "cluster {\n"
            f"  name: {self.name}\n"
            f"  listen: 127.0.0.1:{self.cluster_ports[i]}\n"
            f"  routes: [{routes}]\n"
            "}\n"
            "mqtt {\n"
            f"  listen: 127.0.0.1:{self.mqtt_ports[i]}\n"
            f"  stream_replicas: {len(self.client_ports)}\n"
            # a site resends what was not acknowledged; the broker waits this long for a PUBACK
            "  ack_wait: \"30s\"\n"
            "  max_ack_pending: 10000\n"
            "}\n"
        )

    def start_node(self, i: int, timeout: float = 20.0) -> None:
        node = self.folder / f"n{i}"
        node.mkdir(parents=True, exist_ok=True)
        conf = node / "nats.conf"
        conf.write_text(self.config(i))
        log = node / "nats.log"
        with open(log, "ab") as out:
            self.procs[i] = subprocess.Popen([NATS_SERVER, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
        _wait_port(self.client_ports[i], self.procs[i], log, f"nats-server n{i}", timeout)
        _wait_port(self.mqtt_ports[i], self.procs[i], log, f"nats-server n{i} (MQTT)", timeout)

    def start(self) -> None:
        for i in range(len(self.procs)):
            self.start_node(i)
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until JetStream has a meta leader (the cluster can create streams)."""
        import asyncio

        import nats

        async def probe() -> None:
            deadline = time.monotonic() + timeout
            last: Exception | None = None
            while time.monotonic() < deadline:
                try:
                    nc = await nats.connect(servers=self.nats_urls, connect_timeout=1, max_reconnect_attempts=0)
                    try:
                        await nc.jetstream().account_info()
                        return
                    finally:
                        await nc.close()
                except Exception as e:  # noqa: BLE001 - not ready yet: no meta leader elected
                    last = e
                    await asyncio.sleep(0.2)
            raise EngineError(f"JetStream cluster not ready within {timeout} s: {last!r}\n{_tail(self.folder / 'n0' / 'nats.log')}")

        asyncio.run(probe())

    def wait_consumer(self, stream: str = UPLINK_STREAM, consumer: str = INGEST_CONSUMER, timeout: float = 30.0) -> None:
        """Until ``stream`` has a leader and its durable ``consumer`` exists (the ingest workers make it).
        Sites must not publish before: ``$MQTT_msgs`` keeps a message only while a consumer has
        interest in it, so what NATS's MQTT listener acknowledges before that is not kept."""
        import asyncio

        import nats

        async def probe() -> None:
            nc = await nats.connect(servers=self.nats_urls, connect_timeout=2)
            try:
                js = nc.jetstream(timeout=5)
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        stream_cluster = (await js.stream_info(stream)).cluster
                        if stream_cluster is not None and stream_cluster.leader:
                            consumer_cluster = (await js.consumer_info(stream, consumer)).cluster
                            if consumer_cluster is not None and consumer_cluster.leader:
                                return
                    except Exception:  # noqa: BLE001 - not created yet, or no leader elected yet
                        pass
                    if time.monotonic() > deadline:
                        raise EngineError(f"stream {stream} with consumer {consumer} not ready within {timeout} s")
                    await asyncio.sleep(0.1)
            finally:
                await nc.close()

        asyncio.run(probe())

    def stream_leader(self, stream: str = UPLINK_STREAM) -> int:
        """The index of the node that leads ``stream`` now, as the JetStream API reports it."""
        import asyncio

        import nats

        async def probe() -> str | None:
            nc = await nats.connect(servers=[u for i, u in enumerate(self.nats_urls) if self.procs[i] is not None],
                                    connect_timeout=2, max_reconnect_attempts=2)
            try:
                return await stream_leader(nc.jetstream(timeout=5), stream)
            finally:
                await nc.close()

        name = asyncio.run(probe())
        if name is None or not name.startswith("n"):
            raise EngineError(f"stream {stream} has no leader now")
        return int(name[1:])

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` (no goodbye to its peers)."""
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.procs[i] = None

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for i, proc in enumerate(self.procs):
            if proc is not None:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.procs[i] = None

    def __enter__(self) -> "NatsCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Postgres:
    """A private PostgreSQL 15 cluster: initdb, a loopback port, its own socket folder, trust auth."""

    def __init__(self, folder: Path | None = None, *, port: int | None = None, settings: dict[str, str] | None = None):
        if not (PG_BIN / "initdb").exists():
            raise EngineError(f"PostgreSQL is not installed ({PG_BIN}/initdb): apt-get install postgresql "
                              "(scripts/setup.sh does) or set EDGEPLANE_PG_BIN")
        self._own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="edgeplane-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.port = port or free_port()
        self.settings = {"shared_buffers": "128MB", "max_connections": "60", "max_wal_size": "1GB",
                         **(settings or {})}
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
            self.folder.chmod(0o755)
            shutil.chown(self.folder, "postgres", "postgres")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*self._as_user, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,
                              cwd=self.folder)

    def start(self, timeout: float = 30.0) -> None:
        if not (self.data / "PG_VERSION").exists():
            done = self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                             "--no-instructions", "-E", "UTF8")
            if done.returncode:
                raise EngineError(f"initdb failed: {done.stdout.decode(errors='replace')[-2000:]}")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 " + " ".join(
            f"-c {k}={v}" for k, v in self.settings.items())
        done = self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                         "-w", "-t", str(int(timeout)), "start")
        if done.returncode:
            raise EngineError(f"PostgreSQL did not start: {done.stdout.decode(errors='replace')[-1000:]}\n{_tail(self.log)}")
        _wait_port(self.port, None, self.log, "PostgreSQL", timeout)

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """A crash and a recovery: immediate stop (no checkpoint), then start (WAL replay)."""
        self.stop("immediate")
        self.start()

    def __enter__(self) -> "Postgres":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.stop("fast")
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
