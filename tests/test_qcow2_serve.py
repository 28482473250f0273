"""``blockmirror serve``: QMP ``drive-mirror`` with ``format: "qcow2"`` onto a new qcow2
target, each sync mode, with writes through the export before and after the switch-over;
judged by ``qemu-img compare``/``check``/``info`` and by reads through the export."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from _serve_util import EXPORT, blockmirror_peer, next_event, qemu_io

MiB = 1 << 20
SIZE = 8 * MiB


def _img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("copy_mode", ["background", "write-blocking"])
@pytest.mark.parametrize("sync", ["full", "top", "none"])
def test_drive_mirror_onto_a_qcow2_target(tmp_path, sync, copy_mode):
    source = str(tmp_path / "disk.raw")
    with open(source, "wb") as f:
        f.truncate(SIZE)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x41 1M 2M", source], check=True,
                   capture_output=True)
    target = str(tmp_path / "new.qcow2")
    with blockmirror_peer(str(tmp_path), source) as p:
        qmp = p.qmp()
        try:
            qmp.cmd("drive-mirror", **{"job-id": "j", "device": EXPORT, "target": target,
                                       "sync": sync, "format": "qcow2", "copy-mode": copy_mode})
            out = qemu_io(p.nbd_uri, "write -P 0x42 5000 3000")
            assert out.returncode == 0, out.stdout + out.stderr
            next_event(qmp, "BLOCK_JOB_READY")
            qmp.cmd("block-job-complete", device="j")
            next_event(qmp, "BLOCK_JOB_COMPLETED")
            # After the switch-over the export serves the qcow2 target (through its chain).
            out = qemu_io(p.nbd_uri, "write -P 0x43 7M 4096", "read -P 0x41 1M 1M",
                          "read -P 0x42 5000 3000")
            assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out.stdout
        finally:
            qmp.close()
    meta = json.loads(_img("info", "-U", "--output=json", target))
    assert meta["format"] == "qcow2"
    if sync == "none":
        assert meta["backing-filename"] == os.path.abspath(source)
        assert meta["backing-filename-format"] == "raw"
    else:
        # A raw source has no backing file: `top` is `full`, as in QEMU.
        assert "backing-filename" not in meta
    assert "No errors were found" in _img("check", "-U", target)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x43 7M 4096", source], check=True,
                   capture_output=True)
    _img("compare", "-U", "-f", "raw", "-F", "qcow2", source, target)


def _chain(tmp_path) -> tuple:
    base, top = str(tmp_path / "base.qcow2"), str(tmp_path / "top.qcow2")
    _img("create", "-q", "-f", "qcow2", base, str(SIZE))
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 3M", base], check=True, capture_output=True)
    _img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1M 64k", top], check=True, capture_output=True)
    return base, top


@pytest.mark.parametrize("sync", ["full", "top"])
def test_a_served_qcow2_chain_is_mirrored_and_switched(tmp_path, sync):
    base, top = _chain(tmp_path)
    target = str(tmp_path / "new.qcow2")
    with blockmirror_peer(str(tmp_path), top) as p:
        out = qemu_io(p.nbd_uri, "read -P 0x11 0 64k", "read -P 0x22 1M 64k", "write -P 0x33 2M 4k")
        assert out.returncode == 0 and "verification failed" not in out.stdout, out.stdout
        qmp = p.qmp()
        try:
            qmp.cmd("drive-mirror", **{"job-id": "j", "device": EXPORT, "target": target,
                                       "sync": sync, "format": "qcow2"})
            assert qemu_io(p.nbd_uri, "write -P 0x44 5M 4k").returncode == 0
            next_event(qmp, "BLOCK_JOB_READY")
            qmp.cmd("block-job-complete", device="j")
            next_event(qmp, "BLOCK_JOB_COMPLETED")
            out = qemu_io(p.nbd_uri, "read -P 0x11 0 64k", "read -P 0x33 2M 4k", "read -P 0x44 5M 4k")
            assert out.returncode == 0 and "verification failed" not in out.stdout, out.stdout
        finally:
            qmp.close()
    for image in (top, target):
        assert "No errors were found" in _img("check", "-U", image)
    _img("compare", "-U", top, target)
    meta = json.loads(_img("info", "-U", "--output=json", target))
    assert ("backing-filename" in meta) == (sync == "top")


def test_a_cancelled_job_leaves_the_served_chain_consistent(tmp_path):
    base, top = _chain(tmp_path)
    with blockmirror_peer(str(tmp_path), top) as p:
        qmp = p.qmp()
        try:
            qmp.cmd("drive-mirror", **{"job-id": "j", "device": EXPORT, "target": str(tmp_path / "t.qcow2"),
                                       "sync": "full", "format": "qcow2"})
            assert qemu_io(p.nbd_uri, "write -P 0x55 6M 128k").returncode == 0
            next_event(qmp, "BLOCK_JOB_READY")
            qmp.cmd("block-job-cancel", device="j")
            next_event(qmp, "BLOCK_JOB_COMPLETED")
        finally:
            qmp.close()
        # The disk is back on the source, whose chain was opened again after the job.
        out = qemu_io(p.nbd_uri, "write -P 0x66 7M 64k", "read -P 0x55 6M 128k", "read -P 0x66 7M 64k",
                      "read -P 0x22 1M 64k")
        assert out.returncode == 0 and "verification failed" not in out.stdout, out.stdout
    assert "No errors were found" in _img("check", "-U", top)
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-r", "-c", "read -P 0x55 6M 128k", "-c", "read -P 0x66 7M 64k", top],
                         capture_output=True, text=True)
    assert "verification failed" not in out.stdout, out.stdout


def test_serve_format_is_checked_and_the_cli_takes_it(tmp_path):
    import blockmirror as bm
    raw = str(tmp_path / "disk.raw")
    with open(raw, "wb") as f:
        f.truncate(SIZE)
    with pytest.raises(bm.InvalidArgument, match="not a qcow2 image"):
        bm.serve(raw, socket=str(tmp_path / "s.sock"), format="qcow2")
    import sys
    out = subprocess.run([sys.executable, "-m", "blockmirror", "serve", "--help"], capture_output=True, text=True)
    assert "--format {raw,qcow2}" in out.stdout
