"""Item 5 of issue 14: a secret resolved from ${env:}/${file:} never leaves the host in clear:
not in /healthz, not in a debug traceback, not in a JSON log's exception or extra fields, and
not after a reload brought in a new one."""

from __future__ import annotations

import io
import json
import logging

import aiohttp
import pytest

from edgeplane import Connector, DeviceConfig, hookimpl
from edgeplane.config import SecretRedactor
from edgeplane.logs import configure_logging
from edgeplane.testing import wait_for

SECRET = "hunter2-correct-horse"
FAST = {"backoff_initial": 0.05, "backoff_max": 0.1}


class Leaky(Connector):
    """A connector whose login error carries the password, as real client libraries' errors do."""

    class Config(DeviceConfig):
        password: str

    async def start(self):
        raise ConnectionRefusedError(f"login refused for password {self.config.password!r}")


class LeakyPlugin:
    __name__ = "leaky"

    @hookimpl
    def edgeplane_register_connectors(self, register):
        register("leaky", Leaky)


def leaky_site(variable: str) -> dict:
    return {"site": {"id": "s"}, "supervision": FAST,
            "devices": {"d": {"connector": "leaky", "password": f"${{env:{variable}}}"}}}


async def test_healthz_redacts_exception_text(edgeplane_host, monkeypatch):
    monkeypatch.setenv("LEAKY_PASSWORD", SECRET)
    async with edgeplane_host(leaky_site("LEAKY_PASSWORD"), plugins=[LeakyPlugin()], http_port=0) as host:
        await wait_for(lambda: host.health()["device:d"]["restarts"] >= 1, timeout=10)
        address, port = host.http_address[:2]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{address}:{port}/healthz") as response:
                body = await response.text()
    assert "login refused" in body  # the error is shown...
    assert SECRET not in body and "***" in body  # ...without the password


async def test_a_secret_a_reload_brings_in_is_redacted_too(edgeplane_host, edgeplane_site, monkeypatch):
    monkeypatch.setenv("LEAKY_NEW", SECRET + "-new")
    first = {"site": {"id": "s"}, "supervision": FAST,
             "devices": {"m": {"connector": "memory", "points": {"x": {"value": 1.0}}}}}
    async with edgeplane_host(first, plugins=[LeakyPlugin()], http_port=0) as host:
        second = dict(first, devices={**first["devices"], **leaky_site("LEAKY_NEW")["devices"]})
        from edgeplane.config import parse_site

        await host.reload(parse_site(second, host.registry, source="<test>"))
        await wait_for(lambda: host.health().get("device:d", {}).get("restarts", 0) >= 1, timeout=10)
        assert SECRET + "-new" not in host.redactor.redact(f"x {SECRET}-new y")
        address, port = host.http_address[:2]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{address}:{port}/healthz") as response:
                body = await response.text()
    assert SECRET not in body and "***" in body


def _logged(fmt: str, capsys, emit) -> str:
    redactor = SecretRedactor()
    redactor.add(SECRET)
    configure_logging("debug", fmt, redactor)
    try:
        emit(logging.getLogger("edgeplane.test.secrets"))
    finally:
        configure_logging("warning", "text", None)
    return capsys.readouterr().err


def _fail() -> None:
    raise RuntimeError(f"cannot connect with token {SECRET}")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_tracebacks_are_redacted(fmt: str, capsys):
    def emit(log: logging.Logger) -> None:
        try:
            _fail()
        except RuntimeError:
            log.debug("connect failed", exc_info=True)
            log.exception("connect failed")

    out = _logged(fmt, capsys, emit)
    assert "Traceback" in out and "cannot connect with token" in out
    assert SECRET not in out


def test_json_extra_fields_are_redacted(capsys):
    out = _logged("json", capsys, lambda log: log.warning("status", extra={"url": f"mqtt://u:{SECRET}@broker",
                                                                          "detail": {"token": SECRET}}))
    record = json.loads(out.strip().splitlines()[-1])
    assert SECRET not in out and record["url"] == "mqtt://u:***@broker"


def test_a_secret_with_json_special_characters_is_redacted_in_json_logs(capsys):
    redactor = SecretRedactor()
    tricky = 'pa"ss\\word'
    redactor.add(tricky)
    stream = io.StringIO()
    configure_logging("info", "json", redactor)
    handler = logging.getLogger().handlers[0]
    handler.setStream(stream)  # type: ignore[attr-defined]
    try:
        logging.getLogger("edgeplane.test.secrets").info("login with %s", tricky)
    finally:
        configure_logging("warning", "text", None)
    assert json.loads(stream.getvalue())["message"] == "login with ***"
