"""/status in headless Chromium: the page loads without console errors and its charts render
(the chart regions of a real screenshot are not blank)."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from PIL import Image, ImageChops
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from test_metrics_store import SendtimeServer, seed_kafka, seed_store

from pipeline.config import load_settings

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DATA_COLOUR = (0x4E, 0x79, 0xA7)  # transform bars and the freshness line (serving/status.py)


@pytest.fixture
def browser(tmp_path: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1500,1300",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _chart_pixels(shot: Image.Image, element) -> tuple[float, int]:
    """(share of the chart's pixels that are not white, pixels in the data colour #4e79a7)."""
    driver = element.parent
    ratio = shot.width / driver.execute_script("return window.innerWidth")
    # viewport coordinates: the screenshot shows the viewport, not the whole page
    r = driver.execute_script(
        "const b = arguments[0].getBoundingClientRect();return [b.left, b.top, b.right, b.bottom];", element
    )
    assert r[1] >= 0 and r[3] <= driver.execute_script("return window.innerHeight") + 1, "chart not in view"
    region = shot.crop(tuple(int(v * ratio) for v in r)).convert("RGB")
    area = max(region.width * region.height, 1)
    not_white = ImageChops.difference(region, Image.new("RGB", region.size, "white")).convert("L")
    drawn = not_white.point(lambda v: 255 if v > 12 else 0).histogram()[255]
    off_data = ImageChops.difference(region, Image.new("RGB", region.size, DATA_COLOUR)).convert("L")
    data = off_data.point(lambda v: 255 if v < 20 else 0).histogram()[255]
    return drawn / area, data


def test_status_page_renders_charts_without_console_errors(browser, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    seed_store(load_settings(home, environ={}), cycles=25, lag_seconds=300)
    seed_kafka(load_settings(home, environ={}))
    with SendtimeServer(home, workers=1, env={"SENDTIME_STATUS_PAGE_ACCESS": "open"}) as srv:
        browser.get(srv.url + "/status")
        assert browser.title == "sendtime status"
        errors = [e for e in browser.get_log("browser") if e["level"] in {"SEVERE", "WARNING"}]
        assert errors == [], errors

        charts = {cid: browser.find_element(By.ID, cid) for cid in ("chart-duration", "chart-freshness")}
        for cid, chart in charts.items():
            assert chart.size["width"] > 300 and chart.size["height"] > 150, (cid, chart.size)
        bars = browser.find_elements(By.CSS_SELECTOR, "#chart-duration rect.bar")
        assert len(bars) >= 25 * 4 // 2
        assert all(b.size["height"] >= 0 for b in bars) and any(b.size["height"] > 5 for b in bars)
        assert browser.find_elements(By.CSS_SELECTOR, "#chart-freshness circle.dot")

        for cid, chart in charts.items():
            browser.execute_script("arguments[0].scrollIntoView()", chart)
            png = browser.get_screenshot_as_png()
            (Path(os.environ.get("SENDTIME_SCREENSHOT_DIR", tmp_path)) / f"{cid}.png").write_bytes(png)
            share, data_pixels = _chart_pixels(Image.open(io.BytesIO(png)), chart)
            # bars or a line over the gridlines: the data is drawn, the box is not blank
            assert share > 0.02 and data_pixels > 800, (cid, share, data_pixels)

        # the header and the tables are there too
        assert re.search(r"\bv\d+\b", browser.find_element(By.ID, "card-version").text)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#cycles tbody tr")) == 20
        # the Kafka consumer: its state, the topics and the partitions' lag
        assert browser.find_element(By.CSS_SELECTOR, "#kafka-consumers .pill").text == "running"
        assert len(browser.find_elements(By.CSS_SELECTOR, "#kafka-topics tbody tr")) == 2
        assert len(browser.find_elements(By.CSS_SELECTOR, "#kafka-partitions tbody tr")) == 2
