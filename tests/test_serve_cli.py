"""``blockmirror serve`` as a program and as a neighbour: socket modes, stopping (SIGTERM,
QMP quit), read-only exports, image locks against QEMU's tools, hostile and numerous
clients."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys

import pytest

import blockmirror as bm
from _files_util import MiB, make_image
from _serve_util import EXPORT, holds_qemu_write_lock, next_event, qemu_io, wait_until
from qemu.qmp.legacy import QEMUMonitorProtocol


@pytest.fixture
def image(tmp_path):
    path = str(tmp_path / "src.img")
    make_image(path, 16 * MiB, seed=5)
    return path


def _start_cli(tmp_path, image, *extra):
    nbd, qmp = str(tmp_path / "nbd.sock"), str(tmp_path / "qmp.sock")
    proc = subprocess.Popen([sys.executable, "-m", "blockmirror", "serve", image, "--socket", nbd, "--qmp", qmp,
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_until(lambda: os.path.exists(nbd) and os.path.exists(qmp), "the serve sockets", proc)
    return proc, nbd, qmp


def test_sockets_are_private_and_sigterm_stops_cleanly_with_a_job_running(tmp_path, image):
    proc, nbd, qmp_path = _start_cli(tmp_path, image)
    try:
        for path in (nbd, qmp_path):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        qmp = QEMUMonitorProtocol(qmp_path)
        qmp.connect()
        qmp.cmd("drive-mirror", **{"job-id": "j", "device": EXPORT, "target": str(tmp_path / "dst.img"),
                                   "sync": "full", "speed": 1 << 20})
        next_event(qmp, "JOB_STATUS_CHANGE")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        with contextlib.suppress(EOFError):  # the server is gone (see the quit test)
            qmp.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "stopping (terminated)" in out
    assert not os.path.exists(nbd) and not os.path.exists(qmp_path)


def test_quit_over_qmp_ends_the_program_with_exit_0(tmp_path, image):
    proc, nbd, qmp_path = _start_cli(tmp_path, image)
    try:
        qmp = QEMUMonitorProtocol(qmp_path)
        qmp.connect()
        assert qmp.cmd("quit") == {}
        out, _ = proc.communicate(timeout=60)
        # The server is gone: QEMU's client reports the end of the stream it meets on close.
        with contextlib.suppress(EOFError):
            qmp.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "quit over QMP" in out


def test_a_read_only_export_refuses_writes(tmp_path, image):
    with bm.serve(image, socket=str(tmp_path / "ro.sock"), read_only=True) as server:
        r = qemu_io(server.uri, "read 0 4k", read_only=True)
        assert r.returncode == 0, r.stderr
        # The export says it is read-only, so QEMU refuses to open it for writing.
        r = qemu_io(server.uri, "write 0 4k")
        assert r.returncode != 0 and "Permission denied" in r.stderr, r.stdout + r.stderr


def test_the_served_image_is_locked_against_qemu_writers_and_qemu_nbd_blocks_serving(tmp_path, image):
    with bm.serve(image, socket=str(tmp_path / "a.sock")):
        r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write 0 4k", image], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode != 0 and "lock" in (r.stdout + r.stderr), r.stdout + r.stderr
        info = subprocess.run(["qemu-img", "info", "-U", image], capture_output=True, text=True, timeout=60)
        assert info.returncode == 0, info.stderr
    sock = str(tmp_path / "qemu-nbd.sock")
    qemu_nbd = subprocess.Popen(["qemu-nbd", "-f", "raw", "-k", sock, image], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: os.path.exists(sock) and holds_qemu_write_lock(image), "qemu-nbd's socket and lock", qemu_nbd)
        with pytest.raises(bm.IoError, match="lock|in use"):
            bm.serve(image, socket=str(tmp_path / "b.sock"))
    finally:
        qemu_nbd.terminate()
        qemu_nbd.wait(timeout=30)


def test_garbage_and_surplus_clients_do_not_disturb_the_others(tmp_path, image):
    path = str(tmp_path / "n.sock")
    with bm.serve(image, socket=path, max_clients=4) as server:
        hostile = []
        for payload in (b"\x00" * 64, os.urandom(4096), b"NBDMAGIC" + os.urandom(200)):
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.sendall(payload)
            hostile.append(s)
        # The server hangs up on each of them (the greeting, then EOF), without a hang.
        for s in hostile:
            s.settimeout(30)
            while s.recv(65536):
                pass
            s.close()
        wait_until(lambda: server.client_count == 0, "the hostile clients to be dropped")
        idle = []
        for _ in range(4):
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            idle.append(s)
        wait_until(lambda: server.client_count == 4, "four idle clients")
        extra = socket.socket(socket.AF_UNIX)
        extra.connect(path)
        extra.settimeout(30)
        assert extra.recv(100) == b""  # refused: closed at once
        extra.close()
        for s in idle:
            s.close()
        wait_until(lambda: server.client_count == 0, "the idle clients to leave")
        r = qemu_io(server.uri, "write -P 0x77 0 64k", "read -P 0x77 0 64k")
        assert r.returncode == 0 and "verification failed" not in r.stdout, r.stdout + r.stderr


def test_several_clients_write_at_once_and_every_write_lands(tmp_path, image):
    with bm.serve(image, socket=str(tmp_path / "m.sock")) as server:
        procs = [subprocess.Popen(["qemu-io", "-f", "raw", "-c", f"write -P {0x21 + i} {i}M 1M", server.uri],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(6)]
        for p in procs:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0, out
    with open(image, "rb") as f:
        for i in range(6):
            f.seek(i * MiB)
            assert f.read(MiB) == bytes([0x21 + i]) * MiB


def test_mirror_refuses_a_disk_that_qemu_nbd_has_open_for_writing(tmp_path, image):
    sock = str(tmp_path / "busy.sock")
    qemu_nbd = subprocess.Popen(["qemu-nbd", "-f", "raw", "-k", sock, image], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: os.path.exists(sock) and holds_qemu_write_lock(image), "qemu-nbd's socket and lock", qemu_nbd)
        target = str(tmp_path / "dst.img")
        r = subprocess.run([sys.executable, "-m", "blockmirror", "mirror", image, target, "--quiet"],
                           capture_output=True, text=True, timeout=120)
    finally:
        qemu_nbd.terminate()
        qemu_nbd.wait(timeout=30)
    assert r.returncode == 2, r.stdout + r.stderr  # "files that cannot be opened or used as asked"
    assert "in use by another process" in r.stderr
    assert not os.path.exists(target)


def test_tcp_on_loopback_by_default_and_a_warning_for_other_addresses(tmp_path, image):
    with bm.serve(image, listen="127.0.0.1:0") as server:
        assert server.address.startswith("tcp:127.0.0.1:") and not server.address.endswith(":0")
        assert server.uri.startswith("nbd://127.0.0.1:")
        r = qemu_io(server.uri, "write -P 0x42 0 64k", "read -P 0x42 0 64k")
        assert r.returncode == 0 and "verification failed" not in r.stdout, r.stdout + r.stderr
    proc = subprocess.Popen([sys.executable, "-m", "blockmirror", "serve", image, "--listen", "0.0.0.0:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        second = proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = first + second + rest
    assert "anyone who reaches 0.0.0.0:0 can read and write" in out
    assert proc.returncode == 0, out


def test_nbdcopy_copies_the_export_out_and_back_in(tmp_path, image):
    copy = str(tmp_path / "copy.img")
    with bm.serve(image, socket=str(tmp_path / "c.sock")) as server:
        out = subprocess.run(["nbdcopy", server.uri, copy], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        with open(copy, "r+b") as f:
            f.write(b"\x99" * 4096)
        back = subprocess.run(["nbdcopy", copy, server.uri], capture_output=True, text=True, timeout=120)
        assert back.returncode == 0, back.stderr
    with open(copy, "rb") as a, open(image, "rb") as b:
        assert a.read() == b.read()
