"""``serve(..., web=)`` / ``blockmirror serve --web``: the teaching page's live mode against
a real server. Headless Chromium opens ``/live``, a mirror job runs over QMP while an NBD
client writes, and the page must show what the job does: dirty chunks, chunks being copied
(to a target held by nbdkit's pause filter), chunks written while being copied, the job's
events as they happen, clean chunks at the end; and the status, grid and legend on screen
at phone and desktop sizes (screenshots in artifacts/). Needs Chromium and Playwright as
tests/test_browser.py does, and nbdkit."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

import blockmirror as bm
from blockmirror import _web
from _serve_util import wait_until
from test_browser import ARTIFACTS, PageUnderTest, browser  # noqa: F401 - the fixture, shared

MiB = 1 << 20
GRANULARITY = 64 * 1024
WAIT_MS = 120_000
# Slow enough that dirty chunks stay dirty for many of the page's updates.
CRAWL = 64 * 1024


CHECKOUT_WWW = Path(__file__).resolve().parent.parent / "wasm" / "www"
VIEWPORTS = {"phone": (390, 844), "desktop": (1280, 800)}


@contextlib.contextmanager
def serving(tmp_path: Path, monkeypatch, www: Path) -> Iterator[bm.Server]:
    monkeypatch.setenv("BLOCKMIRROR_WWW", str(www))
    image = str(tmp_path / "disk.img")
    with open(image, "wb") as f:
        f.write(os.urandom(8 * MiB))
    with bm.serve(image, socket=str(tmp_path / "nbd.sock"), qmp=str(tmp_path / "qmp.sock"),
                  web=("127.0.0.1", 0)) as server:
        yield server


@pytest.fixture
def served(tmp_path, monkeypatch) -> Iterator[bm.Server]:
    # The live page's files as the package ships them (an installed wheel has no checkout).
    with serving(tmp_path, monkeypatch, _web.packaged_root()) as server:
        yield server


@pytest.fixture
def served_checkout(tmp_path, monkeypatch) -> Iterator[bm.Server]:
    # The checkout's wasm/www, which also holds the simulator.
    with serving(tmp_path, monkeypatch, CHECKOUT_WWW) as server:
        yield server


class Qmp:
    """A plain QMP client on the unix socket (qemu.qmp's synchronous wrapper runs its own
    asyncio loop, which Playwright's already running loop forbids in this thread)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(path)
        self.lines = self.sock.makefile("rb")
        assert "QMP" in json.loads(self.lines.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, command: str, **arguments: object) -> None:
        self.sock.sendall(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n")
        while True:
            reply = json.loads(self.lines.readline())
            if "event" not in reply:
                assert "return" in reply, reply
                return

    def close(self) -> None:
        self.lines.close()
        self.sock.close()


def summary(page) -> dict:
    return page.eval_on_selector("#grid-summary", "e => ({...e.dataset})")


def wait_summary(page, condition: str) -> None:
    """Waits until the grid's summary (its dataset: a count per chunk state) satisfies
    ``condition``, a JavaScript expression over ``e``."""
    page.wait_for_function(f"(e => Number(e.dataset.chunks) > 0 && ({condition}))"
                           "(document.getElementById('grid-summary'))", timeout=WAIT_MS)


def wait_dirty(page, dirty: bool) -> None:
    wait_summary(page, "Number(e.dataset.dirty) " + ("> 0" if dirty else "=== 0"))


IDLE = ("Number(e.dataset.dirty) === 0 && Number(e.dataset.reading) === 0 && Number(e.dataset.writing) === 0 "
        "&& Number(e.dataset.redirtied) === 0")


def test_the_live_page_shows_the_real_job(served, browser, tmp_path) -> None:  # noqa: F811
    page = browser.new_page()
    under_test = PageUnderTest(page)
    try:
        assert served.web_url.startswith("http://127.0.0.1:") and served.web_url.endswith("/live")
        page.goto(served.web_url)
        page.wait_for_selector("#live-connection[data-state=open]", timeout=WAIT_MS)
        page.wait_for_selector("#live-status[data-status=none]", timeout=WAIT_MS)
        assert "No job is running" in page.text_content("#live-status")

        qmp = Qmp(served.qmp_path)
        try:
            # A crawling full copy: the page sees (nearly) every chunk dirty at first.
            qmp.cmd("drive-mirror", **{"job-id": "job0", "device": served.export,
               "target": str(tmp_path / "target.img"), "format": "raw", "sync": "full",
               "mode": "absolute-paths", "granularity": GRANULARITY, "speed": CRAWL})
            wait_dirty(page, True)
            assert summary(page)["chunks"] == str(8 * MiB // GRANULARITY)
            page.wait_for_selector("#live-status[data-job=job0]", timeout=WAIT_MS)
            page.wait_for_selector("#live-log li[data-event=JOB_STATUS_CHANGE][data-status=running]",
                                   timeout=WAIT_MS)

            qmp.cmd("block-job-set-speed", device="job0", speed=0)
            page.wait_for_selector("#live-log li[data-event=BLOCK_JOB_READY]", timeout=WAIT_MS)
            wait_dirty(page, False)

            # Writes through the export dirty chunks again; crawling, they stay in view.
            qmp.cmd("block-job-set-speed", device="job0", speed=CRAWL)
            with bm.NbdClient(served.uri) as client:
                client.write(2 * MiB, os.urandom(MiB))
                client.flush()
            wait_dirty(page, True)
            assert int(summary(page)["dirty"]) <= MiB // GRANULARITY

            qmp.cmd("block-job-set-speed", device="job0", speed=0)
            wait_dirty(page, False)
            qmp.cmd("block-job-complete", device="job0")
            page.wait_for_selector("#live-log li[data-event=BLOCK_JOB_COMPLETED]", timeout=WAIT_MS)
            page.wait_for_selector("#live-status[data-status=none]", timeout=WAIT_MS)
        finally:
            qmp.close()
        final = summary(page)
        assert final["dirty"] == "0" and final["clean"] == str(8 * MiB // GRANULARITY)
        # The page followed the job by deltas, each applying to the message before it, and
        # its bitmap always had the server's CRC (else it would have resynced).
        assert int(final["seq"]) > 2 and final["resyncs"] == "0", final
        assert under_test.errors == []
        assert "No job is running now" in page.text_content("#live-status")
        # The events arrived in order, as the job sent them.
        order = page.eval_on_selector_all("#live-log li", "l => l.map(e => e.dataset.event)")
        assert order.index("BLOCK_JOB_READY") < order.index("BLOCK_JOB_COMPLETED")
    finally:
        page.close()


def test_the_stream_and_the_simulator_page_are_served(served_checkout) -> None:
    base = served_checkout.web_url.rsplit("/", 1)[0]
    with urllib.request.urlopen(base + "/index.html", timeout=30) as r:
        assert b"main.js" in r.read()
    with urllib.request.urlopen(base + "/?live=1", timeout=30) as r:
        assert b"live.js" in r.read()
    with urllib.request.urlopen(base + "/events", timeout=30) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        assert r.readline() == b"event: state\n"
        assert r.readline() == b'data: {"job": null}\n'


def test_without_the_simulator_the_root_is_the_live_page(served) -> None:
    base = served.web_url.rsplit("/", 1)[0]
    with urllib.request.urlopen(base + "/", timeout=30) as r:
        assert b"live.js" in r.read()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_a_non_loopback_web_address_is_refused(tmp_path, host) -> None:
    image = str(tmp_path / "disk.img")
    with open(image, "wb") as f:
        f.truncate(MiB)
    with pytest.raises(bm.InvalidArgument, match="loopback only"):
        bm.serve(image, socket=str(tmp_path / "nbd.sock"), web=(host, 0))
    assert not os.path.exists(tmp_path / "nbd.sock")


def test_the_cli_refuses_a_non_loopback_web_address(tmp_path) -> None:
    image = str(tmp_path / "disk.img")
    with open(image, "wb") as f:
        f.truncate(MiB)
    run = subprocess.run([sys.executable, "-m", "blockmirror", "serve", image, "--socket",
                          str(tmp_path / "nbd.sock"), "--web", "0.0.0.0:8080"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run
    assert "loopback only" in run.stderr


class PausedTarget:
    """An nbdkit memory disk behind the pause filter: while paused, every request to it
    (the job's copies) hangs until resumed, so a copy stays in flight for the page to see."""

    def __init__(self, tmp_path: Path, size: int) -> None:
        self.socket_path = str(tmp_path / "target.sock")
        control = str(tmp_path / "pause.sock")
        self.proc = subprocess.Popen(["nbdkit", "-f", "-U", self.socket_path, "-e", "exp", "--filter=pause",
                                      "memory", str(size), f"pause-control={control}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: os.path.exists(self.socket_path) and os.path.exists(control), "nbdkit's sockets",
                   self.proc)
        self.control = socket.socket(socket.AF_UNIX)
        self.control.settimeout(60)
        self.control.connect(control)

    @property
    def uri(self) -> str:
        return f"nbd+unix:///exp?socket={self.socket_path}"

    def _say(self, letter: bytes) -> None:
        # The filter answers in upper case once it took effect (a pause: once the requests
        # already received have finished).
        self.control.sendall(letter)
        assert self.control.recv(1) == letter.upper()

    def pause(self) -> None:
        self._say(b"p")

    def resume(self) -> None:
        self._say(b"r")

    def close(self) -> None:
        self.control.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def within_viewport(page, selector: str, width: int, height: int) -> None:
    box = page.locator(selector).bounding_box()
    assert box is not None and box["width"] > 0 and box["height"] > 0, (selector, box)
    assert box["x"] >= 0 and box["y"] >= 0, (selector, box, width, height)
    assert box["x"] + box["width"] <= width and box["y"] + box["height"] <= height, (selector, box, width, height)


def pixel_of_chunk(page, chunk: int) -> str:
    """The grid's colour for ``chunk`` as #rrggbb (one chunk per cell in a small disk)."""
    return page.evaluate("""k => {
        const c = document.getElementById('grid');
        const [r, g, b] = c.getContext('2d').getImageData(k % c.width, Math.floor(k / c.width), 1, 1).data;
        return '#' + [r, g, b].map(v => v.toString(16).padStart(2, '0')).join('');
    }""", chunk)


def legend_colour(page, state: str) -> str:
    return page.eval_on_selector(f"#legend li[data-state={state}] .sw", """e => {
        const [r, g, b] = getComputedStyle(e).backgroundColor.match(/\\d+/g).map(Number);
        return '#' + [r, g, b].map(v => v.toString(16).padStart(2, '0')).join('');
    }""")


@pytest.fixture
def paused_target(tmp_path) -> Iterator[PausedTarget]:
    # Asked for before `served`, so it outlives the server's job (fixtures end in reverse).
    target = PausedTarget(tmp_path, 8 * MiB)
    try:
        yield target
    finally:
        target.close()


def test_the_page_shows_copies_in_flight_and_writes_during_them(paused_target, served, browser) -> None:  # noqa: F811
    chunk = MiB // GRANULARITY
    target = paused_target
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    under_test = PageUnderTest(page)
    try:
        page.goto(served.web_url)
        page.wait_for_selector("#live-connection[data-state=open]", timeout=WAIT_MS)
        # The legend says what every colour the page can draw means.
        legend = page.eval_on_selector_all("#legend li", "l => l.map(e => [e.dataset.state, e.textContent])")
        assert [state for state, _ in legend] == ["clean", "dirty", "reading", "writing", "redirtied",
                                                  "mirroring", "waiting"]
        assert all(len(words) > 10 for _, words in legend)

        # Only what the guest writes is copied: the job is ready at once, every chunk clean.
        served.execute("drive-mirror", {"job-id": "job0", "device": served.export, "target": target.uri,
                                        "format": "raw", "sync": "none", "mode": "existing",
                                        "granularity": GRANULARITY})
        page.wait_for_selector("#live-log li[data-event=BLOCK_JOB_READY]", timeout=WAIT_MS)
        wait_summary(page, IDLE)

        target.pause()
        with bm.NbdClient(served.uri) as client:
            client.write(MiB, os.urandom(GRANULARITY))
            client.flush()
            # Its copy read the source and now waits on the target.
            wait_summary(page, "Number(e.dataset.writing) === 1 && Number(e.dataset.dirty) === 0")
            assert pixel_of_chunk(page, chunk) == legend_colour(page, "writing")
            # The guest writes the chunk again while its copy is in flight: the copy will not
            # have this data, so the chunk is dirty again under it.
            client.write(MiB, os.urandom(GRANULARITY))
            client.flush()
        wait_summary(page, "Number(e.dataset.redirtied) === 1 && Number(e.dataset.writing) === 0")
        assert pixel_of_chunk(page, chunk) == legend_colour(page, "redirtied")
        # Each state its own colour.
        colours = [legend_colour(page, state) for state, _ in legend]
        assert len(set(colours)) == len(colours), colours

        # The status, the grid and the legend are on screen together, on a desktop and a phone.
        ARTIFACTS.mkdir(exist_ok=True)
        for name, (width, height) in VIEWPORTS.items():
            page.set_viewport_size({"width": width, "height": height})
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(ARTIFACTS / f"live-{name}.png"))
            assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0, name
            for selector in ("#live-status", "#grid", "#legend"):
                within_viewport(page, selector, width, height)
            assert page.locator("#grid").bounding_box()["width"] >= 150, name

        target.resume()
        # The copy ends, the chunk is copied again, and all is clean.
        wait_summary(page, IDLE)
        assert pixel_of_chunk(page, chunk) == legend_colour(page, "clean")
        assert summary(page)["resyncs"] == "0"

        # A page whose bitmap went wrong finds out at the next delta (the CRC) and resyncs.
        page.evaluate("window.livePage.bits[0] ^= 1")
        with bm.NbdClient(served.uri) as client:
            client.write(4 * MiB, os.urandom(GRANULARITY))
            client.flush()
        wait_summary(page, "e.dataset.resyncs === '1'")
        wait_summary(page, IDLE)
        assert summary(page)["clean"] == str(8 * MiB // GRANULARITY)
        # The new stream's replay of the job's events replaced the log, not doubled it.
        assert page.locator("#live-log li[data-event=BLOCK_JOB_READY]").count() == 1
        served.execute("block-job-complete", {"device": "job0"})
        page.wait_for_selector("#live-log li[data-event=BLOCK_JOB_COMPLETED]", timeout=WAIT_MS)
        assert under_test.errors == []
    finally:
        context.close()


def test_the_page_shows_a_write_blocking_guest_write_being_mirrored(paused_target, served, browser) -> None:  # noqa: F811
    page = browser.new_page()
    under_test = PageUnderTest(page)
    try:
        page.goto(served.web_url)
        served.execute("drive-mirror", {"job-id": "job0", "device": served.export, "target": paused_target.uri,
                                        "format": "raw", "sync": "none", "mode": "existing",
                                        "granularity": GRANULARITY, "copy-mode": "write-blocking"})
        page.wait_for_selector("#live-log li[data-event=BLOCK_JOB_READY]", timeout=WAIT_MS)
        wait_summary(page, IDLE)
        paused_target.pause()
        # The write waits for the target, so it runs beside the test.
        with bm.NbdClient(served.uri) as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
            write = pool.submit(client.write, 2 * MiB, os.urandom(GRANULARITY))
            wait_summary(page, "Number(e.dataset.mirroring) === 1 && Number(e.dataset.dirty) === 0")
            assert pixel_of_chunk(page, 2 * MiB // GRANULARITY) == legend_colour(page, "mirroring")
            assert not write.done()
            paused_target.resume()
            write.result(timeout=WAIT_MS / 1000)
        wait_summary(page, IDLE + " && Number(e.dataset.mirroring) === 0")
        assert summary(page)["resyncs"] == "0"
        assert under_test.errors == []
    finally:
        page.close()
