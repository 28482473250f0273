"""``serve(..., web=)`` / ``blockmirror serve --web``: the teaching page's live mode against
a real server. Headless Chromium opens ``/live``, a mirror job runs over QMP while an NBD
client writes, and the page must show what the job does: dirty chunks, the job's events
as they happen, clean chunks at the end. Needs Chromium and Playwright as
tests/test_browser.py does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from typing import Iterator

import pytest

import blockmirror as bm
from test_browser import browser  # noqa: F401 - the fixture, shared

MiB = 1 << 20
GRANULARITY = 64 * 1024
WAIT_MS = 120_000
# Slow enough that dirty chunks stay dirty for many of the page's updates.
CRAWL = 64 * 1024


@pytest.fixture
def served(tmp_path, monkeypatch) -> Iterator[bm.Server]:
    # The page of this checkout: an installed package (as CI installs it) ships no page.
    monkeypatch.setenv("BLOCKMIRROR_WWW", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                       "wasm", "www"))
    image = str(tmp_path / "disk.img")
    with open(image, "wb") as f:
        f.write(os.urandom(8 * MiB))
    with bm.serve(image, socket=str(tmp_path / "nbd.sock"), qmp=str(tmp_path / "qmp.sock"),
                  web=("127.0.0.1", 0)) as server:
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


def wait_dirty(page, dirty: bool) -> None:
    condition = "e => Number(e.dataset.chunks) > 0 && Number(e.dataset.dirty) " + ("> 0" if dirty else "=== 0")
    page.wait_for_function(f"({condition})(document.getElementById('grid-summary'))", timeout=WAIT_MS)


def test_the_live_page_shows_the_real_job(served, browser, tmp_path) -> None:  # noqa: F811
    page = browser.new_page()
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
        assert "No job is running now" in page.text_content("#live-status")
        # The events arrived in order, as the job sent them.
        order = page.eval_on_selector_all("#live-log li", "l => l.map(e => e.dataset.event)")
        assert order.index("BLOCK_JOB_READY") < order.index("BLOCK_JOB_COMPLETED")
    finally:
        page.close()


def test_the_stream_and_the_simulator_page_are_served(served) -> None:
    base = served.web_url.rsplit("/", 1)[0]
    with urllib.request.urlopen(base + "/index.html", timeout=30) as r:
        assert b"main.js" in r.read()
    with urllib.request.urlopen(base + "/?live=1", timeout=30) as r:
        assert b"live.js" in r.read()
    with urllib.request.urlopen(base + "/events", timeout=30) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        assert r.readline() == b"event: state\n"
        assert r.readline() == b'data: {"job": null}\n'


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
