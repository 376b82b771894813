"""edgeplane against ThingsBoard IoT Gateway on the same job: Modbus points up to an MQTT broker.

ThingsBoard IoT Gateway (PyPI ``thingsboard-gateway``) is the closest open-source Python IoT
gateway: a Modbus connector that polls devices and an MQTT uplink to a broker. Both gateways
run in the same run, one after the other (never at once, so that neither takes CPU from the
other on a small machine), against the same pymodbus simulator (its own process, the repo's
``edgeplane_modbus.testing.PymodbusServer``) and the same Mosquitto (``edgeplane_mqtt.testing``):

* 200 holding-register points in 4 blocks of 50 (per block: 20 uint16, 10 int16, 10 float32,
  10 uint32; 70 registers a block, blocks 250 registers apart), big-endian bytes and words;
* scenario ``1s``: polled every second; scenario ``max``: as fast as each gateway polls
  (edgeplane ``poll: 0``, the next poll as soon as the last one is done; ThingsBoard starts a new
  poll every ``pollPeriod`` whether or not the last one is done, and at 0 or 1 ms delivers nothing,
  so the benchmark first probes ``pollPeriod`` 500, 250, 150, 100, 50, 25 ms for 6 s each (all of
  them: on a loaded machine one probe can dip) and measures the one that delivered most; the probe
  is in the JSON output).

A paho client on the broker counts readings as they arrive (:func:`count_readings`):
edgeplane's sync envelopes on ``edgeplane/<site>/up/#`` (the envelope index says how many
readings each raw record holds) and ThingsBoard's ``v1/gateway/telemetry`` JSON (one reading per
key per timestamp). Per gateway and scenario, over ``--seconds`` after ``--warmup``: readings per
second delivered at the broker, CPU seconds of the gateway's process tree per 1,000 readings
delivered (psutil, user + system), resident memory of the tree (psutil, peak of samples every
0.25 s), and the machine's load average (other work on the machine shows in the figures).

Each side runs as an integrator would run it: edgeplane with ``edgeplane run site.yaml`` and a raw
uplink policy (every reading goes up through the durable outbox; durability ``power``, the
default: SQLite synchronous=FULL; ``--durability process`` changes it); ThingsBoard with its own
entry point, memory storage (its default), report strategy ``ON_RECEIVED`` (every reading goes
up, as edgeplane's raw policy sends), remote configuration, statistics and the update check off.
ThingsBoard's gateway asks the server for its session limits (RPC ``getSessionLimits``) after
connecting and sends nothing until it gets an answer; Mosquitto is not ThingsBoard, so the
counter client answers that one RPC as a ThingsBoard server without rate limits does
(``maxInflightMessages`` 100, ``maxPayloadSize`` 65536, no rate limits).

ThingsBoard's gateway is installed from PyPI into its own virtual environment under
``~/.cache/edgeplane-bench/`` by this script (``--peer-version``), never into edgeplane's; when it
cannot be installed or started, its rows say why and the edgeplane rows still run.

    nice -n 10 .venv/bin/python benchmarks/peer_modbus_mqtt.py [--seconds 20] [--warmup 5] [--scenarios 1s,max] [--json]

Before and after a change in the same run: unpack an older edgeplane (``git archive <commit> | tar -x
-C DIR``, plus the generated ``sparkplug_b_pb2.py``) and add ``--baseline-src DIR``: its rows come
first, labelled with the folder's name, and the JSON gets ``baseline_*`` keys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from edgeplane.testing import free_port

PEER = "thingsboard-gateway"
PEER_TELEMETRY = "v1/gateway/telemetry"
PEER_RPC_REQUEST = "v1/devices/me/rpc/request/"
PEER_RPC_RESPONSE = "v1/devices/me/rpc/response/"
# what a ThingsBoard CE server with rate limits off answers to getSessionLimits
PEER_SESSION_LIMITS = {"maxPayloadSize": 65536, "maxInflightMessages": 100, "rateLimits": {}, "gatewayRateLimits": {}}

BLOCKS = 4
BLOCK_STRIDE = 250
# (type, how many per block, registers each); ThingsBoard's name for each type
BLOCK_LAYOUT = (("uint16", 20, 1), ("int16", 10, 1), ("float32", 10, 2), ("uint32", 10, 2))
# ThingsBoard polls a Modbus TCP device by starting a new task per pollPeriod tick that reads every
# point (one request per point), whether or not the last poll has finished. A period shorter than one
# poll piles polls up on the one connection and nothing comes out (pollPeriod 0 and 1 ms: no reading in
# 90 s, "Device tb-bench is not connected ... skipping reading"). So "as fast as it polls" is found by
# a short probe of each of these periods, and the period that delivered most is measured.
PEER_PROBE_POLL_MS = (500, 250, 150, 100, 50, 25)
PEER_TYPES = {"uint16": "16uint", "int16": "16int", "float32": "32float", "uint32": "32uint"}
STRUCT_FORMATS = {"uint16": ">H", "int16": ">h", "float32": ">f", "uint32": ">I"}


def point_map() -> list[tuple[str, int, str, float]]:
    """The 200 points: (name, 0-based holding address, type, value the simulator holds)."""
    points = []
    for block in range(BLOCKS):
        address = block * BLOCK_STRIDE
        for kind, count, width in BLOCK_LAYOUT:
            for _ in range(count):
                i = len(points)
                value = {"uint16": i * 7, "int16": -i, "float32": i + 0.5, "uint32": 70_000 + i}[kind]
                points.append((f"p{i:03d}_{kind}", address, kind, value))
                address += width
    return points


def holding_registers(points: list[tuple[str, int, str, float]]) -> list[int]:
    """The holding table that holds every point's value (big-endian bytes and words)."""
    size = max(address for _, address, _, _ in points) + 2
    registers = [0] * size
    for _, address, kind, value in points:
        raw = struct.pack(STRUCT_FORMATS[kind], value)
        for k in range(0, len(raw), 2):
            registers[address + k // 2] = int.from_bytes(raw[k : k + 2], "big")
    return registers


def serve_modbus(port: int) -> None:
    """The simulator process: the repo's pymodbus test server holding the point map."""
    from edgeplane_modbus.testing import PymodbusServer

    async def main() -> None:
        registers = holding_registers(point_map())
        server = PymodbusServer(size=len(registers))
        server.store.holding[:] = registers
        server.store.requests = _Discard()  # it records every request; unbounded at the max poll rate
        await server.start(port)
        await asyncio.Event().wait()

    asyncio.run(main())


class _Discard(list):
    def append(self, item: object) -> None:
        pass


def wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


# -- counting at the broker -----------------------------------------------------------------------


def count_readings(topic: str, payload: bytes) -> int:
    """Readings one message carries: a ThingsBoard gateway telemetry message or an edgeplane envelope.

    ThingsBoard: ``{"<device>": [{"ts": ms, "values": {"key": value, ...}}, ...]}`` (or entries
    without ``ts``/``values``: ``{"key": value}``), one reading per key per entry. edgeplane:
    the sum of the ``count`` of the envelope's raw records. Raises ``ValueError`` on a payload that
    is neither (edgeplane's other up/ topics, such as the reported state, carry no readings).
    """
    if topic == PEER_TELEMETRY:
        document = json.loads(payload)
        if not isinstance(document, dict):
            raise ValueError(f"{PEER_TELEMETRY}: expected an object of devices, got {type(document).__name__}")
        n = 0
        for entries in document.values():
            for entry in entries if isinstance(entries, list) else [entries]:
                if not isinstance(entry, dict):
                    raise ValueError(f"{PEER_TELEMETRY}: an entry is {type(entry).__name__}, not an object")
                values = entry["values"] if "values" in entry else entry
                n += len(values)
        return n
    from edgeplane.sync.codec import decode_envelope

    return sum(record.count for record in decode_envelope(payload).records if record.kind == "raw")


class Counter:
    """A paho client on the broker: counts readings from either gateway, answers ThingsBoard's limits RPC."""

    def __init__(self, host: str, port: int):
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.readings = 0
        self.messages = 0
        self.unreadable = 0
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-counter-{os.getpid()}")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe([("edgeplane/+/up/#", 1), (PEER_TELEMETRY, 1), (PEER_RPC_REQUEST + "+", 1)])
        if not subscribed.wait(10):
            raise RuntimeError("the counter got no SUBACK from the broker")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic.startswith(PEER_RPC_REQUEST):
            try:
                method = json.loads(message.payload).get("method")
            except (ValueError, AttributeError):
                return
            if method == "getSessionLimits":
                request_id = message.topic[len(PEER_RPC_REQUEST):]
                client.publish(PEER_RPC_RESPONSE + request_id, json.dumps(PEER_SESSION_LIMITS), qos=1)
            return
        try:
            n = count_readings(message.topic, message.payload)
        except (ValueError, KeyError, TypeError):
            with self._lock:
                self.unreadable += 1
            return
        with self._lock:
            self.readings += n
            self.messages += 1

    def snapshot(self) -> int:
        with self._lock:
            return self.readings

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- the two gateways -----------------------------------------------------------------------------


def source_pythonpath(source: Path) -> str:
    """PYTHONPATH that runs edgeplane from another source tree (``git archive <commit>`` unpacked).

    Its core (``platform/``) and every distribution's ``src/`` come before the editable installs of
    this checkout; the installed entry points name the same modules. Generated files that git does not
    hold (the Sparkplug protobuf module) must be copied in.
    """
    folders = [source / "platform", *sorted(source.glob("*/*/src"))]
    if not (source / "platform" / "edgeplane" / "__init__.py").exists():
        raise SystemExit(f"--baseline-src {source}: no platform/edgeplane/ there; give an unpacked edgeplane source tree")
    return os.pathsep.join(str(f) for f in folders)


def edgeplane_command(folder: Path, modbus_port: int, broker_port: int, poll: str, durability: str,
                      pythonpath: str | None = None) -> tuple[list[str], dict]:
    points = {name: {"address": address, "type": kind} for name, address, kind, _ in point_map()}
    site = {
        "site": {"id": "bench"},
        "devices": {"plc": {"connector": "modbus", "url": f"tcp://127.0.0.1:{modbus_port}", "poll": poll,
                            "timeout": "2s", "points": points}},
        "sync": {"uplink": {"url": f"mqtt://127.0.0.1:{broker_port}"}, "durability": durability,
                 "policy": [{"topics": "plc/#", "mode": "raw"}]},
    }
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    edgeplane = Path(sys.executable).with_name("edgeplane")
    env = {**os.environ, "EDGEPLANE_DATA_DIR": str(folder / "data")}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return [str(edgeplane), "run", str(path), "--http-port", str(free_port()), "--log-level", "warning"], env


def peer_venv(version: str) -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeplane-bench" / f"tbgw-{version}-venv"


def install_peer(version: str) -> tuple[Path | None, str]:
    """ThingsBoard IoT Gateway in its own venv; (python, "") or (None, why not)."""
    venv = peer_venv(version)
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists():
        return python, ""
    if venv.exists():
        shutil.rmtree(venv)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"{PEER}=={version}"], check=True,
                       capture_output=True, text=True, timeout=900)
        # importing its Modbus connector installs the pymodbus version it pins, its own way (pip, into this venv)
        subprocess.run([str(python), "-c", "import thingsboard_gateway.connectors.modbus.modbus_connector; import pymodbus"],
                       check=True, capture_output=True, text=True, timeout=900)
    except subprocess.CalledProcessError as e:
        detail = (e.stderr or e.stdout or "").strip().splitlines()
        return None, f"{PEER}=={version} could not be installed: {detail[-1] if detail else e}"
    except subprocess.TimeoutExpired:
        return None, f"{PEER}=={version}: installing took longer than the time allowed"
    marker.write_text(version)
    return python, ""


def peer_command(python: Path, folder: Path, modbus_port: int, broker_port: int, poll_ms: int) -> tuple[list[str], dict]:
    config = folder / "config"
    config.mkdir(parents=True, exist_ok=True)
    gateway = {
        "thingsboard": {
            "host": "127.0.0.1", "port": broker_port, "remoteShell": False, "remoteConfiguration": False,
            "latencyDebugMode": False, "statistics": {"enable": False, "statsSendPeriodInSeconds": 3600},
            "deviceFiltering": {"enable": False}, "maxPayloadSizeBytes": 8196, "minPackSendDelayMS": 50,
            "minPackSizeToSend": 500, "checkConnectorsConfigurationInSeconds": 3600, "handleDeviceRenaming": False,
            "security": {"type": "accessToken", "accessToken": "bench"}, "qos": 1,
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": False},
            # no limits: "0:0," is the gateway's spelling of unlimited
            "rateLimits": "0:0,", "dpRateLimits": "0:0,", "messagesRateLimits": "0:0,",
            "deviceMessagesRateLimits": "0:0,", "deviceRateLimits": "0:0,", "deviceDpRateLimits": "0:0,",
        },
        "storage": {"type": "memory", "read_records_count": 100, "max_records_count": 1_000_000},
        "grpc": {"enabled": False},
        "connectors": [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}],
    }
    timeseries = [{"tag": name, "type": PEER_TYPES[kind], "functionCode": 3, "objectsCount": 2 if kind.endswith("32") else 1,
                   "address": address} for name, address, kind, _ in point_map()]
    modbus = {"master": {"slaves": [{
        "host": "127.0.0.1", "port": modbus_port, "type": "tcp", "method": "socket", "unitId": 1,
        "deviceName": "tb-bench", "deviceType": "default", "timeout": 2, "byteOrder": "BIG", "wordOrder": "BIG",
        "retries": 0, "pollPeriod": poll_ms, "reportStrategy": {"type": "ON_RECEIVED"},
        "attributes": [], "attributeUpdates": [], "rpc": [], "timeseries": timeseries,
    }]}}
    (config / "tb_gateway.json").write_text(json.dumps(gateway, indent=1))
    (config / "modbus.json").write_text(json.dumps(modbus, indent=1))
    # pymodbus 3.9 (the version the gateway installs) logs a deprecation warning for every value the
    # gateway decodes; an integrator silences it, as here
    logs = {"version": 1, "disable_existing_loggers": False,
            "handlers": {"console": {"class": "logging.StreamHandler", "level": "WARNING"}},
            "loggers": {"pymodbus": {"level": "ERROR"}},
            "root": {"level": "WARNING", "handlers": ["console"]}}
    (config / "logs.json").write_text(json.dumps(logs))
    env = {**os.environ, "TB_GW_CONFIG_DIR": str(config)}
    env.pop("PYTHONPATH", None)
    return [str(python), "-c", "from thingsboard_gateway.tb_gateway import main; main()"], env


# -- the process being measured -------------------------------------------------------------------


def tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU of a process, its live children and its reaped children."""
    total = 0.0
    for p in tree(process):
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def tree_rss_mb(process: psutil.Process) -> float:
    total = 0
    for p in tree(process):
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def measure(name: str, command: list[str], env: dict, folder: Path, counter: Counter, warmup: float,
            seconds: float, simulator: psutil.Process, first_reading_s: float = 90.0) -> dict[str, Any]:
    log_path = folder / f"{name}.log"
    log = log_path.open("w")
    proc = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    process = psutil.Process(proc.pid)
    peak = 0.0
    try:
        first = counter.snapshot()
        deadline = time.monotonic() + first_reading_s
        while counter.snapshot() == first:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text()[-600:]
                raise RuntimeError(f"{name}: no reading reached the broker in {first_reading_s:g} s (exit code {proc.poll()}); "
                                   f"its log ends: {tail}")
            time.sleep(0.1)
        time.sleep(warmup)
        r0, c0, s0, t0 = counter.snapshot(), tree_cpu_seconds(process), tree_cpu_seconds(simulator), time.monotonic()
        while time.monotonic() < t0 + seconds:
            peak = max(peak, tree_rss_mb(process))
            time.sleep(0.25)
        r1, c1, s1, t1 = counter.snapshot(), tree_cpu_seconds(process), tree_cpu_seconds(simulator), time.monotonic()
        load = os.getloadavg()[0]
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} while measured; its log: {log_path}")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    readings = r1 - r0
    return {"readings_per_s": round(readings / (t1 - t0), 1),
            "cpu_s_per_1000_readings": round((c1 - c0) / readings * 1000, 4) if readings else None,
            "cpu_share": round((c1 - c0) / (t1 - t0), 3), "rss_mb": round(peak, 1), "load_avg_1min": round(load, 2),
            # a simulator near 1.0 means the "max" rows measure the simulator as much as the gateway
            "simulator_cpu_share": round((s1 - s0) / (t1 - t0), 3)}


def probe_peer_poll(python: Path, root: Path, modbus_port: int, broker_port: int, counter: Counter,
                    simulator: psutil.Process, seconds: float = 6.0) -> tuple[int, dict[str, float]]:
    """The pollPeriod (ms) at which ThingsBoard delivers most readings, and readings/s at each tried."""
    delivered: dict[str, float] = {}
    for poll_ms in PEER_PROBE_POLL_MS:
        folder = root / f"peer-probe-{poll_ms}"
        folder.mkdir()
        command, env = peer_command(python, folder, modbus_port, broker_port, poll_ms)
        try:
            delivered[str(poll_ms)] = measure(PEER, command, env, folder, counter, 2.0, seconds, simulator, first_reading_s=30.0)["readings_per_s"]
        except RuntimeError:
            delivered[str(poll_ms)] = 0.0
    return int(max(delivered, key=lambda k: delivered[k])), delivered


SIDES = (("edgeplane", "edgeplane"), ("peer", PEER))
FIGURES = ("readings_per_s", "cpu_s_per_1000_readings", "cpu_share", "rss_mb", "load_avg_1min", "simulator_cpu_share")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per gateway and scenario")
    parser.add_argument("--warmup", type=float, default=5.0, help="time after the first reading before measuring")
    parser.add_argument("--scenarios", default="1s,max", help="comma separated: 1s (200 points every second), max")
    parser.add_argument("--peer-version", default="3.8.5", help=f"{PEER} version to install and run")
    parser.add_argument("--durability", choices=["power", "process"], default="power", help="edgeplane's outbox durability")
    parser.add_argument("--no-peer", action="store_true", help="run edgeplane only")
    parser.add_argument("--baseline-src", type=Path, metavar="DIR",
                        help="also run edgeplane from this source tree (e.g. `git archive <commit> | tar -x -C DIR`), "
                             "as rows 'baseline', before this checkout's rows")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--serve-modbus", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_modbus:
        serve_modbus(args.serve_modbus)
        return 0
    from edgeplane_mqtt.testing import Mosquitto

    baseline_path = source_pythonpath(args.baseline_src.resolve()) if args.baseline_src else None
    sides = ((("baseline", f"edgeplane {args.baseline_src.name}"),) if args.baseline_src else ()) + SIDES
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [s for s in scenarios if s not in ("1s", "max")]
    if bad:
        parser.error(f"--scenarios: unknown {', '.join(bad)}; use 1s and/or max")
    peer_python, peer_problem = (None, "not asked (--no-peer)") if args.no_peer else install_peer(args.peer_version)
    points = point_map()
    results: dict[str, Any] = {"points": len(points), "seconds": args.seconds, "peer": f"{PEER}=={args.peer_version}",
                               "edgeplane_durability": args.durability, "cpus": os.cpu_count(), "scenarios": {}}
    if peer_problem:
        results["peer_not_run"] = peer_problem
    if args.baseline_src:
        results["baseline_src"] = str(args.baseline_src)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="edgeplane-peer-") as tmp:
        root = Path(tmp)
        modbus_port = free_port()
        server = subprocess.Popen([sys.executable, __file__, "--serve-modbus", str(modbus_port)],
                                  stdout=subprocess.DEVNULL, stderr=(root / "modbus.log").open("w"))
        simulator = psutil.Process(server.pid)
        try:
            wait_port(modbus_port)
            with Mosquitto(root, max_inflight_messages=1000) as broker:
                counter = Counter(broker.host, broker.port)
                try:
                    for scenario in scenarios:
                        if baseline_path:
                            folder = root / f"baseline-{scenario}"
                            folder.mkdir()
                            command, env = edgeplane_command(folder, modbus_port, broker.port,
                                                             "1s" if scenario == "1s" else "0", args.durability, baseline_path)
                            try:
                                rows["baseline", scenario] = measure("baseline", command, env, folder, counter,
                                                                     args.warmup, args.seconds, simulator)
                            except RuntimeError as e:
                                rows["baseline", scenario] = {"not_run": str(e)}
                        folder = root / f"edgeplane-{scenario}"
                        folder.mkdir()
                        command, env = edgeplane_command(folder, modbus_port, broker.port, "1s" if scenario == "1s" else "0",
                                                         args.durability)
                        try:
                            rows["edgeplane", scenario] = measure("edgeplane", command, env, folder, counter,
                                                                  args.warmup, args.seconds, simulator)
                        except RuntimeError as e:
                            rows["edgeplane", scenario] = {"not_run": str(e)}
                        if peer_python is None:
                            continue
                        poll_ms = 1000
                        if scenario == "max":
                            poll_ms, probe = probe_peer_poll(peer_python, root, modbus_port, broker.port, counter, simulator)
                            results["peer_max_poll_probe_readings_per_s"] = probe
                            results["peer_max_poll_ms"] = poll_ms
                        folder = root / f"peer-{scenario}"
                        folder.mkdir()
                        command, env = peer_command(peer_python, folder, modbus_port, broker.port, poll_ms)
                        try:
                            rows["peer", scenario] = measure(PEER, command, env, folder, counter, args.warmup, args.seconds, simulator)
                        except RuntimeError as e:
                            rows["peer", scenario] = {"not_run": str(e)}
                    results["unreadable_messages"] = counter.unreadable
                finally:
                    counter.close()
        finally:
            server.terminate()
            server.wait(10)

    for scenario in scenarios:
        out: dict[str, Any] = {}
        for side, _ in sides:
            row = rows.get((side, scenario))
            if row is None:
                continue
            if "not_run" in row:
                out[f"{side}_not_run"] = row["not_run"]
                continue
            out.update({f"{side}_{figure}": row[figure] for figure in FIGURES})
        mine, theirs = out.get("edgeplane_cpu_s_per_1000_readings"), out.get("peer_cpu_s_per_1000_readings")
        if mine and theirs:
            out["peer_vs_edgeplane_cpu_per_reading"] = round(theirs / mine, 2)
        if out.get("edgeplane_readings_per_s") and out.get("peer_readings_per_s"):
            out["edgeplane_vs_peer_readings_per_s"] = round(out["edgeplane_readings_per_s"] / out["peer_readings_per_s"], 2)
        before = out.get("baseline_cpu_s_per_1000_readings")
        if mine and before:
            out["baseline_vs_edgeplane_cpu_per_reading"] = round(before / mine, 2)
        results["scenarios"][f"poll_{scenario}"] = out

    kinds = ", ".join(f"{count * BLOCKS} {kind}" for kind, count, _ in BLOCK_LAYOUT)
    print(f"Modbus TCP -> MQTT broker: {len(points)} holding-register points ({kinds}) in {BLOCKS} blocks, "
          f"pymodbus simulator and Mosquitto on loopback, {args.seconds:g} s measured per row, "
          f"{os.cpu_count()} CPUs; the two gateways run one after the other")
    print(f"{'gateway':<22} {'poll':<5} {'readings/s':>11} {'CPU s/1000 readings':>20} {'CPU share':>9} "
          f"{'peak RSS MB':>11} {'load avg':>8} {'simulator CPU':>13}")
    for scenario in scenarios:
        for side, label in sides:
            row = rows.get((side, scenario))
            if row is None:
                continue
            if "not_run" in row:
                print(f"{label:<22} {scenario:<5} not run: {row['not_run']}")
                continue
            cpu = row["cpu_s_per_1000_readings"]
            print(f"{label:<22} {scenario:<5} {row['readings_per_s']:>11,.1f} {cpu if cpu is not None else '-':>20} "
                  f"{row['cpu_share']:>9} {row['rss_mb']:>11} {row['load_avg_1min']:>8} {row['simulator_cpu_share']:>13}")
    if peer_problem:
        print(f"{PEER}: not run: {peer_problem}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
