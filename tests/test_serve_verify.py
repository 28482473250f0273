"""Online verify of a served disk's running job (``Server.verify``, QMP
``x-blockmirror-verify``): while clients write through the export it reports no false
difference, and it finds a byte changed on the target behind the job's back, on a file
target, an NBD target and a qcow2 target (each read as the guest sees it)."""

from __future__ import annotations

import random
import threading

import pytest

import blockmirror as bm
from _serve_util import wait_until
from qemu.qmp import ExecuteError
from qemu.qmp.legacy import QEMUMonitorProtocol

MiB = 1 << 20
LENGTH = 16 * MiB
# Verifies tried until one overlaps a client write.
VERIFY_ATTEMPTS = 500


def make_image(path, seed=3):
    with open(path, "wb") as f:
        f.write(random.Random(seed).randbytes(LENGTH))


class Writer(threading.Thread):
    """Writes random 4 KiB blocks through the export until stopped."""

    def __init__(self, uri):
        super().__init__(daemon=True)
        self.client = bm.NbdClient(uri)
        self.stop = threading.Event()
        self.writes = 0
        self.error = None

    def run(self):
        rng = random.Random(5)
        try:
            while not self.stop.is_set():
                self.client.write(rng.randrange(LENGTH // 4096) * 4096, rng.randbytes(4096))
                self.writes += 1
        except Exception as exc:  # reported by the test
            self.error = exc
        finally:
            self.client.close()


def ready_with_writer(server, target, **mirror):
    server.mirror(target, **mirror)
    server.wait_event("BLOCK_JOB_READY", timeout=120)


def test_no_false_difference_while_clients_write_and_a_real_one_is_found(tmp_path):
    src, dst, qmp = tmp_path / "src.img", tmp_path / "dst.img", str(tmp_path / "qmp.sock")
    make_image(src)
    with bm.serve(src, socket=str(tmp_path / "s.sock"), qmp=qmp) as server:
        writer = Writer(server.uri)
        writer.start()
        ready_with_writer(server, dst)
        try:
            for granularity in (None, 64 << 10):
                # A verify of 16 MiB can be over between two client writes: verify again
                # until one has overlapped a write (every one of them must find nothing).
                for attempt in range(VERIFY_ATTEMPTS):
                    before = writer.writes
                    report = server.verify(granularity=granularity)
                    assert report.differing == [], report
                    assert report.verified_bytes > 0
                    if writer.writes > before:
                        break
                    assert writer.is_alive(), writer.error
                else:
                    pytest.fail(f"no verify of {VERIFY_ATTEMPTS} overlapped a client write")
        finally:
            writer.stop.set()
            writer.join(60)
        assert writer.error is None, writer.error
        # A byte changed on the target behind the job's back, in a segment no one writes.
        with open(dst, "r+b") as f:
            f.seek(9 * MiB + 123)
            old = f.read(1)
            f.seek(9 * MiB + 123)
            f.write(bytes([old[0] ^ 0xFF]))
        report = server.verify()
        assert report.differing == [(9 * MiB, 10 * MiB)], report
        # The same over the QMP socket, QEMU's client.
        monitor = QEMUMonitorProtocol(qmp)
        monitor.connect(negotiate=True)
        try:
            reply = monitor.cmd("x-blockmirror-verify", id="job0", granularity=4096)
            assert reply["differing"] == [{"offset": 9 * MiB, "length": 4096}], reply
            for arguments, says in [({"id": "job0", "granularity": 1000}, "granularity"),
                                    ({"id": "nope"}, "Job not found")]:
                with pytest.raises(ExecuteError) as refused:
                    monitor.cmd("x-blockmirror-verify", **arguments)
                assert refused.value.error_class == "GenericError" and says in str(refused.value), arguments
        finally:
            monitor.close()
        # Repair: the job copies the segment again from the source.
        repaired = server.verify(repair=True)
        assert repaired.differing == repaired.repaired == [(9 * MiB, 10 * MiB)], repaired
        wait_until(lambda: job_caught_up(server), "the job to copy the repaired segment")
        again = server.verify()
        assert again.differing == [] and again.repaired == [], again
        server.execute("block-job-cancel", {"device": "job0", "force": True})
        server.wait_event("BLOCK_JOB_CANCELLED", timeout=120)


def job_caught_up(server):
    job = server.execute("query-block-jobs")[0]
    return job["offset"] == job["len"] and not job["busy"]


def test_verify_reads_an_nbd_target_over_nbd(tmp_path):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    make_image(src)
    make_image(dst, seed=4)
    with bm.serve(dst, socket=str(tmp_path / "t.sock"), export="target") as target_server, \
            bm.serve(src, socket=str(tmp_path / "s.sock")) as server:
        ready_with_writer(server, target_server.uri, mode="existing")
        assert server.verify().differing == []
        # Changed on the target export by another client, behind the job's back.
        with bm.NbdClient(target_server.uri) as other:
            other.write(3 * MiB, b"\x00" * 512)
        assert server.verify().differing == [(3 * MiB, 4 * MiB)]
        server.execute("block-job-cancel", {"device": "job0", "force": True})
        server.wait_event("BLOCK_JOB_CANCELLED", timeout=120)


@pytest.mark.parametrize("sync", ["full"])
def test_verify_reads_a_qcow2_target_through_its_chain(tmp_path, sync):
    src, dst = tmp_path / "src.img", tmp_path / "dst.qcow2"
    make_image(src)
    with bm.serve(src, socket=str(tmp_path / "s.sock")) as server:
        server.execute("drive-mirror", {"job-id": "job0", "device": server.export, "target": str(dst),
                                        "format": "qcow2", "sync": sync})
        server.wait_event("BLOCK_JOB_READY", timeout=120)
        # The image's file holds clusters and metadata, not the disk's bytes: only a read
        # through the chain compares like with like.
        report = server.verify()
        assert report.differing == [] and report.verified_bytes == LENGTH, report
        server.execute("block-job-cancel", {"device": "job0", "force": True})
        server.wait_event("BLOCK_JOB_CANCELLED", timeout=120)
