"""``blockmirror serve`` against real peers, each scenario run against qemu-storage-daemon too
(the reference): what passes against one must pass against the other. Clients: qemu-io,
nbdinfo, fio (``nbd`` engine, crc32c verify); control: QEMU's own QMP client."""

from __future__ import annotations

import os
import subprocess

import pytest
from qemu.qmp import ExecuteError

from _files_util import MiB, make_image
from _serve_util import EXPORT, events_until, fio_across_a_switch_over, next_event, peer, qemu_io

PEERS = ["blockmirror", "qemu-storage-daemon"]


@pytest.fixture
def image(tmp_path):
    path = str(tmp_path / "src.img")
    make_image(path, 64 * MiB, seed=3)
    return path


@pytest.mark.parametrize("kind", PEERS)
def test_qemu_io_writes_and_reads_through_the_export(kind, tmp_path, image):
    with peer(kind, str(tmp_path), image) as p:
        r = qemu_io(p.nbd_uri, "write -P 0xab 1M 1M", "read -P 0xab 1M 1M", "write -z 3M 64k",
                    "read -P 0 3M 64k", "flush")
        assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout + r.stderr
    with open(image, "rb") as f:
        f.seek(1 * MiB)
        assert f.read(MiB) == b"\xab" * MiB
        f.seek(3 * MiB)
        assert f.read(64 << 10) == bytes(64 << 10)


@pytest.mark.parametrize("kind", PEERS)
def test_nbdinfo_reports_size_and_the_holes_of_a_sparse_disk(kind, tmp_path):
    image = str(tmp_path / "sparse.img")
    with open(image, "wb") as f:
        f.truncate(32 * MiB)
        f.seek(8 * MiB)
        f.write(os.urandom(MiB))
    with peer(kind, str(tmp_path), image) as p:
        info = subprocess.run(["nbdinfo", "--json", p.nbd_uri], capture_output=True, text=True, timeout=60)
        assert info.returncode == 0, info.stderr
        assert f'"export-size": {32 * MiB}' in info.stdout
        mapped = subprocess.run(["nbdinfo", "--map", p.nbd_uri], capture_output=True, text=True, timeout=60)
        assert mapped.returncode == 0, mapped.stderr
    rows = [line.split() for line in mapped.stdout.splitlines() if line.strip()]
    # Columns: offset, length, type number, description ("data" / "hole,zero").
    data = [(int(r[0]), int(r[1])) for r in rows if int(r[2]) == 0]
    assert sum(n for _, n in data) >= MiB and sum(n for _, n in data) < 32 * MiB
    assert any(start <= 8 * MiB < start + n for start, n in data)


def _qmp_error_class(qmp, command, **args):
    with pytest.raises(ExecuteError) as err:
        qmp.cmd(command, **args)
    return err.value.error_class


def test_qmp_errors_have_the_same_classes_as_qemus(tmp_path, image):
    """Each refusal is asked of both servers; blockmirror must answer with QEMU's class."""
    cases = [
        ("drive-mirror", dict(job_id="j", device="nosuch", target=str(tmp_path / "t.img"), sync="full")),
        ("drive-mirror", dict(job_id="j", device=EXPORT, target=str(tmp_path / "t.img"), sync="bogus")),
        ("drive-mirror", dict(job_id="j", device=EXPORT, target=str(tmp_path / "t.img"), sync="full", speed=-1)),
        ("drive-mirror", dict(job_id="j", device=EXPORT, sync="full")),
        ("block-job-complete", dict(device="nosuch")),
        ("block-job-cancel", dict(device="nosuch")),
        ("block-job-pause", dict(device="nosuch")),
        ("no-such-command", dict()),
    ]
    answers = {}
    for kind in PEERS:
        os.makedirs(tmp_path / kind)
        with peer(kind, str(tmp_path / kind), image) as p:
            qmp = p.qmp()
            try:
                answers[kind] = [_qmp_error_class(qmp, c, **{k.replace("_", "-"): v for k, v in a.items()})
                                 for c, a in cases]
                assert qmp.cmd("query-block-jobs") == []
            finally:
                qmp.close()
    assert answers["blockmirror"] == answers["qemu-storage-daemon"], list(zip(cases, answers["blockmirror"], answers["qemu-storage-daemon"]))


def _status_changes(events):
    return [e["data"]["status"] for e in events if e["event"] == "JOB_STATUS_CHANGE"]


@pytest.mark.parametrize("kind", PEERS)
def test_an_idle_mirror_emits_qemus_events_and_the_export_then_serves_the_target(kind, tmp_path, image):
    target = str(tmp_path / "dst.img")
    with peer(kind, str(tmp_path), image) as p:
        qmp = p.qmp()
        try:
            assert qmp.cmd("drive-mirror", **{"job-id": "job0", "device": EXPORT, "target": target,
                                               "sync": "full", "format": "raw"}) == {}
            before_ready = events_until(qmp, "BLOCK_JOB_READY")
            assert _status_changes(before_ready)[:2] == ["created", "running"]
            ready = before_ready[-1]["data"]
            assert ready["device"] == "job0" and ready["type"] == "mirror" and ready["len"] == ready["offset"]
            jobs = qmp.cmd("query-block-jobs")
            assert len(jobs) == 1 and jobs[0]["device"] == "job0" and jobs[0]["ready"] is True
            assert jobs[0]["status"] == "ready" and jobs[0]["type"] == "mirror"
            qmp.cmd("block-job-complete", device="job0")
            rest = events_until(qmp, "BLOCK_JOB_COMPLETED")
            assert "error" not in rest[-1]["data"]
            assert _status_changes(rest)[:2] == ["waiting", "pending"]
            assert qmp.cmd("query-block-jobs") == []
            # The export now serves the target: a write lands there, not on the source.
            r = qemu_io(p.nbd_uri, "write -P 0x5a 0 64k", "flush")
            assert r.returncode == 0, r.stderr
        finally:
            qmp.close()
    with open(target, "rb") as t:
        assert t.read(64 << 10) == b"\x5a" * (64 << 10)
    with open(image, "rb") as s:
        assert s.read(64 << 10) != b"\x5a" * (64 << 10)


@pytest.mark.parametrize("copy_mode", ["background", "write-blocking"])
@pytest.mark.parametrize("kind", PEERS)
def test_fio_verifies_every_block_across_a_switch_over_made_while_it_writes(kind, copy_mode, tmp_path, image):
    """fio writes (rate-limited, so it is still writing at READY) and verifies through the
    export; the switch is issued while it writes; fio's own verify pass reads back through
    the switched export, and a verify_only pass over the target file finds every block."""
    with peer(kind, str(tmp_path), image) as p:
        fio_across_a_switch_over(p, str(tmp_path / "dst.img"), 24 * MiB, "6m", **{"copy-mode": copy_mode})


@pytest.mark.parametrize("kind", PEERS)
def test_cancel_before_ready_keeps_serving_the_source(kind, tmp_path, image):
    target = str(tmp_path / "dst.img")
    with peer(kind, str(tmp_path), image) as p:
        qmp = p.qmp()
        try:
            qmp.cmd("drive-mirror", **{"job-id": "job0", "device": EXPORT, "target": target, "sync": "full",
                                       "format": "raw", "speed": 1 << 20})
            next_event(qmp, "JOB_STATUS_CHANGE")
            qmp.cmd("block-job-cancel", device="job0", force=True)
            next_event(qmp, "BLOCK_JOB_CANCELLED")
            assert qmp.cmd("query-block-jobs") == []
            r = qemu_io(p.nbd_uri, "write -P 0x11 0 4k", "flush")
            assert r.returncode == 0, r.stderr
        finally:
            qmp.close()
    with open(image, "rb") as s:
        assert s.read(4096) == b"\x11" * 4096
