"""The fleet console in headless Chromium against a running fleet: click through a rollout and see it finish."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from edgeplane.sync.signing import generate_keypair, key_id, load_public_key

from edgeplane_cloud.broker import MqttPublisher
from edgeplane_cloud.console import ConsoleServer
from edgeplane_cloud.fleet import Fleet
from edgeplane_cloud.ingest import IngestWorker
from edgeplane_cloud.simulator import FleetSimulator
from edgeplane_cloud.testing import NatsCluster

from .conftest import query


@pytest.fixture
def browser(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not Path(driver_path).exists():
        pytest.fail("chromedriver is missing: apt-get install chromium chromium-driver (scripts/setup.sh does)")
    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


class Ingest:
    """An ingest worker on its own event loop thread (the test body drives the browser synchronously)."""

    def __init__(self, nats_urls: list[str], dsn: str):
        self.worker = IngestWorker(nats_urls, dsn, batch=64)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.worker.run(),), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.worker.stop)
        self.thread.join(20)


def test_console_shows_the_fleet_and_runs_a_rollout_to_the_end(nats_cluster: NatsCluster, clean_store: str,
                                                               tmp_path: Path, browser):
    dsn = clean_store
    key, pub = tmp_path / "cloud.key", tmp_path / "cloud.pub"
    generate_keypair(key, pub)
    public = load_public_key(pub)
    ingest = Ingest(nats_cluster.nats_urls, dsn)
    nats_cluster.wait_consumer()
    sim = FleetSimulator(nats_cluster.mqtt_urls, sites=6, points=3, record_readings=30, connections=1,
                         site_prefix="con", name="console", trusted_keys={key_id(public): public})
    console = ConsoleServer(dsn, port=0, broker=nats_cluster.mqtt_urls[2], signing_key=key)
    console.start()
    try:
        sim.wait_connected()
        sim.start_twins(nats_cluster.mqtt_urls[0])
        sim.publish_round(0)
        sim.publish_round(1)
        # a site whose reported state is JSON of the wrong shape: shown, never breaks the page
        with MqttPublisher(nats_cluster.mqtt_urls[1], "con-weird") as weird:
            weird.publish("edgeplane/con-weird/up/state", b'{"config": [1], "models": "x", "outbox": 5}', retain=False)
        deadline = time.monotonic() + 30
        while query(dsn, "SELECT count(*) FROM sites")[0][0] < 7 and time.monotonic() < deadline:
            time.sleep(0.1)
        fleet = Fleet(dsn)
        try:
            for i, site in enumerate(sim.sites):
                fleet.set_labels(site, {"region": "eu" if i < 4 else "us"})
            model = tmp_path / "m.onnx"
            x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
            graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])])
            onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
            fleet.add_model(model, "detector", "7")
        finally:
            fleet.close()

        browser.get(console.url)
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sites tr.site")) == 7)
        rows = {r.get_attribute("data-site"): r for r in browser.find_elements(By.CSS_SELECTOR, "#sites tr.site")}
        assert "region=eu" in rows["con-00000"].text and "ok" in rows["con-00000"].text
        assert "con-weird" in rows

        # plot a stream of a site
        rows["con-00001"].click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#plot path"))
        assert int(browser.find_element(By.CSS_SELECTOR, "#plot path").get_attribute("data-points")) == 60

        # click through a rollout to region eu
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rollout-model option"))
        Select(browser.find_element(By.ID, "rollout-model")).select_by_value("detector:7")
        browser.find_element(By.ID, "rollout-selector").send_keys("region=eu")
        batch = browser.find_element(By.ID, "rollout-batch")
        batch.clear()
        batch.send_keys("2")
        browser.find_element(By.ID, "start-rollout").click()
        wait.until(lambda d: "started" in d.find_element(By.ID, "message").text)
        done = wait.until(lambda d: [r for r in d.find_elements(By.CSS_SELECTOR, "#rollouts tr[data-state='done']")])
        assert "4/4 applied" in done[0].text
        assert all(sim.serving("detector")[s] == "7" for s in sim.sites[:4])
        assert all(sim.serving("detector")[s] is None for s in sim.sites[4:])
        wait.until(lambda d: "rollout 1: done" in d.find_element(By.ID, "events").text)

        # an operator rolls it back from the console
        done[0].find_element(By.CSS_SELECTOR, "button.rollback").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rollouts tr[data-state='rolled_back']"))
        # the first version of a model has nothing to return to: the console says so
        wait.until(lambda d: "had no earlier cloud version" in d.find_element(By.ID, "events").text)
        # a bad request is shown, not swallowed
        browser.find_element(By.ID, "rollout-selector").clear()
        browser.find_element(By.ID, "rollout-selector").send_keys("nolabel")
        browser.find_element(By.ID, "start-rollout").click()
        wait.until(lambda d: "label=value" in d.find_element(By.ID, "message").text)
    finally:
        console.stop()
        sim.close()
        ingest.close()
