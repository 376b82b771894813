"""The console's HTTP API in-process: sessions, CSRF, roles, login throttling, TLS, config checks,
commissioning against real Modbus/SunSpec and OPC UA servers, panels, the SSE stream."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from edgeplane.console import Panel, Stats
from edgeplane.errors import SiteError
from edgeplane.testing import run_host, wait_for

POINTS = {"limit_pct": {"type": "float64", "unit": "%", "access": "rw"}, "temp": {"type": "float64", "unit": "degC"}}


def small_site(users: dict[str, Any], **console: Any) -> dict[str, Any]:
    return {"site": {"id": "console-test"}, "http": {"port": 0},
            "devices": {"plant": {"connector": "memory", "points": POINTS}},
            "solutions": {"hot": {"type": "threshold", "points": ["plant/temp"], "high": 80}},
            "limits": {"plant/limit_pct": {"min": 0, "max": 100}},
            "console": {"users": {k: dict(v) for k, v in users.items()}, **console}}


def client() -> aiohttp.ClientSession:
    # the default jar ignores cookies from IP addresses; browsers do not
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login(session: aiohttp.ClientSession, base: str, user: tuple[str, str]) -> dict[str, Any]:
    async with session.post(base + "/console/api/login", json={"user": user[0], "password": user[1]}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_sessions_csrf_roles_and_the_audit_log(tmp_path, console_users, operator, viewer):
    async with run_host(small_site(console_users), store_dir=tmp_path, http_port=0) as host:
        base = f"http://127.0.0.1:{host.http_address[1]}"
        async with client() as s:
            async with s.get(base + "/console/api/overview") as r:
                assert r.status == 401
            async with s.post(base + "/console/api/login", json={"user": operator[0], "password": operator[1]}) as r:
                me = await r.json()
                cookie = r.headers["Set-Cookie"]
            assert me["role"] == "operator" and "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
            assert "Secure" not in cookie  # plain http on loopback
            write = {"device": "plant", "point": "limit_pct", "value": 150}
            async with s.post(base + "/console/api/write", json=write) as r:
                assert r.status == 403 and "CSRF" in (await r.json())["error"]
            async with s.post(base + "/console/api/write", json=write, headers={"X-CSRF-Token": "forged"}) as r:
                assert r.status == 403
            async with s.post(base + "/console/api/write", json=write, headers={"X-CSRF-Token": me["csrf"]}) as r:
                result = await r.json()
            assert result["status"] == "rejected" and "above the maximum 100" in result["message"]
            async with s.post(base + "/console/api/write", json={**write, "value": 40}, headers={"X-CSRF-Token": me["csrf"]}) as r:
                result = await r.json()
            assert result["status"] == "ok" and result["readback"] == 40
            async with s.get(base + "/console/api/audit?user=" + operator[0]) as r:
                rows = (await r.json())["rows"]
            assert [(row["value"], row["status"], row["source"]) for row in rows] == [
                (40, "ok", f"console:{operator[0]}"), (150, "rejected", f"console:{operator[0]}")]
            async with s.post(base + "/console/api/logout", headers={"X-CSRF-Token": me["csrf"]}) as r:
                assert r.status == 200
            async with s.get(base + "/console/api/me") as r:
                assert r.status == 401
        async with client() as s:
            me = await login(s, base, viewer)
            async with s.post(base + "/console/api/write", json={**write, "value": 50}, headers={"X-CSRF-Token": me["csrf"]}) as r:
                assert r.status == 403 and "viewer" in (await r.json())["error"]
            async with s.get(base + "/console/api/overview") as r:
                overview = await r.json()
            assert sorted(p["key"] for p in overview["parts"]) == ["device:plant", "solution:hot"]
            assert overview["links"][0]["state"] == "up" and overview["sync"] is None and overview["inference"] is None
        assert host.bus.latest("plant/limit_pct")[1] == 40
        assert host.metrics.value("edgeplane_console_refused_total", reason="role") == 1
        assert host.metrics.value("edgeplane_console_refused_total", reason="csrf") == 2


async def test_failed_logins_are_counted_and_rate_limited(tmp_path, console_users, operator, viewer):
    async with run_host(small_site(console_users, max_failed_logins=3, lockout="1min"), store_dir=tmp_path, http_port=0) as host:
        base = f"http://127.0.0.1:{host.http_address[1]}"
        async with client() as s:
            for _ in range(3):
                async with s.post(base + "/console/api/login", json={"user": operator[0], "password": "guess"}) as r:
                    assert r.status == 401
            # locked now, even with the right password, and for the address whatever the user name
            for user in (operator, viewer):
                async with s.post(base + "/console/api/login", json={"user": user[0], "password": user[1]}) as r:
                    assert r.status == 429 and "try again in" in (await r.json())["error"]
            async with s.post(base + "/console/api/login", json={"user": "x" * 65, "password": "p"}) as r:
                assert r.status == 400
            async with s.post(base + "/console/api/login", data=b"\xff" * 10) as r:
                assert r.status == 400
        assert host.metrics.value("edgeplane_console_logins_total", result="failed") == 3
        assert host.metrics.value("edgeplane_console_logins_total", result="locked") == 2


async def test_the_stream_pushes_values_and_ends_when_the_host_stops(tmp_path, console_users, operator):
    async with run_host(small_site(console_users), store_dir=tmp_path, http_port=0) as host:
        base = f"http://127.0.0.1:{host.http_address[1]}"
        async with client() as s:
            await login(s, base, operator)
            await host.device("plant").set("temp", 21.5)
            response = await s.get(base + "/console/api/stream")
            assert response.headers["Content-Type"].startswith("text/event-stream")
            seen = []
            while len(seen) < 2:
                line = (await asyncio.wait_for(response.content.readline(), 5)).decode()
                if line.startswith("data: "):
                    seen.append(line)
            await host.device("plant").set("temp", 85.0)
            while '"plant/temp":[' not in line or "85.0" not in line:
                line = (await asyncio.wait_for(response.content.readline(), 5)).decode()
            async with s.get(base + "/console/api/history?topic=plant/temp") as r:
                assert [v for _, v in (await r.json())["points"]][-2:] == [21.5, 85.0]
            # the threshold solution's alarm is among the events the console kept for panels
            await wait_for(lambda: host.http_address is not None and
                           bool(host.bus is not None), timeout=1)
            stop = asyncio.create_task(host.stop())
            rest = await asyncio.wait_for(response.content.read(), 10)  # the stream ends: stop is not held up
            assert b"event" not in rest or rest.endswith(b"\n\n")
            await asyncio.wait_for(stop, 10)
            response.close()


async def test_panels_come_from_the_hook_and_a_broken_one_is_contained(tmp_path, console_users, operator):
    class PanelPlugin:
        __name__ = "panel-plugin"

        @staticmethod
        def edgeplane_register_console_panels(register):
            register(Panel("threshold", "Threshold state", lambda sol, data: [
                Stats("alarms", {"events": len(data.events("alerts/#")), "nan": float("nan")})]))
            register(Panel("threshold", "Broken", lambda sol, data: 1 / 0))

    from edgeplane import hookimpl

    PanelPlugin.edgeplane_register_console_panels = staticmethod(hookimpl(PanelPlugin.edgeplane_register_console_panels))
    async with run_host(small_site(console_users), plugins=[PanelPlugin()], store_dir=tmp_path, http_port=0) as host:
        base = f"http://127.0.0.1:{host.http_address[1]}"
        async with client() as s:
            await login(s, base, operator)
            async with s.get(base + "/console/api/panels") as r:
                panels = (await r.json())["panels"]
        good, broken = panels
        assert good["solution"] == "hot" and good["widgets"][0]["kind"] == "stats"
        assert good["widgets"][0]["items"]["nan"] is None  # JSON has no NaN
        assert broken["widgets"] == [] and "ZeroDivisionError" in broken["error"]
        assert host.metrics.value("edgeplane_errors_total", part="console", kind="panel") == 1


def test_the_site_file_is_checked(edgeplane_site, console_users):
    site = small_site(console_users)
    site["console"]["users"]["olga"]["password_hash"] = "operator-secret-1"
    with pytest.raises(SiteError, match="not an argon2 hash"):
        edgeplane_site(site)
    site = small_site(console_users)
    site["http"] = {"host": "0.0.0.0", "port": 8712}
    with pytest.raises(SiteError, match="console.tls is not set"):
        edgeplane_site(site)
    site["console"]["tls"] = {"cert": "certs/site.pem", "key": "certs/site.key"}
    assert edgeplane_site(site).core.console.tls.cert == "certs/site.pem"


async def test_tls_with_the_sites_certificate(tmp_path, console_users, operator):
    from edgeplane.provisioning.certs import provision_certs

    # what `edgeplane site certs --host 127.0.0.1 --host localhost` writes: one certificate for the uplink and the console
    folder = tmp_path / "site"
    provision_certs(folder, "console-test", hosts=["127.0.0.1", "localhost"])
    site = small_site(console_users, tls={"cert": str(folder / "certs/site.pem"), "key": str(folder / "certs/site.key")})
    async with run_host(site, store_dir=tmp_path / "store", http_port=0) as host:
        port = host.http_address[1]
        trust = ssl.create_default_context(cafile=str(folder / "certs/ca.pem"))  # verifies the name too
        async with client() as s:
            async with s.post(f"https://127.0.0.1:{port}/console/api/login", ssl=trust,
                              json={"user": operator[0], "password": operator[1]}) as r:
                assert r.status == 200 and "Secure" in r.headers["Set-Cookie"]
            async with s.get(f"https://127.0.0.1:{port}/healthz", ssl=trust) as r:
                assert r.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with s.get(f"http://127.0.0.1:{port}/console/"):
                    pass


async def test_modbus_scan_and_a_saved_profile(tmp_path, console_users, operator, viewer, sunspec_inverter):
    inverter = await sunspec_inverter()
    target = inverter.url.removeprefix("tcp://")
    from edgeplane_modbus import plugin as modbus_plugin

    async with run_host(small_site(console_users, profiles_dir=str(tmp_path / "profiles")), store_dir=tmp_path / "store",
                        http_port=0, plugins=[modbus_plugin]) as host:
        base = f"http://127.0.0.1:{host.http_address[1]}"
        async with client() as s:
            me = await login(s, base, operator)
            headers = {"X-CSRF-Token": me["csrf"]}
            async with s.post(base + "/console/api/commissioning/modbus", json={"target": target}, headers=headers) as r:
                scan = await r.json()
            assert r.status == 200, scan
            assert {1, 103} <= {m["id"] for m in scan["models"]}
            chosen = [dict(row, name=row["sunspec"].split(".", 1)[1]) for row in scan["rows"]
                      if row["sunspec"] in ("103.W", "123.WMaxLimPct")]
            assert len(chosen) == 2 and [c["writable"] for c in chosen] == [False, True]
            body = {"name": "my-inverter", "connector": "modbus", "points": chosen, "source": target}
            async with s.post(base + "/console/api/commissioning/profile", json=body, headers=headers) as r:
                saved = await r.json()
            assert r.status == 200, saved
            async with s.post(base + "/console/api/commissioning/profile", json=body, headers=headers) as r:
                assert r.status == 400 and "exists" in (await r.json())["error"]
            async with s.post(base + "/console/api/commissioning/modbus", json={"target": "127.0.0.1:1"}, headers=headers) as r:
                assert r.status == 400 and "cannot scan" in (await r.json())["error"]
            # a connector whose plugin registered no scanner (here: opcua is not loaded)
            async with s.post(base + "/console/api/commissioning/opcua", json={"endpoint": "opc.tcp://x:1"},
                              headers=headers) as r:
                assert r.status == 404 and "installed scanners are modbus" in (await r.json())["error"]
            async with s.post(base + "/console/api/commissioning/profile", json={**body, "name": "../evil"}, headers=headers) as r:
                assert r.status == 400 and "profile name" in (await r.json())["error"]
        async with client() as s:
            me = await login(s, base, viewer)
            async with s.post(base + "/console/api/commissioning/profile", json={**body, "name": "other"},
                              headers={"X-CSRF-Token": me["csrf"]}) as r:
                assert r.status == 403
    profile = yaml.safe_load(Path(saved["path"]).read_text())
    assert profile["profile"] == "my-inverter" and profile["connector"] == "modbus"
    assert profile["points"]["W"]["sunspec"] == "103.W" and "access" not in profile["points"]["W"]
    assert profile["points"]["WMaxLimPct"]["sunspec"] == "123.WMaxLimPct" and profile["points"]["WMaxLimPct"]["access"] == "rw"
    # the saved profile drives a real device entry of the modbus connector
    site = {"site": {"id": "uses-profile"}, "profiles": [saved["path"]],
            "devices": {"inv": {"connector": "modbus", "url": inverter.url, "profile": "my-inverter", "poll": "200ms",
                                "sunspec": {"models": [1, 103, 123], "publish": "listed"}}}}
    async with run_host(site, plugins=[modbus_plugin], store_dir=tmp_path / "store2") as host:
        await wait_for(lambda: host.bus.latest("inv/W") is not None, timeout=10)


async def test_opcua_browse(tmp_path, console_users, operator, opcua_machine):
    from edgeplane_opcua import plugin as opcua_plugin

    machine = await opcua_machine()
    async with run_host(small_site(console_users), store_dir=tmp_path, http_port=0, plugins=[opcua_plugin]) as host:
        base = f"http://127.0.0.1:{host.http_address[1]}"
        async with client() as s:
            me = await login(s, base, operator)
            async with s.post(base + "/console/api/commissioning/opcua", json={"endpoint": machine.url, "depth": 3},
                              headers={"X-CSRF-Token": me["csrf"]}) as r:
                browse = await r.json()
            assert r.status == 200, browse
            variables = [row for row in browse["rows"] if row["class"] == "Variable"]
            assert variables and all(row["node"].startswith(("ns=", "i=")) for row in variables)
            assert any(row["type"].startswith(("float", "int", "uint", "bool")) for row in variables)
            async with s.post(base + "/console/api/commissioning/opcua", json={"endpoint": "http://nope"},
                              headers={"X-CSRF-Token": me["csrf"]}) as r:
                assert r.status == 400 and "opc.tcp://" in (await r.json())["error"]


def test_hash_password_command():
    made = subprocess.run([sys.executable, "-m", "edgeplane.console", "hash-password"], input="a-long-password\n",
                          capture_output=True, text=True, timeout=30)
    assert made.returncode == 0 and made.stdout.startswith("$argon2id$")
    from argon2 import PasswordHasher

    assert PasswordHasher().verify(made.stdout.strip(), "a-long-password")
    short = subprocess.run([sys.executable, "-m", "edgeplane.console", "hash-password"], input="short\n",
                           capture_output=True, text=True, timeout=30)
    assert short.returncode == 2 and "at least 8" in short.stderr


async def test_without_a_console_section_the_port_serves_only_metrics_and_health(tmp_path):
    site = {"site": {"id": "no-console"}, "devices": {"plant": {"connector": "memory", "points": POINTS}}}
    async with run_host(site, store_dir=tmp_path, http_port=0) as host:
        base = f"http://127.0.0.1:{host.http_address[1]}"
        async with aiohttp.ClientSession() as s:
            for path, status in (("/console/", 404), ("/console/api/login", 404), ("/healthz", 200), ("/metrics", 200)):
                async with s.get(base + path) as r:
                    assert r.status == status, path
