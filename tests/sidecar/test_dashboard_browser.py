"""The dashboard in a real browser: Debian's headless Chromium driven by selenium.

The relay and the sidecar run as processes on loopback over a store with demo traffic. One browser
session: log in, visit every page (no console errors, charts drawn), send a mail and fetch its
pixel and watch the overview change without a reload, check the XSS campaign shows as text, log
out. A screenshot of each page lands in the test's tmp dir; with OUTPOST_SCREENSHOTS=1 the
overview and campaign shots also refresh sidecar/dashboard/screenshots/ (the README's pictures).
Without chromium and chromedriver the test skips, or fails under CI (.ci/run installs them).
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.config import Config, parse_config
from tests import storeview
from tests.conftest import store_section, store_toml
from tests.pgserver import run_in_thread
from tests.sidecar import dashboard_demo
from tests.test_service import free_ports

ROOT = Path(__file__).parents[2]
SHOTS = ROOT / "sidecar" / "dashboard" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "browser-admin-token"


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, DRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        message = f"the browser tests need {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI: .ci/run installs chromium and chromium-driver)")
        pytest.skip(message)


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def service(tmp_path: Path, store_backend: str) -> Iterator[dict[str, Any]]:
    _require_browser()
    relay_port, http_port = free_ports(2)
    (tmp_path / "secrets").write_text("browser-test-secret-0123456789\n")
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = parse_config({"store": store_section(tmp_path)})  # the test's backend
    run_in_thread(dashboard_demo.build(config.store))
    conf = tmp_path / "outpost.toml"
    conf.write_text(
        f'[relay]\nlisten = ["127.0.0.1:{relay_port}"]\nhostname = "browser.test"\n'
        + store_toml(config)
        + f'[delivery]\ntransport = "file"\ndirectory = "{tmp_path / "outbox"}"\n'
        'poll_interval = "100ms"\nrender_processes = 0\n'
        f'[tracking]\nsecrets_file = "{tmp_path / "secrets"}"\n'
        f'base_url = "http://127.0.0.1:{http_port}"\n'
        f'[sidecar]\nlisten = "127.0.0.1:{http_port}"\nadmin_token_file = "{tmp_path / "token"}"\n'
    )
    procs, logs = [], []
    for module in ("relay", "sidecar"):
        log = (tmp_path / f"{module}.log").open("wb")
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", module, "--config", str(conf)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        )
    try:
        _wait_port(relay_port)
        _wait_port(http_port)
        yield {
            "base": f"http://127.0.0.1:{http_port}",
            "relay_port": relay_port,
            "config": config,
            "outbox": tmp_path / "outbox",
            "shots": tmp_path,
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs:
            log.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1360,1000"):
        options.add_argument(arg)
    options.add_argument("--disable-dev-shm-usage")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def _console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _wait(predicate: Any, timeout: float = 10.0, step: float = 0.05) -> Any:
    """Poll until predicate returns something true; an element not there yet is a no."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        WebDriverException,
    )

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (NoSuchElementException, StaleElementReferenceException):
            value = None
        except WebDriverException as exc:  # asked mid-navigation (a login's redirect): again
            if "aborted by navigation" not in str(exc):
                raise
            value = None
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


def _shot(driver: Any, service: dict[str, Any], name: str, height: int | None = None) -> Path:
    if height is None:
        height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1360, min(max(int(height) + 160, 700), 4000))  # + the window frame
    path = Path(service["shots"]) / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1360, 1000)
    return path


def _canvas_drawn(driver: Any, chart_id: str) -> bool:
    """True when the chart's canvas has pixels that are not blank."""
    script = """
      const c = document.querySelector('#' + arguments[0] + ' canvas');
      if (!c || !c.width || !c.height) return false;
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let inked = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) inked++;
      return inked > 500;
    """
    return bool(driver.execute_script(script, chart_id))


def _figure(driver: Any, key: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, f'[data-figure="{key}"]').text)


def test_dashboard_in_a_browser(service: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    base = service["base"]
    driver = browser

    # not logged in: every page sends to the login form
    driver.get(base + "/dashboard/campaigns")
    assert "/dashboard/login" in driver.current_url
    _shot(driver, service, "login")
    driver.find_element(By.ID, "token").send_keys("wrong-token")
    driver.find_element(By.ID, "login").click()
    refused = _wait(lambda: driver.find_element(By.CLASS_NAME, "error"))  # the form's answer
    assert "not the admin token" in refused.text
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "login").click()
    _wait(lambda: driver.current_url.endswith("/dashboard/campaigns"))
    cookie = driver.get_cookie("outpost_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert driver.get_log("browser") is not None  # clear what the login pages logged

    # every page renders without console errors; the charts draw
    driver.get(base + "/dashboard/?range=7d&bucket=hour")
    _wait(lambda: driver.execute_script("return document.body.dataset.ready === '1'"))
    _wait(
        lambda: (
            _canvas_drawn(driver, "chart-delivery") and _canvas_drawn(driver, "chart-engagement")
        )
    )
    _wait(lambda: "on" in driver.find_element(By.ID, "live").get_attribute("class"))
    assert _console_errors(driver) == []
    _shot(driver, service, "overview")

    driver.get(base + "/dashboard/campaigns")
    rows = driver.find_elements(By.CSS_SELECTOR, "#campaigns tbody tr")
    assert len(rows) == 3
    # the XSS campaign's name shows as text, and nothing ran
    assert any(dashboard_demo.XSS in r.text for r in rows)
    assert (
        driver.execute_script(
            "return document.querySelectorAll('script:not([src]):not([type])').length"
        )
        == 0
    )
    _shot(driver, service, "campaigns")

    driver.find_element(By.LINK_TEXT, dashboard_demo.XSS).click()
    _wait(lambda: driver.execute_script("return document.body.dataset.ready === '1'"))
    assert driver.find_element(By.ID, "campaign-name").text == dashboard_demo.XSS
    _wait(lambda: _canvas_drawn(driver, "chart-campaign"))
    assert _console_errors(driver) == []

    driver.get(base + "/dashboard/campaign?name=spring-sale")
    _wait(lambda: _canvas_drawn(driver, "chart-campaign"))
    clients = driver.find_element(By.ID, "clients").text
    assert "Outlook" in clients and "mobile" in clients and "webmail" in clients
    assert "userunknown" in driver.find_element(By.ID, "bounces").text
    assert "gmail.com" in driver.find_element(By.ID, "domains").text
    assert "https://shop.example.com/sale" in driver.find_element(By.ID, "links").text
    assert _console_errors(driver) == []
    _shot(driver, service, "campaign")

    for path, name, marker in (
        ("/dashboard/messages?q=spring-sale: issue 1", "messages", "messages"),
        ("/dashboard/messages/DEMO00001", "message", "timeline"),
        (
            "/dashboard/recipient?address=user1-0@" + _domain_of(service, "DEMO00001"),
            "recipient",
            "recipient-deliveries",
        ),
        ("/dashboard/queue", "queue", "queue-deferred"),
        ("/dashboard/suppressions", "suppressions", "suppressions"),
    ):
        driver.get(base + path)
        assert driver.find_element(By.ID, marker).is_displayed(), path
        assert _console_errors(driver) == [], path
        _shot(driver, service, name)

    # queue: hold a deferred message, then delete it through the confirmation step
    driver.get(base + "/dashboard/queue")
    first = driver.find_element(By.CSS_SELECTOR, "#queue-deferred tbody tr td a").text
    driver.find_element(By.CSS_SELECTOR, '#queue-deferred button[data-action="hold"]').click()
    _wait(lambda: "hold: " + first in driver.find_element(By.CLASS_NAME, "flash").text)
    assert first in driver.find_element(By.ID, "queue-held").text
    driver.find_element(By.CSS_SELECTOR, "#queue-held a.danger").click()
    driver.find_element(By.ID, "confirm-delete").click()
    _wait(lambda: "delete: " + first in driver.find_element(By.CLASS_NAME, "flash").text)
    assert first not in driver.find_element(By.ID, "queue-held").text
    assert _console_errors(driver) == []

    # live: a mail sent now, its pixel fetched: the overview changes without a reload
    driver.get(base + "/dashboard/?range=24h&bucket=hour")
    _wait(lambda: "on" in driver.find_element(By.ID, "live").get_attribute("class"))
    before_processed = _figure(driver, "processed")
    before_opens = _figure(driver, "opens.total")
    driver.execute_script("window.__same_page = true")
    pixel = _send_and_find_pixel(service)
    _wait(lambda: _figure(driver, "processed") != before_processed, timeout=10)
    time.sleep(2.5)  # an open within 2 s of delivery is a prefetch (rule too-soon), not a person
    with urllib.request.urlopen(
        urllib.request.Request(pixel, headers={"User-Agent": dashboard_demo.PEOPLE[1]})
    ) as r:
        assert r.status == 200
    recorded_at = _wait(lambda: _event_recorded(service["config"], "open"), timeout=15, step=0.02)
    _wait(lambda: _figure(driver, "opens.total") != before_opens, timeout=5, step=0.02)
    seen_after = time.time() - recorded_at
    assert seen_after < 2.0, f"the open showed {seen_after:.2f} s after it was recorded"
    assert driver.execute_script("return window.__same_page === true")  # no reload happened
    assert _console_errors(driver) == []

    # logout ends the session: the pages send to the login form again
    driver.find_element(By.ID, "logout").click()
    _wait(lambda: "/dashboard/login" in driver.current_url)
    driver.get(base + "/dashboard/")
    assert "/dashboard/login" in driver.current_url

    for name in (
        "login",
        "overview",
        "campaigns",
        "campaign",
        "messages",
        "message",
        "recipient",
        "queue",
        "suppressions",
    ):
        assert (Path(service["shots"]) / f"{name}.png").stat().st_size > 5000
    if os.environ.get("OUTPOST_SCREENSHOTS"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        for name in ("overview", "campaign"):
            shutil.copy(Path(service["shots"]) / f"{name}.png", SHOTS / f"{name}.png")


def _domain_of(service: dict[str, Any], queue_id: str) -> str:
    recipient = storeview.value(
        service["config"],
        "SELECT d.recipient FROM deliveries d JOIN messages m ON m.id = d.message_id"
        " WHERE m.queue_id = ? ORDER BY d.id LIMIT 1",
        queue_id,
    )
    return str(recipient).rpartition("@")[2]


def _send_and_find_pixel(service: dict[str, Any]) -> str:
    raw = (
        b"From: news@shop.example.com\r\nTo: live@example.org\r\nSubject: live one\r\n"
        b"X-Outpost-Campaign: spring-sale\r\nX-Outpost-Stream: broadcast\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b'<html><body><p>Hello <a href="https://shop.example.com/live">now</a></p></body></html>\r\n'
    )
    with smtplib.SMTP("127.0.0.1", service["relay_port"], timeout=10) as client:
        client.sendmail("news@shop.example.com", ["live@example.org"], raw)

    def pixel() -> str | None:
        for f in Path(service["outbox"]).glob("**/*"):
            if f.is_file():
                found = re.search(rb'src="(http://127\.0\.0\.1:\d+/o/[^"]+)"', f.read_bytes())
                if found:
                    return found.group(1).decode()
        return None

    return str(_wait(pixel, timeout=10))


def _event_recorded(config: Config, kind: str) -> float | None:
    """When the newest event of that kind appeared in the store (polled: the time we saw it)."""
    count = storeview.value(
        config,
        "SELECT count(*) FROM events WHERE type = ? AND recipient = 'live@example.org'",
        kind,
    )
    return time.time() if count else None
