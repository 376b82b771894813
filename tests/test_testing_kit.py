"""The test kit's helpers are written once: free_port, the Mosquitto launcher and the pymodbus
server wrapper each live in one place; test support modules are all named ``testing``; only the
core's kit loads in every pytest run (the protocol plugins' fixtures are opt-in)."""

from __future__ import annotations

import re
import socket
from importlib.metadata import entry_points
from pathlib import Path

from edgeplane.testing import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_free_port_gives_a_bindable_port_for_tcp_and_udp():
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        port = free_port(kind)
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", port))  # raises if it was taken
        assert 1024 <= port < 65536


def python_files() -> dict[str, str]:
    """Every Python file of the repository's distributions, tests and benchmarks: {relative path: text}."""
    paths = [p for top in ("platform", "connectors", "uplinks", "solutions", "plugins", "tests", "benchmarks")
             for p in (ROOT / top).rglob("*.py")]
    return {path.relative_to(ROOT).as_posix(): path.read_text(errors="replace") for path in paths
            if "/build/" not in path.as_posix() and "/node_modules/" not in path.as_posix()}


def test_nobody_writes_free_port_again():
    copies = [relative for relative, text in python_files().items()
              if relative != "platform/edgeplane/testing/ports.py" and re.search(r"^def _?free_port\(", text, re.M)]
    assert not copies, f"import free_port from edgeplane.testing instead: {copies}"


def test_one_helper_starts_mosquitto():
    # a test or benchmark that needs a broker uses edgeplane.testing.Mosquitto (or the mqtt_broker
    # fixture); the reference sites' companion brokers are the product, not a test helper
    launcher = re.compile(r"Popen\(\s*\[[^\]]*(mosquitto|MOSQUITTO)")
    copies = [relative for relative, text in python_files().items()
              if relative != "platform/edgeplane/testing/mosquitto.py" and launcher.search(text)]
    assert not copies, f"start Mosquitto with edgeplane.testing.Mosquitto instead: {copies}"


def test_one_wrapper_runs_a_pymodbus_server():
    # benchmarks/modbus.py is exempt: it measures the raw library, so it must not go through ours
    owner, exempt = "connectors/modbus/src/edgeplane_modbus/simulator.py", {"benchmarks/modbus.py"}
    copies = [relative for relative, text in python_files().items()
              if relative != owner and relative not in exempt and re.search(r"ModbusTcpServer\(", text)]
    assert not copies, f"serve simulated Modbus devices with edgeplane_modbus.simulator.SimServer instead: {copies}"


def test_only_the_core_kit_is_a_pytest_plugin_and_support_modules_are_named_testing():
    plugins = {e.name: e.value for e in entry_points(group="pytest11") if e.value.split(".")[0].startswith("edgeplane")}
    assert plugins == {"edgeplane": "edgeplane.testing"}, plugins
    other_names = [relative for relative in python_files()
                   if "/src/" in relative and Path(relative).stem in ("pytest_fixtures", "testkit", "test_kit")]
    assert not other_names, f"name a test support module testing.py: {other_names}"
