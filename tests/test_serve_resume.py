"""Crash-safe mirroring in ``serve``: jobs keep the server's write-intent bitmap
(``--bitmap`` / ``bitmap=``); a job that did not finish (cancelled before the switch-over,
or the server killed with SIGKILL while fio writes through the export) is resumed with
``drive-mirror`` ``"resume": true`` and copies only what the file marks, and the target then
equals the source. Between jobs, and after a restart, every client write is marked in the
file left behind, so a resume never skips a chunk written while no job ran. Also the
refusals: a file for another disk or target, a damaged file, resume without a file, a new
job over a file left behind."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys

import pytest

import blockmirror as bm
from _serve_util import EXPORT, accepts, fio_args, fio_verify_file, next_event, wait_until
from qemu.qmp.legacy import QEMUMonitorProtocol

MiB = 1 << 20
LENGTH = 32 * MiB
# fio writes only here: a resume must copy what fio dirtied, not the whole disk again.
HOT = 4 * MiB
BITMAP_GRANULARITY = 1 * MiB


def make_image(path, seed=7, length=LENGTH):
    with open(path, "wb") as f:
        f.write(random.Random(seed).randbytes(length))


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(MiB), fb.read(MiB)
            if x != y:
                return False
            if not x:
                return True


def marked_bytes(path):
    return bm.read_bitmap(str(path))["dirty_bytes"]


def wait_file_clean(path):
    """Until the bitmap file marks nothing (the job's cleaning rounds caught up)."""
    wait_until(lambda: marked_bytes(path) == 0, f"{path} to mark nothing")


def test_writes_between_jobs_are_marked_and_the_resume_copies_them(tmp_path):
    src, dst, bmp = tmp_path / "src.img", tmp_path / "dst.img", tmp_path / "disk.bmbitmap"
    make_image(src)
    with bm.serve(src, socket=str(tmp_path / "s.sock"), bitmap=bmp) as server, bm.NbdClient(server.uri) as c:
        assert not server.resumable
        server.mirror(dst)
        server.wait_event("BLOCK_JOB_READY", timeout=120)
        wait_file_clean(bmp)
        # Cancel at ready: the job ends without a switch-over and leaves its file.
        server.execute("block-job-cancel", {"device": "job0"})
        server.wait_event("BLOCK_JOB_COMPLETED", timeout=120)
        assert server.resumable and bmp.exists()
        # No job runs now: these writes must be marked, or the resume would skip them.
        c.write(5 * MiB + 4096, b"\xa5" * 8192)
        c.write_zeroes(20 * MiB, 64 << 10)
        assert marked_bytes(bmp) == 2 * BITMAP_GRANULARITY
        # The generation a caller remembers is the file's newest: it is accepted.
        generation = server.bitmap_generation
        assert generation == bm.read_bitmap(str(bmp))["generation"]
        server.mirror(dst, mode="existing", resume=True, bitmap_min_generation=generation)
        ready = server.wait_event("BLOCK_JOB_READY", timeout=120)
        # Only the two marked chunks were copied again.
        assert ready["data"]["len"] <= 2 * BITMAP_GRANULARITY, ready
        server.execute("block-job-complete", {"device": "job0"})
        completed = server.wait_event("BLOCK_JOB_COMPLETED", timeout=120)
        assert "error" not in completed["data"]
        assert not server.resumable
    assert not bmp.exists(), "the switch-over removes the file"
    assert same_bytes(src, dst)


def test_refusals(tmp_path):
    src, other, dst = tmp_path / "src.img", tmp_path / "other.img", tmp_path / "dst.img"
    make_image(src)
    make_image(other, seed=8)
    bmp = tmp_path / "disk.bmbitmap"
    sock = str(tmp_path / "s.sock")
    with bm.serve(src, socket=sock) as server:
        with pytest.raises(bm.QmpError, match="needs a bitmap file"):
            server.mirror(dst, resume=True)
        with pytest.raises(bm.QmpError, match="needs a bitmap file"):
            server.mirror(dst, bitmap_min_generation=3)
        assert server.bitmap_generation is None
        with pytest.raises(bm.QmpError, match="keeps no bitmap file"):
            server.execute("x-blockmirror-query-bitmap")
    with bm.serve(src, socket=sock, bitmap=bmp) as server:
        make_image(dst, seed=10)
        with pytest.raises(bm.QmpError, match="no bitmap file"):
            server.mirror(dst, mode="existing", resume=True)
        # A job cancelled at once leaves its file (every chunk marked).
        server.mirror(dst, mode="existing", speed=1 << 20)
        server.execute("block-job-cancel", {"device": "job0", "force": True})
        server.wait_event("BLOCK_JOB_CANCELLED", timeout=120)
        assert server.resumable
        with pytest.raises(bm.QmpError, match='pass "resume": true'):
            server.mirror(dst, mode="existing")
        with pytest.raises(bm.QmpError, match='"mode": "existing"'):
            server.mirror(dst, resume=True)
        # A remembered generation newer than the file's: a stale copy, refused.
        generation = server.bitmap_generation
        assert generation is not None and generation > 0
        with pytest.raises(bm.QmpError, match="stale copy"):
            server.mirror(dst, mode="existing", resume=True, bitmap_min_generation=generation + 1)
        query = server.execute("x-blockmirror-query-bitmap")
        assert {k: query[k] for k in ("filename", "resumable", "generation")} == {
            "filename": str(bmp), "resumable": True, "generation": generation}
        assert set(query["stats"]) == {"marks-free", "marks-waited", "file-writes", "chunks-cleared"}
        elsewhere = tmp_path / "elsewhere.img"
        make_image(elsewhere, seed=9)
        with pytest.raises(bm.QmpError, match="another target"):
            server.mirror(elsewhere, mode="existing", resume=True)
        # Refused starts leave the file in place, still marking writes.
        assert server.resumable
    # A remembered generation refuses an older file, and accepts the one it came from.
    generation = bm.read_bitmap(str(bmp))["generation"]
    with pytest.raises(bm.BitmapError) as refused:
        bm.serve(src, socket=sock, bitmap=bmp, bitmap_min_generation=generation + 1)
    assert refused.value.reason == "stale_generation"
    with bm.serve(src, socket=sock, bitmap=bmp, bitmap_min_generation=generation) as server:
        assert server.resumable
    # The file is about src: serving another disk with it is refused before any write.
    with pytest.raises(bm.BitmapError) as refused:
        bm.serve(other, socket=sock, bitmap=bmp)
    assert refused.value.reason == "other_source"
    damaged = tmp_path / "damaged.bmbitmap"
    data = bytearray(bmp.read_bytes())
    # The newest slot's generation field (a new file's first write goes to the second slot).
    data[len(data) // 2 + 20] ^= 1
    damaged.write_bytes(bytes(data))
    with pytest.raises(bm.BitmapError) as refused:
        bm.serve(src, socket=sock, bitmap=damaged)
    assert refused.value.reason == "header_checksum"
    # The command line says what is wrong and what to do.
    result = subprocess.run([sys.executable, "-m", "blockmirror", "serve", str(other), "--socket", sock,
                             "--bitmap", str(bmp)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result
    assert "another source" in result.stderr and "remove the file to start over" in result.stderr


class ServeProcess:
    """``blockmirror serve`` in a child process, to be killed with SIGKILL."""

    def __init__(self, tmp_path, image, bitmap):
        self.nbd = str(tmp_path / "nbd.sock")
        self.qmp_path = str(tmp_path / "qmp.sock")
        for path in (self.nbd, self.qmp_path):
            if os.path.exists(path):
                os.unlink(path)  # left by a killed server
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "blockmirror", "serve", str(image), "--socket", self.nbd,
             "--qmp", self.qmp_path, "--bitmap", str(bitmap)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: accepts(self.nbd) and accepts(self.qmp_path), "serve's sockets", self.proc)
        self.uri = f"nbd+unix:///{EXPORT}?socket={self.nbd}"
        self.qmp = QEMUMonitorProtocol(self.qmp_path)
        self.qmp.connect(negotiate=True)
        self.qmp.settimeout(120)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)
        self.qmp.close()

    def quit(self):
        # The server closes the connection as it exits, which the client may see first.
        with contextlib.suppress(EOFError):
            self.qmp.cmd("quit")
        with contextlib.suppress(EOFError):
            self.qmp.close()
        out, _ = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, out


def fio_guest(uri, seed=None, rate="2m"):
    """fio writing HOT through the export; ``seed`` None is the seed :func:`fio_verify_file`
    checks against."""
    seeded = [] if seed is None else [f"--randseed={seed}"]
    return subprocess.Popen(fio_args("guest", HOT, ["--ioengine=nbd", f"--uri={uri}", "--iodepth=4",
                                                    f"--rate={rate}", *seeded]),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_9_of_serve_while_fio_writes_then_resume(tmp_path):
    src, dst, bmp = tmp_path / "src.img", tmp_path / "dst.img", tmp_path / "disk.bmbitmap"
    make_image(src)
    rng = random.Random(1)
    kills = 8
    for round_ in range(kills + 1):
        marked_before = marked_bytes(bmp) if bmp.exists() else None
        server = ServeProcess(tmp_path, src, bmp)
        last = round_ == kills
        fio = fio_guest(server.uri, seed=None if last else round_ + 1, rate="4m" if last else "2m")
        try:
            mirror = {"job-id": "job0", "device": EXPORT, "target": str(dst), "sync": "full", "format": "raw",
                      # Slow enough that most kills land in mid-copy.
                      "speed": 24 * MiB}
            if marked_before is not None:
                mirror.update(mode="existing", resume=True)
            server.qmp.cmd("drive-mirror", **mirror)
            if marked_before is not None:
                # What the resumed job set out to copy: what the file marked at the restart,
                # plus what fio dirtied since (inside HOT), in whole bitmap chunks. (Its
                # total grows afterwards as fio re-dirties chunks it already copied.)
                job = server.qmp.cmd("query-block-jobs")[0]
                assert job["len"] - job["offset"] <= marked_before + HOT + 2 * BITMAP_GRANULARITY, \
                    (round_, job, marked_before)
            if not last:
                # A random moment: in the copy, at ready, while fio writes (the attack's
                # randomness, not a wait for a condition).
                wait_until(lambda: fio.poll() is not None or rng.random() < 0.01, "a moment to kill")
                server.kill()
                fio.kill()
                fio.wait(timeout=60)
                # The crash-safety property itself: every chunk that differs is marked.
                marked = bm.read_bitmap(str(bmp))["ranges"]
                for start, end in bm.verify(src, dst, granularity=64 << 10).differing:
                    assert any(s <= start and end <= e for s, e in marked), (round_, (start, end), marked)
                continue
            next_event(server.qmp, "BLOCK_JOB_READY")
            out, _ = fio.communicate(timeout=300)
            assert fio.returncode == 0, out
            # No writer now: the target equals the source at the switch-over.
            server.qmp.cmd("block-job-complete", device="job0")
            assert "error" not in next_event(server.qmp, "BLOCK_JOB_COMPLETED")["data"]
            server.quit()
        finally:
            if fio.poll() is None:
                fio.kill()
            if server.proc.poll() is None:
                server.kill()
    assert not bmp.exists()
    assert same_bytes(src, dst), "the target differs from the source after the resume"
    fio_verify_file(str(dst), HOT)
