"""Headless Chromium (Debian's chromium + chromium-driver, through Selenium) for the console tests.

`Console` drives the page the way a person does: controls are found by their visible label, buttons
by their text, and waits poll the page for what a person would wait to see (no sleeps).
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
# Debian's packages (scripts/setup_browser.sh installs them); CHROMIUM / CHROMEDRIVER override.
CHROMIUM = shutil.which(os.environ.get("CHROMIUM", "chromium")) or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which(os.environ.get("CHROMEDRIVER", "chromedriver")) or "/usr/bin/chromedriver"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
WAIT_S = 60.0
# Off: anything that would talk to a host other than the app under test.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--lang=en-GB",
)
T = TypeVar("T")


def _quote(text: str) -> str:
    """An XPath string literal for any text."""
    if "'" not in text:
        return f"'{text}'"
    return "concat(" + ', "\'", '.join(f"'{part}'" for part in text.split("'")) + ")"


class Console:
    def __init__(
        self, driver: webdriver.Chrome, url: str, shots: Path, *, width: int = 1280, zoom: float = 1.0
    ) -> None:
        self.driver = driver
        self.url = url  # http://127.0.0.1:PORT/api/console
        self.shots = shots
        # Headless windows are at least 500 px wide; an emulated viewport (CSS px at `zoom`) has no
        # minimum. Zoom 2 at width 640 is a 1280 px window at 200%.
        self.viewport: dict[str, Any] | None = None
        if width != 1280 or zoom != 1.0:
            self.viewport = {"width": width, "height": 900, "deviceScaleFactor": zoom, "mobile": False}

    # -- finding things as a person does ---------------------------------------------------------

    def wait(self, check: Callable[[], T | bool | None], what: str, timeout: float = WAIT_S) -> T:
        def probe(_: Any) -> Any:
            try:
                return check()
            except (NoSuchElementException, StaleElementReferenceException):
                return None

        found: T = WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            probe, message=f"waited {timeout}s for {what}\npage text:\n{self.text()}"
        )
        return found

    def text(self) -> str:
        try:
            return str(self.driver.find_element(By.TAG_NAME, "body").text)
        except Exception:
            return "(no page)"

    def main_text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "main").text)

    def see(self, text: str, timeout: float = WAIT_S) -> None:
        self.wait(lambda: text in self.main_text(), f"{text!r} on the page", timeout)

    def field(self, label: str) -> WebElement:
        """The control whose <label> reads exactly `label`."""

        def find() -> WebElement | None:
            for lab in self.driver.find_elements(By.XPATH, f"//label[normalize-space()={_quote(label)}]"):
                target = lab.get_attribute("for")
                if target and lab.is_displayed():
                    return self.driver.find_element(By.ID, target)
            return None

        return self.wait(find, f"a control labelled {label!r}")

    def type(self, label: str, value: str) -> None:
        control = self.field(label)
        control.clear()
        control.send_keys(value)

    def choose(self, label: str, option: str) -> None:
        control = self.field(label)
        self.wait(
            lambda: option in [o.text for o in Select(control).options], f"option {option!r} in {label!r}"
        )
        Select(control).select_by_visible_text(option)

    def button(self, text: str) -> WebElement:
        def find() -> WebElement | None:
            for el in self.driver.find_elements(By.XPATH, f"//button[normalize-space()={_quote(text)}]"):
                if el.is_displayed():
                    return el
            return None

        return self.wait(find, f"a button {text!r}")

    def buttons(self) -> list[str]:
        return [
            str(b.text) for b in self.driver.find_elements(By.CSS_SELECTOR, "main button") if b.is_displayed()
        ]

    def click(self, text: str) -> None:
        self.button(text).click()

    def link(self, text: str) -> WebElement:
        return self.wait(
            lambda: next(
                (
                    el
                    for el in self.driver.find_elements(By.XPATH, f"//a[normalize-space()={_quote(text)}]")
                    if el.is_displayed()
                ),
                None,
            ),
            f"a link {text!r}",
        )

    def alert_text(self) -> str:
        return str(
            self.wait(lambda: self.driver.find_element(By.CSS_SELECTOR, "main [role=alert]"), "an alert").text
        )

    def go(self, hash_: str) -> None:
        self.driver.get(f"{self.url}{hash_}")
        if self.viewport:
            # A page load resets it.
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", self.viewport)

    # -- evidence ------------------------------------------------------------------------------

    def shot(self, name: str, *, full_page: bool = False) -> Path:
        """A PNG of the viewport, or of the whole page (`full_page`)."""
        path = self.shots / f"{name}.png"
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            params.update(
                captureBeyondViewport=True,
                clip={
                    "x": 0,
                    "y": 0,
                    "width": size["width"],
                    "height": min(size["height"], 4000),
                    "scale": 1,
                },
            )
        data = self.driver.execute_cdp_cmd("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def axe(self) -> list[dict[str, Any]]:
        """axe-core's violations on the current screen (the script is injected by the test only)."""
        self.driver.execute_script(AXE.read_text(encoding="utf-8"))
        result = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']})"
            ".then((r) => done(r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.map((n) => n.target.join(' '))}))))"
            ".catch((e) => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));"
        )
        return list(result)

    def resources(self) -> list[str]:
        """Every URL the page loaded or called (Resource Timing), to prove no other origin is used."""
        return list(
            self.driver.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
        )

    def console_errors(self) -> list[str]:
        return [
            str(entry["message"])
            for entry in self.driver.get_log("browser")  # type: ignore[no-untyped-call]
            if entry["level"] == "SEVERE" or "Content Security Policy" in str(entry["message"])
        ]


@contextmanager
def chromium(download_dir: Path) -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium (its own profile, downloads into `download_dir`)."""
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(download_dir), "download.prompt_for_download": False}
    )
    # Selenium Manager would look for a driver online; the Debian one is named explicitly.
    os.environ.setdefault("SE_OFFLINE", "true")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)}
        )
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
