"""site doctor and cloud push-site against a real Mosquitto with mutual TLS on loopback, and a running site."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest
import yaml

from edgeplane_cloud.cli import cloud as cloud_group
from edgeplane_cloud.embedded import CloudServer
from edgeplane.testing import free_port, run_host, wait_for

from .conftest import SntpServer, invoke, issue_pair, new_ca, site_cmd, tls_broker

REPO = Path(__file__).resolve().parents[2]


def make_site(tmp_path: Path, vertical: str, name: str) -> Path:
    folder = tmp_path / "site"
    # the kit tests' small site files: these tests need only the core and the connectors
    site_cmd("init", folder, "--from", Path(__file__).parent / "sites" / f"{vertical}.yaml", "--name", name)
    site_cmd("certs", folder)
    return folder


def edit(folder: Path, change) -> None:
    doc = yaml.safe_load((folder / "site.yaml").read_text())
    change(doc)
    (folder / "site.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def lines(output: str) -> dict[str, str]:
    """check name -> PASS/FAIL/SKIP from doctor's output."""
    out = {}
    for line in output.splitlines():
        mark, _, rest = line.partition("  ")
        if mark in ("PASS", "FAIL", "SKIP"):
            out[rest.split(":")[0]] = mark
    return out


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


def test_doctor_gives_a_pass_or_fail_line_per_check(tmp_path: Path, listener: int, sntp: SntpServer):
    folder = make_site(tmp_path, "solar", "plant-7")
    broker = tls_broker(tmp_path / "broker", tmp_path / "operator" / "lab-ca")
    closed = free_port()
    try:
        def point_at_loopback(doc):
            doc["devices"]["inv1"]["url"] = f"tcp://127.0.0.1:{listener}"
            doc["devices"]["inv2"]["url"] = f"tcp://127.0.0.1:{closed}"
            doc["sync"]["uplink"]["url"] = broker.url
        edit(folder, point_at_loopback)
        out = site_cmd("doctor", folder, "--ntp", sntp.address, "--timeout", "10", ok=False).output
        marks = lines(out)
        assert marks["site file valid"] == "PASS", out
        assert marks["device inv1 reachable"] == "PASS", out
        assert marks["device inv2 reachable"] == "FAIL", out
        assert f"127.0.0.1:{closed}" in out  # the failing line names the address
        assert marks["device plant reachable"] == "SKIP", out  # a memory device has no link
        assert marks["broker reachable"] == "PASS", out + broker.log()
        assert "with the site certificate" in out
        assert marks["clock skew"] == "PASS", out
        assert marks["outbox disk"] == "PASS", out
        assert marks["certificate uplink cert"] == "PASS" and marks["certificate uplink ca"] == "PASS", out

        edit(folder, lambda doc: doc["devices"].pop("inv2"))
        out = site_cmd("doctor", folder, "--ntp", sntp.address, "--timeout", "10").output
        assert "FAIL" not in out and " 0 failed" in out
    finally:
        broker.stop()


def test_doctor_fails_a_foreign_certificate_a_skewed_clock_and_a_short_validity(tmp_path: Path):
    folder = make_site(tmp_path, "intersection", "crossing-1")
    broker = tls_broker(tmp_path / "broker", tmp_path / "operator" / "lab-ca")
    skewed = SntpServer(offset=30.0)
    try:
        edit(folder, lambda doc: doc["sync"]["uplink"].update(url=broker.url))
        # the site's certificate now comes from a CA the broker does not trust
        other = new_ca(tmp_path / "other", "Other CA")
        site_cmd("certs", folder, "--ca-cert", other / "ca.pem", "--ca-key", other / "ca.key")
        edit(folder, lambda doc: doc["sync"]["uplink"].update(ca=str(tmp_path / "operator" / "lab-ca" / "ca.pem")))
        out = site_cmd("doctor", folder, "--ntp", skewed.address, "--timeout", "3", "--warn-days", "400", ok=False).output
        marks = lines(out)
        assert marks["broker reachable"] == "FAIL", out
        assert marks["clock skew"] == "FAIL" and "+30." in out, out
        assert marks["certificate uplink cert"] == "FAIL" and "under 400" in out, out
        assert marks["site file valid"] == "PASS", out
    finally:
        skewed.stop()
        broker.stop()


async def test_init_certs_run_push_monitor_a_site_end_to_end(tmp_path: Path):
    """The newcomer's path: init, certs, run, push a changed site file, read /metrics and /readyz."""
    folder = make_site(tmp_path, "intersection", "crossing-1")
    broker = tls_broker(tmp_path / "broker", tmp_path / "operator" / "lab-ca")
    cloud_cert, cloud_key = issue_pair(tmp_path / "operator" / "lab-ca", "cloud", tmp_path / "cloud-id")
    tls = {"ca": str(folder / "certs" / "ca.pem"), "cert": str(cloud_cert), "key": str(cloud_key)}
    cloud = CloudServer(broker.url, tmp_path / "cloud", **tls)
    cloud.start()

    def wire(doc):
        doc["sync"]["uplink"]["url"] = broker.url
        doc["sync"].update(durability="process", report_interval=1)
        doc["store"] = {"path": str(tmp_path / "store")}
    edit(folder, wire)
    try:
        async with run_host(folder / "site.yaml", http_port=0) as host:
            await wait_for(lambda: host.sync.transport.connected, timeout=30)
            assert host.solution("spillback").config.high == 25

            # what the cloud may change (issue 14): a solution parameter; devices and files stay local
            edit(folder, lambda doc: doc["solutions"]["spillback"].update(high=30, clear=20))
            out = (await asyncio.to_thread(
                invoke, cloud_group, "push-site", folder, "--cloud", broker.url, "--ca", tls["ca"], "--cert", tls["cert"],
                "--key", tls["key"], "--data", tmp_path / "cloud")).output
            assert "pushed desired config" in out and "crossing-1" in out
            assert "not sent" in out and "store" in out  # the local-only sections are named, not pushed
            await wait_for(lambda: "solution:spillback" in host.parts and host.solution("spillback").config.high == 30,
                           timeout=30)
            await wait_for(lambda: bool(cloud.store.status()) and not cloud.store.status()[0]["twin_differences"], timeout=30)

            # a parameter removed from the site file and pushed again is removed on the site (back to its default)
            edit(folder, lambda doc: doc["solutions"]["spillback"].pop("clear"))
            await asyncio.to_thread(invoke, cloud_group, "push-site", folder, "--cloud", broker.url, "--ca", tls["ca"], "--cert", tls["cert"],
                                    "--key", tls["key"])
            await wait_for(lambda: "solution:spillback" in host.parts and host.solution("spillback").config.clear is None,
                           timeout=30)
            assert "device:controller" in host.parts

            host_ip, port = host.http_address[:2]
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://{host_ip}:{port}/readyz") as response:
                    assert response.status == 200
                async with http.get(f"http://{host_ip}:{port}/metrics") as response:
                    metrics = await response.text()
        # every core metric the Grafana dashboard charts is one this host exposes
        dashboard = (REPO / "configs" / "grafana-dashboard.json").read_text()
        for name in ("edgeplane_part_up", "edgeplane_bus_points_total", "edgeplane_sync_link_up",
                     "edgeplane_sync_backlog_readings", "edgeplane_restarts_total"):
            assert name in dashboard, name
            assert name in metrics, name
    finally:
        cloud.stop()
        broker.stop()
