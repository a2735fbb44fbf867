"""The console in a real browser: Debian's headless Chromium driven through chromedriver.

The one test module that may be skipped, and only when the browser is not installed
(`apt-get install -y chromium chromium-driver`; .ci/run installs it). Screenshots of each
view go to tests/output/.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from flusher.worker import Flusher
from tests.helpers import ROOT, Gateway, HttpClient, purchase

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
OUTPUT = ROOT / "tests" / "output"
DEADLINE_S = 30
NO_VALUE = "\u2013"  # what the page shows before a figure is known

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(
        "Chromium is not installed: apt-get install -y chromium chromium-driver",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="monokera-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Without the background-networking flags Chromium dials out at start; on a closed
    # network those connections are refused and slow everything down.
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait(driver: WebDriver, condition: object, message: str) -> None:
    # The page redraws as answers arrive: an element read mid-redraw is simply read again.
    WebDriverWait(
        driver, DEADLINE_S, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    ).until(
        lambda d: condition(d),  # type: ignore[operator]
        message,
    )


def text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def screenshot(driver: WebDriver, name: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(OUTPUT / f"console-{name}.png"))


async def test_overview_shows_the_purchases_and_a_rate(
    browser: WebDriver, gateway: Gateway, client: HttpClient, flusher: Flusher
) -> None:
    for i in range(12):
        assert (await client.post("/purchase", json=purchase(f"view-{i}"))).status_code == 200
    acknowledged = (await client.get("/console/api/overview")).json()["acknowledged_total"]
    await flusher.drain()
    await flusher.publish_stats()
    browser.get(f"{gateway.url}/console")
    wait(
        browser,
        lambda d: text(d, "acknowledged") == f"{acknowledged:,}",
        "the acknowledged count",
    )
    wait(
        browser,
        lambda d: text(d, "ack-rate") not in (NO_VALUE, "0") and text(d, "ack-p99").endswith(" ms"),
        "a non-zero rate and its latency",
    )
    screenshot(browser, "overview")
    wait(browser, lambda d: text(d, "stored") == "12", "the purchases stored")
    assert text(browser, "durability").startswith("durability: ")
    assert "redis ok" in text(browser, "redis-state")


async def test_trace_view_shows_the_purchase_persisted(
    browser: WebDriver, gateway: Gateway, client: HttpClient, flusher: Flusher
) -> None:
    ok = await client.post("/purchase", json=purchase("browser-traced", amount=4321))
    await flusher.drain()
    browser.get(f"{gateway.url}/console?tx=browser-traced")
    wait(browser, lambda d: text(d, "trace-stage") == "PERSISTED", "the persisted stage")
    details = text(browser, "trace-details")
    assert ok.headers["x-stream-entry-id"] in details
    assert ok.headers["x-request-id"] in details
    legs = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#legs tbody tr")]
    assert legs == ["23131342342342321 DEBIT 4,321", "23132131 CREDIT 4,321"]
    screenshot(browser, "trace")


async def test_account_view_shows_the_newest_entries_and_pages_to_older_ones(
    browser: WebDriver, gateway: Gateway, client: HttpClient, flusher: Flusher
) -> None:
    for i in range(25):
        reply = await client.post(
            "/purchase", json=purchase(f"acct-{i:02d}", customer="paged-buyer", amount=i + 1)
        )
        assert reply.status_code == 200
    await flusher.drain()
    browser.get(f"{gateway.url}/console?account=paged-buyer")

    def rows(driver: WebDriver) -> list[str]:
        return [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#entries tbody tr")]

    wait(browser, lambda d: len(rows(d)) == 20, "the first page")
    assert "acct-24" in rows(browser)[0]
    assert text(browser, "debit-count") == "25 purchases"
    screenshot(browser, "account")
    browser.find_element(By.ID, "older").click()
    wait(browser, lambda d: len(rows(d)) == 5, "the older page")
    assert "acct-04" in rows(browser)[0] and "acct-00" in rows(browser)[-1]
    assert text(browser, "page-label").startswith("page 2")
    assert not browser.find_element(By.ID, "older").is_enabled()


async def test_bad_ids_show_a_clear_not_found(browser: WebDriver, gateway: Gateway) -> None:
    browser.get(f"{gateway.url}/console?tx=no-such-purchase")
    wait(browser, lambda d: d.find_element(By.ID, "trace-error").is_displayed(), "the error")
    assert text(browser, "trace-error").startswith("Not found: no trace of transaction")
    screenshot(browser, "trace-not-found")
    browser.get(f"{gateway.url}/console?account=nobody-here")
    wait(browser, lambda d: d.find_element(By.ID, "account-error").is_displayed(), "the error")
    assert text(browser, "account-error") == (
        "Not found: no purchase or sale recorded for account nobody-here"
    )
    browser.get(f"{gateway.url}/console?account=not%20an%20account!")
    wait(
        browser,
        lambda d: text(d, "account-error").startswith("account is not valid"),
        "the validation error",
    )
