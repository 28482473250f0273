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
