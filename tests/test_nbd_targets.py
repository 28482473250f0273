"""Mirrors onto remote NBD exports (qemu-nbd, nbdkit): from Python, the CLI and QMP, with
remote write errors (nbdkit's error filter) and a target server that dies mid-copy."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from typing import Iterator, List

import pytest

import blockmirror as bm
from _files_util import MiB, make_image
from _serve_util import fio_across_a_switch_over, peer, wait_until

SIZE = 32 * MiB


@contextlib.contextmanager
def nbd_server(args: List[str], socket_path: str) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: os.path.exists(socket_path), f"{args[0]}'s socket", proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)


def qemu_nbd(image: str, socket_path: str) -> "contextlib.AbstractContextManager[subprocess.Popen]":
    return nbd_server(["qemu-nbd", "-f", "raw", "-x", "exp", "-k", socket_path, image], socket_path)


def uri(socket_path: str) -> str:
    return f"nbd+unix:///exp?socket={socket_path}"


@pytest.fixture
def files(tmp_path):
    source, target = str(tmp_path / "src.img"), str(tmp_path / "dst.img")
    make_image(source, SIZE, seed=11)
    with open(target, "wb") as f:
        f.write(os.urandom(SIZE))  # junk: every range must really be written
    return source, target


def _wait_event(m: bm.Mirror, wanted, timeout: float = 120):
    """The first event (from the start of the run) for which ``wanted`` holds."""
    for event in m.iter_events(timeout=timeout):
        if wanted(event):
            return event
    raise AssertionError("the job ended without the event waited for")


def _paused(e) -> bool:
    return e.type == "JOB_STATUS_CHANGE" and e.status == "paused"


def _same(a: str, b: str) -> bool:
    with open(a, "rb") as x, open(b, "rb") as y:
        return x.read() == y.read()


@pytest.mark.parametrize("copy_mode", ["background", "write-blocking"])
def test_mirror_to_qemu_nbd_with_guest_writes_ends_equal(tmp_path, files, copy_mode):
    source, target = files
    sock = str(tmp_path / "t.sock")
    with qemu_nbd(target, sock):
        with bm.Mirror(source, uri(sock), copy_mode=copy_mode, speed=64 * MiB) as m:
            for i in range(64):
                m.write((i * 997 * 4096) % (SIZE - 8192), bytes([i]) * 8192)
            m.wait_ready(timeout=120)
            m.complete(timeout=120)
            assert m.read(0, 4096)  # after the switch, reads come from the export
    assert _same(source, target)


def test_the_cli_mirrors_onto_an_export(tmp_path, files):
    source, target = files
    sock = str(tmp_path / "c.sock")
    with qemu_nbd(target, sock):
        r = subprocess.run([sys.executable, "-m", "blockmirror", "mirror", source, uri(sock), "--quiet"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    assert _same(source, target)


def test_an_export_of_another_size_is_refused(tmp_path, files):
    source, _ = files
    other = str(tmp_path / "small.img")
    with open(other, "wb") as f:
        f.truncate(SIZE // 2)
    sock = str(tmp_path / "s.sock")
    with qemu_nbd(other, sock):
        with pytest.raises(bm.InvalidArgument, match="different sizes"):
            bm.Mirror(source, uri(sock))


def test_remote_write_errors_stop_the_job_until_resumed(tmp_path, files):
    source, target = files
    sock, trigger = str(tmp_path / "e.sock"), str(tmp_path / "fail-writes")
    open(trigger, "w").close()
    args = ["nbdkit", "-f", "-U", sock, "-e", "exp", "--filter=error", "file", target,
            "error-pwrite=EIO", "error-pwrite-rate=100%", f"error-pwrite-file={trigger}"]
    with nbd_server(args, sock):
        with bm.Mirror(source, uri(sock), on_target_error="stop") as m:
            stopped = _wait_event(m, lambda e: e.type == "BLOCK_JOB_ERROR")
            assert stopped.action == "stop" and stopped.operation == "write"
            _wait_event(m, _paused)
            os.unlink(trigger)
            m.resume()
            m.wait_ready(timeout=120)
            m.complete(timeout=120)
    assert _same(source, target)


@pytest.mark.parametrize("policy", ["report", "stop"])
def test_a_target_server_killed_mid_copy(tmp_path, files, policy):
    source, target = files
    sock = str(tmp_path / "k.sock")
    first = subprocess.Popen(["qemu-nbd", "-f", "raw", "-x", "exp", "-k", sock, target],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: os.path.exists(sock), "qemu-nbd's socket", first)
        m = bm.Mirror(source, uri(sock), on_target_error=policy, speed=8 * MiB)
        try:
            _wait_event(m, lambda e: e.type == "JOB_STATUS_CHANGE" and e.status == "running")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
            if policy == "report":
                with pytest.raises(bm.IoError):
                    m.wait_ready(timeout=120)
                return
            _wait_event(m, _paused)
            if os.path.exists(sock):
                os.unlink(sock)
            with qemu_nbd(target, sock):
                m.set_speed(0)
                m.resume()
                m.wait_ready(timeout=120)
                m.complete(timeout=120)
                m.close()
        finally:
            m.close()
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(timeout=30)
    assert _same(source, target)


@pytest.mark.parametrize("kind", ["blockmirror", "qemu-storage-daemon"])
def test_drive_mirror_onto_an_export_while_fio_writes_through_the_served_disk(kind, tmp_path, files):
    source, target = files
    sock = str(tmp_path / "r.sock")
    with qemu_nbd(target, sock), peer(kind, str(tmp_path), source) as p:
        fio_across_a_switch_over(p, uri(sock), 12 * MiB, "4m", mode="existing", verify_file=target)


def test_a_slow_link_delays_but_the_copy_ends_equal(tmp_path, files):
    """nbdkit's delay and rate filters stand in for a slow network to the target."""
    source, target = files
    sock = str(tmp_path / "slow.sock")
    args = ["nbdkit", "-f", "-U", sock, "-e", "exp", "--filter=delay", "--filter=rate", "file", target,
            "wdelay=2ms", "rate=64M"]
    with nbd_server(args, sock):
        with bm.Mirror(source, uri(sock), copy_mode="write-blocking") as m:
            m.wait_ready(timeout=300)
            for i in range(16):
                m.write(i * MiB, bytes([0x80 + i]) * 4096)  # each waits for the slow target
            m.complete(timeout=300)
    assert _same(source, target)


def test_qemu_img_compares_the_export_with_the_file_it_serves(tmp_path, files):
    source, _ = files
    with bm.serve(source, socket=str(tmp_path / "cmp.sock")) as server:
        r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", server.uri, source],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "identical" in r.stdout.lower(), r.stdout + r.stderr
