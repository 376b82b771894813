"""Fixtures for the console tests: users with argon2 hashes, a solar site running in a thread
(so that blocking selenium calls and the host's event loop run side by side), headless Chromium;
and the protocol plugins' simulated devices (opt-in fixtures, imported by name) for commissioning."""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import threading
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest

from edgeplane.console.auth import hash_password
from edgeplane_modbus.testing import sunspec_inverter  # noqa: F401 - a fixture
from edgeplane_opcua.testing import opcua_machine  # noqa: F401 - a fixture

OPERATOR = ("olga", "operator-secret-1")
VIEWER = ("victor", "viewer-secret-1")


@pytest.fixture(scope="session")
def operator() -> tuple[str, str]:
    return OPERATOR


@pytest.fixture(scope="session")
def viewer() -> tuple[str, str]:
    return VIEWER


@pytest.fixture(scope="session")
def user_hashes() -> dict[str, str]:
    return {name: hash_password(password) for name, password in (OPERATOR, VIEWER)}


@pytest.fixture(scope="session")
def console_users(user_hashes) -> dict[str, Any]:
    """The ``console.users`` section: one operator, one viewer."""
    return {OPERATOR[0]: {"role": "operator", "password_hash": user_hashes[OPERATOR[0]]},
            VIEWER[0]: {"role": "viewer", "password_hash": user_hashes[VIEWER[0]]}}


class SiteThread:
    """A host (and its plant simulator) on an event loop of its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="console-test-site", daemon=True)
        self.thread.start()
        self.host: Any = None
        self.stack: Any = None  # what close() unwinds: the site's parts, entered in the loop

    def call(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, func: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run a plain function on the host's loop (reading host state safely)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def wrapper() -> None:
            try:
                future.set_result(func())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                future.set_exception(e)

        self.loop.call_soon_threadsafe(wrapper)
        return future.result(timeout)

    def close(self) -> None:
        if self.stack is not None:
            self.call(self.stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def solar_site(tmp_path_factory, console_users):
    """The solar reference site's parts (3 SunSpec inverters and a weather station on Modbus TCP,
    forecast with the shipped ONNX model on the inference service, diagnosis, dispatch) with a
    console; plant time runs 900x so that a forecast comes every second."""
    import contextlib

    from edgeplane_modbus import plugin as modbus_plugin
    from edgeplane_solar import plugin as solar_plugin
    from edgeplane_solar.simulator import TMY_LOCATION, TmyWeather
    from edgeplane_solar.sites import plant_site
    from edgeplane_solar.testing import running_plant

    from edgeplane.testing import run_host

    from edgeplane.testing import Mosquitto

    tmp = tmp_path_factory.mktemp("console-site")
    broker = Mosquitto(tmp / "broker").start()
    runner = SiteThread()

    async def start() -> None:
        stack = contextlib.AsyncExitStack()
        runner.stack = stack
        start_ts = pd.Timestamp("2021-06-10 08:00", tz=TMY_LOCATION["timezone"]).timestamp()
        _, ports = await stack.enter_async_context(running_plant(weather=TmyWeather(), start=start_ts, speed=900))
        site = plant_site(ports, poll="500ms", site_id="solar-console")
        site["inference"] = {"providers": ["cpu"], "models": str(tmp / "models")}
        site["console"] = {"users": console_users, "profiles_dir": str(tmp / "profiles")}
        # the uplink to a real broker, with the reference site's policy: the overview shows its backlog and acks
        site["sync"] = {"uplink": {"url": broker.url}, "durability": "process", "report_interval": "5s",
                        "policy": [{"topics": "alerts/#", "mode": "events", "priority": "high", "ttl": "30d"},
                                   {"topics": "forecast/#", "mode": "events", "priority": "normal", "ttl": "1d"},
                                   {"topics": "inv+/103.W", "mode": "aggregate", "window": "5s", "stats": ["mean"],
                                    "priority": "normal", "ttl": "7d"}]}
        runner.host = await stack.enter_async_context(
            run_host(site, plugins=[modbus_plugin, solar_plugin], store_dir=tmp / "store", http_port=0))

    try:
        runner.call(start())
        runner.base_url = f"http://127.0.0.1:{runner.host.http_address[1]}"  # type: ignore[attr-defined]
        yield runner
    finally:
        runner.close()
        broker.stop()


def chromium_options(profile_dir: Path) -> Any:
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    return options


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium driven by selenium through Debian's /usr/bin/chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not Path(driver_path).exists():
        pytest.fail("chromedriver is missing: apt-get install chromium chromium-driver (scripts/setup.sh does)")
    driver = webdriver.Chrome(service=Service(driver_path),
                              options=chromium_options(tmp_path_factory.mktemp("chromium-profile")))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
