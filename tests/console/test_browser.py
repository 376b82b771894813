"""The site console end to end in headless Chromium against a running solar site.

Set EDGEPLANE_CONSOLE_SCREENSHOTS=docs/console to (re)write the README's screenshots.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

SHOTS = os.environ.get("EDGEPLANE_CONSOLE_SCREENSHOTS")


def _wait(driver, timeout: float = 20):
    return WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))


def _shot(driver, name: str, whole: bool = False) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        if whole:  # the whole page, up to a height a README can show
            height = min(driver.execute_script("return document.documentElement.scrollHeight"), 1600)
            driver.set_window_size(1400, height + 140)
        driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))
        driver.set_window_size(1400, 1000)


def _login(driver, base_url: str, user: tuple[str, str]) -> None:
    driver.get(base_url + "/console/")
    # the page asks the host who is logged in first: wait for its answer (a form or a session)
    _wait(driver).until(lambda d: d.find_element(By.ID, "logout").is_displayed() or d.find_element(By.ID, "login-user").is_displayed())
    if driver.find_element(By.ID, "logout").is_displayed():
        driver.find_element(By.ID, "logout").click()
    _wait(driver).until(ec.visibility_of_element_located((By.ID, "login-user")))
    driver.find_element(By.ID, "login-user").send_keys(user[0])
    driver.find_element(By.ID, "login-password").send_keys(user[1])
    driver.find_element(By.ID, "login-submit").click()
    _wait(driver).until(lambda d: d.find_element(By.ID, "who").text.startswith(user[0]))


def _tab(driver, name: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#tabs button[data-tab='{name}']").click()
    _wait(driver).until(lambda d: d.find_element(By.ID, name).is_displayed())


def _write(driver, topic: str, value: str) -> str:
    row = driver.find_element(By.CSS_SELECTOR, f"tr[data-topic='{topic}']")
    box = row.find_element(By.CSS_SELECTOR, "input.write-value")
    box.clear()
    box.send_keys(value)
    row.find_element(By.CSS_SELECTOR, "button.write").click()
    result = driver.find_element(By.ID, "write-result")
    _wait(driver).until(lambda d: "…" not in result.text and result.text.strip())
    return result.text


def test_a_wrong_password_is_refused_on_the_page(browser, solar_site, operator):
    browser.get(solar_site.base_url + "/")  # the root sends the browser to the console
    _wait(browser).until(ec.visibility_of_element_located((By.ID, "login-user")))
    assert browser.current_url.endswith("/console/")
    browser.find_element(By.ID, "login-user").send_keys(operator[0])
    browser.find_element(By.ID, "login-password").send_keys("not-the-password")
    browser.find_element(By.ID, "login-submit").click()
    _wait(browser).until(lambda d: d.find_element(By.ID, "login-error").text)
    assert "wrong user name or password" in browser.find_element(By.ID, "login-error").text
    _shot(browser, "login")


def test_overview_shows_every_part(browser, solar_site, operator):
    _login(browser, solar_site.base_url, operator)
    parts = solar_site.run(lambda: sorted(solar_site.host.parts))
    assert {"device:inv1", "device:met", "solution:forecast", "solution:diagnosis", "solution:dispatch"} <= set(parts)
    _wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#ov-parts tbody tr")) == len(parts))
    shown = sorted(r.get_attribute("data-part") for r in browser.find_elements(By.CSS_SELECTOR, "#ov-parts tbody tr"))
    assert shown == parts
    states = [r.find_element(By.CSS_SELECTOR, ".state").text for r in browser.find_elements(By.CSS_SELECTOR, "#ov-parts tbody tr")]
    assert set(states) <= {"ok", "degraded", "starting", "failed"} and "ok" in states
    links = browser.find_element(By.ID, "ov-links").text
    assert "inv1" in links and "modbus" in links
    # the shipped forecast model, loaded by the inference service, with its version
    _wait(browser, 30).until(lambda d: "solar-forecast" in d.find_element(By.ID, "ov-models").text)
    assert "from the cloud" in browser.find_element(By.ID, "ov-config").text
    # the uplink: link state, backlog per priority, and the time of the broker's last acknowledgement
    _wait(browser, 20).until(lambda d: "ago" in d.find_element(By.ID, "ov-sync").text)
    sync = browser.find_element(By.ID, "ov-sync").text
    assert "up" in sync and "backlog" in sync and "high " in sync
    _shot(browser, "overview", whole=True)


def test_a_live_value_changes_on_the_page(browser, solar_site, operator):
    _login(browser, solar_site.base_url, operator)
    _tab(browser, "devices")
    cell = (By.CSS_SELECTOR, "tr[data-topic='met/time'] td.value")
    _wait(browser).until(lambda d: d.find_element(*cell).text not in ("", "–"))
    first = browser.find_element(*cell).text
    # the page is not reloaded: the value arrives by server-sent events
    _wait(browser, 10).until(lambda d: d.find_element(*cell).text not in (first, "–"))
    quality = browser.find_element(By.CSS_SELECTOR, "tr[data-topic='met/time'] td.quality").text
    assert quality == "good"
    row = browser.find_element(By.CSS_SELECTOR, "tr[data-topic='met/poa']").text
    assert "W/m2" in row
    # a point's history as a plot
    browser.find_element(By.CSS_SELECTOR, "tr[data-topic='met/poa'] button.link").click()
    _wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#history-plot path.series"))
    assert len(browser.find_element(By.CSS_SELECTOR, "#history-plot path.series").get_attribute("d")) > 10


def test_an_operators_out_of_range_write_is_rejected_with_the_limit_and_audited(browser, solar_site, operator):
    _login(browser, solar_site.base_url, operator)
    _tab(browser, "devices")
    _wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-topic='plant/limit_pct'] button.write"))
    limits = browser.find_element(By.CSS_SELECTOR, "tr[data-topic='plant/limit_pct']").text
    assert "max 100" in limits
    text = _write(browser, "plant/limit_pct", "150")
    assert "rejected" in text and "above the maximum 100" in text, text
    _shot(browser, "devices")
    # an allowed write is carried out and read back
    text = _write(browser, "plant/limit_pct", "80")
    assert " ok " in f" {text} " and "read back 80" in text, text
    _tab(browser, "audit")
    _wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")) >= 2)
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")]
    rejected = [r for r in rows if "plant/limit_pct" in r and "rejected" in r]
    assert rejected and f"console:{operator[0]}" in rejected[0] and "maximum 100" in rejected[0], rows
    records = solar_site.call(solar_site.host.store.audit(50))
    assert any(r["source"] == f"console:{operator[0]}" and r["value"] == 150 and r["status"] == "rejected" for r in records)
    _shot(browser, "audit")


def test_a_viewers_write_is_refused(browser, solar_site, viewer):
    _login(browser, solar_site.base_url, viewer)
    _tab(browser, "devices")
    _wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-topic='plant/limit_pct'] button.write"))
    assert browser.find_element(By.ID, "viewer-note").is_displayed()
    text = _write(browser, "plant/limit_pct", "50")
    assert "refused" in text and "viewer" in text, text
    # nothing reached the guarded path: no audit row carries the viewer (the dispatch solution's own
    # writes keep coming, so the log is not frozen)
    records = solar_site.call(solar_site.host.store.audit(2000))
    assert records and not [r for r in records if r["source"] == f"console:{viewer[0]}"]
    assert solar_site.host.metrics.value("edgeplane_console_refused_total", reason="role") >= 1


def test_the_solar_panel_shows_a_forecast_plot(browser, solar_site, operator):
    _login(browser, solar_site.base_url, operator)
    forecast = solar_site.host.solution("forecast")
    deadline = time.monotonic() + 40
    while solar_site.run(lambda: (forecast.latest or {}).get("model")) != "solar-forecast":
        assert time.monotonic() < deadline, "no model forecast within 40 s"
        time.sleep(0.5)
    time.sleep(3)  # a few forecasts, so that one-step-ahead values line up with measured steps
    _tab(browser, "panels")
    panel = (By.CSS_SELECTOR, ".panel[data-type='solar.forecast']")
    _wait(browser, 20).until(lambda d: d.find_elements(*panel) and d.find_element(*panel).find_elements(By.CSS_SELECTOR, "path.band"))
    node = browser.find_element(*panel)
    assert "Forecast against measured" in node.text
    series = node.find_elements(By.CSS_SELECTOR, "path.series")
    assert len(series) == 4 and all(len(s.get_attribute("d")) > 10 for s in series[:3])
    assert "P10-P90" in node.text and "measured (15-min mean)" in node.text
    assert node.find_element(By.CSS_SELECTOR, "path.band").get_attribute("d").endswith("Z")
    inverters = browser.find_element(By.CSS_SELECTOR, ".panel[data-type='solar.diagnosis']").text
    assert "performance index" in inverters.lower() and "inv3" in inverters
    _shot(browser, "solar-panel")


@pytest.mark.parametrize("path", ["/console/static/console.js", "/console/static/console.css"])
def test_every_asset_comes_from_the_host(browser, solar_site, path):
    import urllib.request

    with urllib.request.urlopen(solar_site.base_url + path, timeout=5) as response:
        body = response.read().decode()
    assert "http://" not in body.replace("http://www.w3.org/2000/svg", "") and "https://" not in body


def test_commissioning_scans_a_sunspec_inverter_and_saves_a_profile(browser, solar_site, operator):
    import yaml

    _login(browser, solar_site.base_url, operator)
    _tab(browser, "commissioning")
    target = solar_site.host.site.devices["inv2"].url.removeprefix("tcp://")
    browser.find_element(By.ID, "modbus-target").send_keys(target)
    browser.find_element(By.CSS_SELECTOR, "#modbus-form button").click()
    _wait(browser, 30).until(lambda d: d.find_element(By.ID, "scan-result").is_displayed())
    assert "SunSpec at 40000" in browser.find_element(By.ID, "scan-status").text
    picked = []
    for row in browser.find_elements(By.CSS_SELECTOR, "#scan-table tbody tr"):
        name = row.find_element(By.CSS_SELECTOR, ".pick-name").get_attribute("value")
        if name in ("103.W", "103.TmpCab", "123.WMaxLimPct"):
            row.find_element(By.CSS_SELECTOR, ".pick").click()
            picked.append(name)
    assert len(picked) == 3
    browser.find_element(By.ID, "profile-name").send_keys("plant-inverter")
    _shot(browser, "commissioning")
    browser.find_element(By.CSS_SELECTOR, "#profile-form button").click()
    _wait(browser).until(lambda d: d.find_element(By.ID, "profile-status").text)
    status = browser.find_element(By.ID, "profile-status").text
    assert status.startswith("saved ") and "plant-inverter.yaml" in status, status
    path = Path(status.split()[1].rstrip(":"))
    profile = yaml.safe_load(path.read_text())
    assert profile["connector"] == "modbus" and set(profile["points"]) == set(picked)
    assert profile["points"]["123.WMaxLimPct"]["access"] == "rw"
