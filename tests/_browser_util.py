"""The harness of the browser-demo tests: the built page served on a local port, Debian's
Chromium driven by Playwright, and a page wrapper that waits on what the page shows and
collects every console error. Tests import the fixtures from here.
"""

from __future__ import annotations

import functools
import http.server
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest
from playwright import sync_api as playwright_sync  # the `browser` extra


ROOT = Path(__file__).resolve().parent.parent
WWW = ROOT / "wasm" / "www"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# Virtual time runs this many times faster than real time in the scenario tests (the
# speed slider's top position is 200x).
FAST = "100"
# Generous real-time bounds: the scenarios take a few seconds at top speed, more on a
# loaded machine (the page then simulates fewer events per frame).
WAIT_MS = 120_000


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


@pytest.fixture(scope="session")
def built_page() -> Path:
    if not (WWW / "pkg" / "blockmirror_wasm_bg.wasm").exists():
        subprocess.run([str(ROOT / "scripts" / "build-wasm.sh")], check=True)
    return WWW


@pytest.fixture(scope="module")
def base_url(built_page: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(built_page))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# Module scope, not session: Playwright's sync API keeps an asyncio loop running in this
# thread while it is open, which would break later tests that call asyncio.run().
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh all (apt-get install chromium)")
    with playwright_sync.sync_playwright() as p:
        # launch() gives every run a fresh temporary profile (user-data-dir).
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class PageUnderTest:
    """A loaded demo page plus every console error and uncaught exception it produced."""

    def __init__(self, page: object) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_function(
            "document.body.dataset.ready === 'true' || document.getElementById('boot').classList.contains('error')",
            timeout=WAIT_MS,
        )
        assert self.page.get_attribute("body", "data-ready") == "true", self.page.inner_text("#boot")

    def log_types(self) -> list[str]:
        return self.page.eval_on_selector_all("#log li", "els => els.map(e => e.dataset.type)")

    def status(self) -> str:
        return self.page.inner_text("#status")

    def describe(self) -> str:
        """What the page shows, for a failure message."""
        return (
            f"status {self.status()!r}, time {self.page.inner_text('#stat-time')!r}, "
            f"notice {self.page.inner_text('#notice')!r}, log {self.log_types()[-12:]}, errors {self.errors}"
        )

    def wait_for_log(self, selector: str) -> None:
        try:
            self.page.wait_for_selector(f"#log li{selector}", state="attached", timeout=WAIT_MS)
        except playwright_sync.TimeoutError as e:
            raise AssertionError(f"no log entry {selector}: {self.describe()}") from e

    def wait_for_status(self, status: str) -> None:
        try:
            self.page.wait_for_function(
                "s => document.getElementById('status').textContent === s", arg=status, timeout=WAIT_MS
            )
        except playwright_sync.TimeoutError as e:
            raise AssertionError(f"status never became {status!r}: {self.describe()}") from e

    def start_scenario(self, number: int, prediction: str | None = None) -> None:
        """Opens scenario `number` at top speed; answers its first question with the
        choice labelled `prediction` (the clock waits for an answer)."""
        self.page.click(f"#scenario-{number}")
        self.page.fill("#speed", FAST)
        if prediction is not None:
            self.predict(prediction)

    def predict(self, label: str) -> None:
        assert self.page.get_attribute("#play", "aria-pressed") == "false", "the clock waits for a prediction"
        self.page.locator("#scenario-text .choices").get_by_role("button", name=label, exact=True).click()
        # Answering starts the clock (at top speed the step it waited for may be over
        # already, so the clock is not asserted here; the keyboard test does).

    def wait_for_step(self, words: str) -> None:
        """Waits until the scenario's step text contains `words` (the story moved on)."""
        try:
            self.page.wait_for_function(
                "w => document.getElementById('scenario-text').textContent.includes(w)", arg=words, timeout=WAIT_MS
            )
        except playwright_sync.TimeoutError as e:
            step = self.page.inner_text("#scenario-text")
            raise AssertionError(f"the step never said {words!r}: {step!r}, {self.describe()}") from e


@pytest.fixture
def demo(browser: object, base_url: str) -> Iterator[PageUnderTest]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    under_test = PageUnderTest(page)
    under_test.open(base_url)
    try:
        yield under_test
    finally:
        context.close()
    assert under_test.errors == [], "the page logged errors"
